"""The fuzz suite: bad inputs and faults against the scripts' command lines, generated from one table.

Every case must end the way a user can act on (issue 19): a non-zero exit (2), no traceback, one line
`error: <what>, <where>, <what to do>` (argparse's own `error: argument --flag: ...` for a bad flag value) that names
the file, and the line and field where there is one, and nothing written or lost: the case's folder holds exactly
the same files, byte for byte, afterwards (so no --out folder, run.json or half-written output appears).

Most cases call `errors.main_boundary(script.main, argv)` in this process (a subprocess per case would take minutes
on a 2-core machine); SUBPROCESS_CASES run a few of them as the real `python SCRIPT.py ...` to check the wiring.
Judge faults go to a fake OpenAI-compatible endpoint on 127.0.0.1, which picks its behaviour from the URL path and
stops by itself after MAX_REQUESTS requests or MAX_SECONDS seconds. train.py's cases: tests/test_fuzz_train.py.
"""
import http.server
import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support import errors

ROOT = Path(__file__).resolve().parent.parent
IFEVAL_MINI = Path(__file__).parent / "fixtures" / "eval_ifeval_mini.jsonl"
FIRST_PROMPT = json.loads(IFEVAL_MINI.read_text().splitlines()[0])["prompt"]

# ---------------------------------------------------------------------------------------------------------------
# Inputs: one good row of each file, then the bad rows

USER = [{"role": "user", "content": "Write a note about foxes."}]
GOOD_ROW = {"id": "p1", "messages": USER,
            "rubrics": [{"description": "No commas.", "checker": {"instruction_id": "punctuation:no_comma",
                                                                  "kwargs": {}}},
                        {"description": "The note says foxes are clever."}]}
GOOD_RESPONSES = {"id": "p1", "response": "Foxes are clever."}
IFEVAL_ROW = {"key": 1, "prompt": "Write a poem.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}


def line(obj) -> bytes:
    return (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n"


def checker_row(iid, kwargs) -> dict:
    return {"id": "p2", "messages": USER, "rubrics": [{"description": "d", "checker": {"instruction_id": iid,
                                                                                      "kwargs": kwargs}}]}


def rubric_row(**fields) -> dict:
    return {"id": "p2", "messages": USER, **fields}


DEEP = b"[" * 100_000 + b"]" * 100_000
NOT_UTF8 = b'{"id": "p2", "messages": [{"role": "user", "content": "caf\xe9"}]}'

# Bad rows of the rubric file: (case name, bad line 2, the field named). Read by judge.py (and every script that
# loads rubric data, through data.load_rubric_jsonl).
BAD_RUBRIC_ROWS = [
    ("malformed JSON", b'{"id": "p2", "messages": ', "<json>"),
    ("not UTF-8", NOT_UTF8, "<text>"),
    ("nested too deeply", DEEP, "<json>"),
    ("a list, not an object", b"[1, 2, 3]", "<json>"),
    ("no messages", {"id": "p2", "rubrics": ["x"]}, "messages"),
    ("messages a number", rubric_row(rubrics=["x"], messages=7), "messages"),
    ("unknown role", rubric_row(messages=[{"role": "robot", "content": "x"}], rubrics=["x"]), "messages[0]"),
    ("no user turn", rubric_row(messages=[{"role": "system", "content": "x"}], rubrics=["x"]), "messages"),
    ("no rubrics", {"id": "p2", "messages": USER}, "rubrics"),
    ("rubrics a string", rubric_row(rubrics="no commas"), "rubrics"),
    ("rubrics empty", rubric_row(rubrics=[]), "rubrics"),
    ("rubric item a number", rubric_row(rubrics=[5]), "rubrics[0]"),
    ("description missing", rubric_row(rubrics=[{"checker": {"instruction_id": "punctuation:no_comma"}}]),
     "rubrics[0].description"),
    ("checker a string", rubric_row(rubrics=[{"description": "d", "checker": "punctuation:no_comma"}]),
     "rubrics[0].checker"),
    ("kwargs a list", checker_row("punctuation:no_comma", ["x"]), "rubrics[0].checker.kwargs"),
    ("code not a string", rubric_row(rubrics=[{"description": "d", "code": 5}]), "rubrics[0].code"),
    ("21 constraints", rubric_row(rubrics=[f"c{i}" for i in range(21)]), "rubrics"),
    ("duplicate id", GOOD_ROW, "id"),
    ("unknown instruction id", checker_row("made:up", {}), "rubrics[0].checker.instruction_id"),
    ("kwarg the checker does not take", checker_row("punctuation:no_comma", {"nope": 1}),
     "rubrics[0].checker.kwargs.nope"),
    ("keywords a string", checker_row("keywords:existence", {"keywords": "brother"}),
     "rubrics[0].checker.kwargs.keywords"),
    ("keywords missing", checker_row("keywords:existence", {}), "rubrics[0].checker.kwargs.keywords"),
    ("keywords empty", checker_row("keywords:existence", {"keywords": []}), "rubrics[0].checker.kwargs.keywords"),
    ("forbidden words not strings", checker_row("keywords:forbidden_words", {"forbidden_words": [1, 2]}),
     "rubrics[0].checker.kwargs.forbidden_words"),
    ("num_words negative", checker_row("length_constraints:number_words", {"num_words": -5, "relation": "less than"}),
     "rubrics[0].checker.kwargs.num_words"),
    ("num_words a string", checker_row("length_constraints:number_words", {"num_words": "5", "relation": "at least"}),
     "rubrics[0].checker.kwargs.num_words"),
    ("num_words fractional", checker_row("length_constraints:number_words", {"num_words": 2.5,
                                                                             "relation": "at least"}),
     "rubrics[0].checker.kwargs.num_words"),
    ("num_words null", checker_row("length_constraints:number_words", {"num_words": None, "relation": "at least"}),
     "rubrics[0].checker.kwargs.num_words"),
    ("relation missing", checker_row("length_constraints:number_words", {"num_words": 50}),
     "rubrics[0].checker.kwargs.relation"),
    ("relation unknown", checker_row("length_constraints:number_sentences", {"num_sentences": 3,
                                                                             "relation": "exactly"}),
     "rubrics[0].checker.kwargs.relation"),
    ("letter not a-z", checker_row("keywords:letter_frequency", {"letter": "#", "let_frequency": 2,
                                                                 "let_relation": "at least"}),
     "rubrics[0].checker.kwargs.letter"),
    ("letter two characters", checker_row("keywords:letter_frequency", {"letter": "ab", "let_frequency": 2,
                                                                        "let_relation": "at least"}),
     "rubrics[0].checker.kwargs.letter"),
    ("frequency boolean", checker_row("keywords:frequency", {"keyword": "fox", "frequency": True,
                                                             "relation": "at least"}),
     "rubrics[0].checker.kwargs.frequency"),
    ("min_words above max_words", checker_row("count:word_count_range", {"min_words": 90, "max_words": 50}),
     "rubrics[0].checker.kwargs.min_words"),
    ("sentence N = 0", checker_row("sentence:keyword", {"word": "fox", "N": 0}), "rubrics[0].checker.kwargs.N"),
    ("percentage 120", checker_row("ratio:stop_words", {"percentage": 120}), "rubrics[0].checker.kwargs.percentage"),
    ("position missing", checker_row("words:keywords_specific_position", {"keyword": "fox", "n": 2}),
     "rubrics[0].checker.kwargs.m"),
    ("end phrase empty", checker_row("startend:end_checker", {"end_phrase": "  "}),
     "rubrics[0].checker.kwargs.end_phrase"),
    ("unknown language", checker_row("language:response_language", {"language": "xx"}), "rubrics[0].checker.kwargs"),
    ("repeat without the prompt", checker_row("combination:repeat_prompt", {}), "rubrics[0].checker.kwargs"),
    ("IFEval row: kwargs element a list", {**IFEVAL_ROW, "kwargs": [["x"]]}, "kwargs[0]"),
    ("IFEval row: kwargs count", {**IFEVAL_ROW, "kwargs": [{}, {}]}, "kwargs"),
    ("IFEval row: ids a string", {**IFEVAL_ROW, "instruction_id_list": "punctuation:no_comma"},
     "instruction_id_list"),
    ("IFEval row: keywords a string", {**IFEVAL_ROW, "instruction_id_list": ["keywords:existence"],
                                       "kwargs": [{"keywords": "brother"}]}, "kwargs[0].keywords"),
    ("HiR row: ground truth not JSON", {"prompt": "p", "rubrics": ["r"], "ground_truth": "{oops"}, "ground_truth"),
    ("HiR row: ground truth a list", {"prompt": "p", "rubrics": ["r"], "ground_truth": [1]}, "ground_truth"),
    ("HiR row: negative count", {"prompt": "p", "rubrics": ["r"], "ground_truth": {
        "instruction_id_list": ["detectable_format:number_bullet_lists"], "kwargs": [{"num_bullets": -1}]}},
     "ground_truth.kwargs[0].num_bullets"),
]

# Bad rows of the responses file judge.py reads: (case name, bad line 2, field)
BAD_RESPONSE_ROWS = [
    ("no id", {"response": "x"}, "id"),
    ("id a number", {"id": 1, "response": "x"}, "id"),
    ("no response", {"id": "p1"}, "response"),
    ("responses not strings", {"id": "p1", "responses": ["a", 2]}, "response"),
    ("not UTF-8", b'{"id": "p1", "response": "caf\xe9"}', "<text>"),
    ("malformed JSON", b'{"id": "p1", "resp', "<json>"),
    ("nested too deeply", DEEP, "<json>"),
]

# Bad rows of an IFEval-format benchmark file evaluate.py reads: (case name, bad line 9, field)
BAD_BENCHMARK_ROWS = [
    ("kwargs element a list", {**IFEVAL_ROW, "kwargs": [["no_comma"]]}, "kwargs[0]"),
    ("kwargs element a string", {**IFEVAL_ROW, "kwargs": ["{}"]}, "kwargs[0]"),
    ("kwargs count", {**IFEVAL_ROW, "kwargs": []}, "kwargs"),
    ("prompt missing", {k: v for k, v in IFEVAL_ROW.items() if k != "prompt"}, "prompt"),
    ("ids not strings", {**IFEVAL_ROW, "instruction_id_list": [3]}, "instruction_id_list"),
    ("keywords a string", {**IFEVAL_ROW, "instruction_id_list": ["keywords:existence"],
                           "kwargs": [{"keywords": "brother"}]}, "kwargs[0].keywords"),
    ("num_words negative", {**IFEVAL_ROW, "instruction_id_list": ["length_constraints:number_words"],
                            "kwargs": [{"num_words": -5, "relation": "less than"}]}, "kwargs[0].num_words"),
    ("not UTF-8", NOT_UTF8, "<text>"),
    ("nested too deeply", DEEP, "<json>"),
]


# Bad rows of a discriminator label file (eval / train / show read them): (case name, bad line 2, field)
LABEL_ROW = {"prompt_id": "p1", "family": "keywords:existence", "criterion": "Include keywords ['fox'].",
             "text": "A fox.", "labels": [0, 1, 0]}
BAD_LABEL_ROWS = [
    ("no criterion", {k: v for k, v in LABEL_ROW.items() if k != "criterion"}, "criterion"),
    ("labels not 0/1", {**LABEL_ROW, "labels": [0, 2, 0]}, "labels"),
    ("labels a string", {**LABEL_ROW, "labels": "010"}, "labels"),
    ("neither text nor ids", {k: v for k, v in LABEL_ROW.items() if k != "text"}, "text"),
    ("ids not numbers", {**LABEL_ROW, "ids": ["a", "b", "c"]}, "ids"),
    ("one label too few", {**LABEL_ROW, "ids": [5, 6, 7, 8]}, "labels"),
    ("no prompt id", {**LABEL_ROW, "prompt_id": 3}, "prompt_id"),
]


# ---------------------------------------------------------------------------------------------------------------
# Models: the tiny policy, and broken copies of it

def _truncate(folder: Path):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


BROKEN_MODELS = {
    "truncated-weights": _truncate,
    "garbage-weights": lambda f: (f / "model.safetensors").write_bytes(b"this is not a safetensors file"),
    "empty-weights": lambda f: (f / "model.safetensors").write_bytes(b""),
    "no-weights": lambda f: (f / "model.safetensors").unlink(),
    "config-not-json": lambda f: (f / "config.json").write_text("{\"model_type\": "),
    "no-config": lambda f: (f / "config.json").unlink(),
}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tiny_dir):
    """{name: path}: the tiny policy, broken copies of it, and a text file named .gguf."""
    root = tmp_path_factory.mktemp("fuzz-models")
    out = {"tiny": tiny_dir}
    for name, breaks in BROKEN_MODELS.items():
        shutil.copytree(tiny_dir, root / name)
        breaks(root / name)
        out[name] = root / name
    (root / "fake.gguf").write_text("just some text, not a GGUF file\n")
    out["text.gguf"] = root / "fake.gguf"
    return out


# ---------------------------------------------------------------------------------------------------------------
# A fake OpenAI-compatible endpoint on loopback: behaviour chosen by the first path part, /MODE/v1/chat/completions

MAX_REQUESTS, MAX_SECONDS = 300, 240
GOOD_ANSWER = json.dumps({"choices": [{"message": {"role": "assistant", "content": "YES"}}]}).encode()
ENDPOINT_ANSWERS = {  # mode -> (HTTP status, body)
    "list": (200, b'[{"choices": [{"message": {"content": "YES"}}]}]'),
    "int-content": (200, b'{"choices": [{"message": {"content": 7}}]}'),
    "no-message": (200, b'{"choices": [{"text": "YES"}]}'),
    "null-message": (200, b'{"choices": [{"message": null}]}'),
    "null-content": (200, b'{"choices": [{"message": {"content": null}}]}'),
    "no-choices": (200, b'{"choices": []}'),
    "not-json": (200, b"YES"),
    "not-utf8": (200, b"\xff\xfe\x00Y"),
    "deep-json": (200, DEEP),
    "too-big": (200, b'{"choices": [{"message": {"content": "' + b"Y" * (2 << 20) + b'"}}]}'),
    "503": (503, b"overloaded"),
    "400": (400, b'{"error": "unknown model"}'),
    "trickle": (200, GOOD_ANSWER + b" " * 300),  # sent one byte every 0.05 s: 15 s in all
    "cut-short": (200, GOOD_ANSWER[:20]),         # announces more bytes than it sends, then hangs up
}


class _FakeEndpoint(http.server.BaseHTTPRequestHandler):
    requests = 0

    def do_POST(self):
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        mode = self.path.strip("/").split("/")[0]
        status, body = ENDPOINT_ANSWERS.get(mode, (200, GOOD_ANSWER))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) + (100 if mode == "cut-short" else 0)))
        self.end_headers()
        try:
            if mode == "trickle":
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.05)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: the point of the trickle case
        if type(self).requests >= MAX_REQUESTS:
            threading.Thread(target=self.server.shutdown, daemon=True).start()

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def endpoint():
    """Base URL http://127.0.0.1:PORT of the fake endpoint (bound to loopback only; stops by itself)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeEndpoint)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    timer = threading.Timer(MAX_SECONDS, srv.shutdown)
    timer.daemon = True
    timer.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    timer.cancel()
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------------------------
# The table. A case: (id, script, argv, files, names). In argv and names, {d} is the case's folder, {m:NAME} a model
# of models_dir, {url} the fake endpoint, {closed} a loopback port nobody listens on. files: name -> bytes to write
# into the folder first (besides the good d.jsonl, r.jsonl and bench.jsonl every case gets), or a str, filled in
# like argv first.

JUDGE = ["--data", "{d}/d.jsonl", "--responses", "{d}/r.jsonl"]
EVAL = ["--bench", "ifeval", "--data", "{d}/bench.jsonl", "--out", "{d}/out", "--batch-size", "2",
        "--max-new-tokens", "4"]


def _table():
    cases = []
    for name, bad, fld in BAD_RUBRIC_ROWS:
        cases.append((f"judge data: {name}", "judge", ["--data", "{d}/bad.jsonl", "--responses", "{d}/r.jsonl"],
                      {"bad.jsonl": line(GOOD_ROW) + line(bad)}, ["{d}/bad.jsonl:2", f"field {fld!r}"]))
    for name, bad, fld in BAD_RESPONSE_ROWS:
        cases.append((f"judge responses: {name}", "judge", ["--data", "{d}/d.jsonl", "--responses", "{d}/bad.jsonl"],
                      {"bad.jsonl": line(GOOD_RESPONSES) + line(bad)}, ["{d}/bad.jsonl:2", f"field {fld!r}"]))
    for name, bad, fld in BAD_BENCHMARK_ROWS:
        cases.append((f"evaluate data: {name}", "evaluate",
                      EVAL[:3] + ["{d}/bad.jsonl"] + EVAL[4:] + ["--model", "{m:tiny}"],
                      {"bad.jsonl": IFEVAL_MINI.read_bytes() + line(bad)}, ["{d}/bad.jsonl:9", f"field {fld!r}"]))
    cases += [
        # judge.py: paths and files
        ("judge: data missing", "judge", ["--data", "{d}/none.jsonl", "--responses", "{d}/r.jsonl"], {},
         ["no such file", "{d}/none.jsonl"]),
        ("judge: data is a folder", "judge", ["--data", "{d}", "--responses", "{d}/r.jsonl"], {},
         ["a folder where a file is expected", "{d}"]),
        ("judge: responses missing", "judge", ["--data", "{d}/d.jsonl", "--responses", "{d}/none.jsonl"], {},
         ["{d}/none.jsonl"]),
        ("judge: responses a folder", "judge", ["--data", "{d}/d.jsonl", "--responses", "{d}"], {}, ["{d}"]),
        ("judge: ids not in the data", "judge", JUDGE[:3] + ["{d}/other.jsonl"],
         {"other.jsonl": line({"id": "zz", "response": "x"})}, ["{d}/other.jsonl", "{d}/d.jsonl", "'zz'"]),
        ("judge: --out folder missing", "judge", JUDGE + ["--out", "{d}/no/such/o.jsonl"], {},
         ["--out {d}/no/such/o.jsonl"]),
        ("judge: --judge-timeout 0", "judge", JUDGE + ["--judge-timeout", "0"], {}, ["--judge-timeout"]),
        ("judge: --judge-timeout nan", "judge", JUDGE + ["--judge-timeout", "nan"], {}, ["--judge-timeout"]),
        ("judge: --judge-retries -1", "judge", JUDGE + ["--judge-retries", "-1"], {}, ["--judge-retries"]),
        ("judge: --judge-concurrency 0", "judge", JUDGE + ["--judge-concurrency", "0"], {},
         ["--judge-concurrency"]),
        ("judge: --rule-timeout -1", "judge", JUDGE + ["--rule-timeout", "-1"], {}, ["--rule-timeout"]),
        ("judge: --judge-model truncated weights", "judge", JUDGE + ["--judge-model", "{m:truncated-weights}"], {},
         ["{m:truncated-weights}", "incomplete or corrupt"]),
        ("judge: --judge-model text .gguf", "judge", JUDGE + ["--judge-model", "{m:text.gguf}"], {},
         ["{m:text.gguf}"]),
        ("judge: --judge-url not http", "judge", JUDGE + ["--judge-url", "ftp://127.0.0.1/v1"], {},
         ["ftp://127.0.0.1/v1"]),
    ]
    for mode in ENDPOINT_ANSWERS:  # the judge endpoint: every fault is a failed try, then one clear line
        cases.append((f"judge endpoint: {mode}", "judge",
                      JUDGE + ["--judge-url", f"{{url}}/{mode}/v1", "--judge-timeout", "1", "--judge-retries", "1"],
                      {}, [f"{{url}}/{mode}/v1/chat/completions"]))
    cases.append(("judge endpoint: 503 keeps the old --out", "judge",
                  JUDGE + ["--out", "{d}/o.jsonl", "--judge-url", "{url}/503/v1", "--judge-timeout", "1",
                           "--judge-retries", "0"], {"o.jsonl": b"the results of an earlier run\n"},
                  ["{url}/503/v1/chat/completions"]))
    cases.append(("judge endpoint: nobody listens", "judge",
                  JUDGE + ["--judge-url", "http://127.0.0.1:{closed}/v1", "--judge-timeout", "1",
                           "--judge-retries", "1"], {}, ["http://127.0.0.1:{closed}/v1", "is down"]))
    cases += [
        # evaluate.py
        ("evaluate: data missing", "evaluate", EVAL[:3] + ["{d}/none.jsonl"] + EVAL[4:] + ["--model", "{m:tiny}"],
         {}, ["{d}/none.jsonl"]),
        ("evaluate: data a folder", "evaluate", EVAL[:3] + ["{d}"] + EVAL[4:] + ["--model", "{m:tiny}"], {}, ["{d}"]),
        ("evaluate: heldout row with a bad kwarg", "evaluate",
         ["--bench", "heldout", "--data", "{d}/bad.jsonl", "--out", "{d}/out", "--model", "{m:tiny}"],
         {"bad.jsonl": line(GOOD_ROW) + line(checker_row("keywords:existence", {"keywords": "brother"}))},
         ["{d}/bad.jsonl:2", "field 'rubrics[0].checker.kwargs.keywords'"]),
        ("evaluate: responses missing", "evaluate", EVAL + ["--responses", "{d}/none.jsonl"], {},
         ["{d}/none.jsonl"]),
        ("evaluate: responses a folder", "evaluate", EVAL + ["--responses", "{d}"], {}, ["{d}"]),
        ("evaluate: responses match no prompt", "evaluate", EVAL + ["--responses", "{d}/resp.jsonl"],
         {"resp.jsonl": line({"prompt": "another prompt", "response": "x"})}, ["{d}/resp.jsonl"]),
        ("evaluate: responses not UTF-8", "evaluate", EVAL + ["--responses", "{d}/resp.jsonl"],
         {"resp.jsonl": b'{"prompt": "caf\xe9", "response": "x"}\n'}, ["{d}/resp.jsonl"]),
        ("evaluate: model not on this machine", "evaluate", EVAL + ["--model", "no-such-org/no-such-model"], {},
         ["no-such-org/no-such-model"]),
        ("evaluate: out holds another setting", "evaluate", EVAL + ["--model", "{m:tiny}"],
         {"out/run.json": json.dumps({"bench": "ifeval", "model": "other", "max_new_tokens": 4,
                                      "max_prompt_tokens": 4096}).encode()}, ["{d}/out", "pass another --out"]),
        ("evaluate: generations kept when the model fails", "evaluate", EVAL + ["--model", "{m:truncated-weights}"],
         {"out/run.json": json.dumps({"bench": "ifeval", "model": "{m:truncated-weights}", "max_new_tokens": 4,
                                      "max_prompt_tokens": 4096}),
          "out/generations.jsonl": json.dumps({"prompt": FIRST_PROMPT, "response": "kept"}) + '\n{"prompt": "half'},
         ["{m:truncated-weights}"]),                                     # one generation, one line cut by a kill
        ("evaluate: out holds a damaged run.json", "evaluate", EVAL + ["--model", "{m:tiny}"],
         {"out/run.json": b'{"bench": "if'}, ["{d}/out/run.json"]),
        ("evaluate: --compare folder missing", "evaluate", ["--compare", "{d}/nothing"], {}, ["{d}/nothing"]),
        ("evaluate: --compare damaged metrics", "evaluate", ["--compare", "{d}/run"],
         {"run/metrics.json": b"\xff\xfe"}, ["{d}/run/metrics.json"]),
        ("evaluate: --max-new-tokens 0", "evaluate", EVAL[:-1] + ["0", "--model", "{m:tiny}"], {},
         ["--max-new-tokens"]),
        ("evaluate: --batch-size 0", "evaluate", EVAL[:-3] + ["0", "--model", "{m:tiny}"], {}, ["--batch-size"]),
        ("evaluate: --limit -1", "evaluate", EVAL + ["--model", "{m:tiny}", "--limit", "-1"], {}, ["--limit"]),
        ("evaluate: --threads 0", "evaluate", EVAL + ["--model", "{m:tiny}", "--threads", "0"], {}, ["--threads"]),
    ]
    for name in [*BROKEN_MODELS, "text.gguf"]:
        cases.append((f"evaluate: model {name}", "evaluate", EVAL + ["--model", f"{{m:{name}}}"], {},
                      [f"{{m:{name}}}"]))
    cases += [
        # rollout.py
        ("rollout: model folder missing", "rollout", ["--model", "{d}/none", "--prompt", "hi"], {}, ["{d}/none"]),
        ("rollout: model truncated weights", "rollout", ["--model", "{m:truncated-weights}", "--prompt", "hi"], {},
         ["{m:truncated-weights}"]),
        ("rollout: model text .gguf", "rollout", ["--model", "{m:text.gguf}", "--prompt", "hi"], {},
         ["{m:text.gguf}"]),
        ("rollout: model config not JSON", "rollout", ["--model", "{m:config-not-json}", "--prompt", "hi"], {},
         ["{m:config-not-json}"]),
        ("rollout: --max-new-tokens 0", "rollout", ["--model", "{m:tiny}", "--prompt", "hi", "--max-new-tokens", "0"],
         {}, ["--max-new-tokens"]),
        ("rollout: -n 0", "rollout", ["--model", "{m:tiny}", "--prompt", "hi", "-n", "0"], {}, ["--group-size"]),
        ("rollout: --temperature -1", "rollout", ["--model", "{m:tiny}", "--prompt", "hi", "--temperature", "-1"],
         {}, ["--temperature"]),
        ("rollout: --top-p 0", "rollout", ["--model", "{m:tiny}", "--prompt", "hi", "--top-p", "0"], {}, ["--top-p"]),
        ("rollout: --top-p 1.5", "rollout", ["--model", "{m:tiny}", "--prompt", "hi", "--top-p", "1.5"], {},
         ["--top-p"]),
        ("rollout: prompt too long", "rollout", ["--model", "{m:tiny}", "--prompt", "hello " * 50,
                                                 "--max-prompt-tokens", "5"], {}, ["--max-prompt-tokens 5"]),
        # discriminator.py
        ("discriminator show: folder without weights", "discriminator",
         ["show", "--model", "{m:no-weights}", "--criterion", "c", "--text", "t"], {}, ["{m:no-weights}"]),
        ("discriminator show: corrupt weights", "discriminator",
         ["show", "--model", "{m:garbage-weights}", "--criterion", "c", "--text", "t"], {}, ["{m:garbage-weights}"]),
        ("discriminator show: no trained head", "discriminator",
         ["show", "--model", "{m:tiny}", "--criterion", "c", "--text", "t"], {}, ["{m:tiny}", "no trained"]),
        ("discriminator show: model is a text file", "discriminator",
         ["show", "--model", "{d}/d.jsonl", "--criterion", "c", "--text", "t"], {}, ["{d}/d.jsonl"]),
        ("discriminator show: nothing to show", "discriminator", ["show", "--model", "{disc}"], {},
         ["--criterion and --text"]),
        ("discriminator show: --index past the labels", "discriminator",
         ["show", "--model", "{disc}", "--labels", "{d}/labels.jsonl", "--index", "5"],
         {"labels.jsonl": line(LABEL_ROW)}, ["{d}/labels.jsonl", "--index 5"]),
        ("discriminator eval: labels missing", "discriminator",
         ["eval", "--model", "{disc}", "--labels", "{d}/none.jsonl"], {}, ["{d}/none.jsonl"]),
        ("discriminator eval: labels not UTF-8", "discriminator",
         ["eval", "--model", "{disc}", "--labels", "{d}/labels.jsonl"], {"labels.jsonl": line(NOT_UTF8)},
         ["{d}/labels.jsonl:1", "field '<text>'"]),
        ("discriminator eval: labels nested too deeply", "discriminator",
         ["eval", "--model", "{disc}", "--labels", "{d}/labels.jsonl"], {"labels.jsonl": line(DEEP)},
         ["{d}/labels.jsonl:1", "field '<json>'"]),
        ("discriminator label: bad prompts row", "discriminator",
         ["label", "--prompts", "{d}/bad.jsonl", "--out", "{d}/labels.jsonl"],
         {"bad.jsonl": line(GOOD_ROW) + line(checker_row("keywords:existence", {"keywords": "brother"}))},
         ["{d}/bad.jsonl:2", "field 'rubrics[0].checker.kwargs.keywords'"]),
        ("discriminator label: --responses row without prompt_id", "discriminator",
         ["label", "--prompts", "{d}/d.jsonl", "--policy", "{m:tiny}", "--responses", "{d}/resp.jsonl",
          "--out", "{d}/labels.jsonl"], {"resp.jsonl": line({"prompt_id": "p1", "response": "x"})
                                                        + line({"response": "y"})},
         ["{d}/resp.jsonl:2", "field 'prompt_id'"]),
        ("discriminator label: --max-new-tokens 0", "discriminator",
         ["label", "--max-new-tokens", "0", "--out", "{d}/labels.jsonl"], {}, ["--max-new-tokens"]),
        ("discriminator: --threads -1", "discriminator", ["eval", "--threads", "-1", "--model", "{disc}",
                                                          "--labels", "{d}/none.jsonl"], {}, ["--threads"]),
        ("discriminator train: labels missing", "discriminator",
         ["train", "--labels", "{d}/none.jsonl", "--policy", "{m:tiny}", "--out", "{d}/disc"], {},
         ["{d}/none.jsonl"]),
    ]
    for name, bad, fld in BAD_LABEL_ROWS:
        cases.append((f"discriminator eval labels: {name}", "discriminator",
                      ["eval", "--model", "{disc}", "--labels", "{d}/labels.jsonl"],
                      {"labels.jsonl": line(LABEL_ROW) + line(bad)}, ["{d}/labels.jsonl:2", f"field {fld!r}"]))
    return cases


CASES = _table()
MAIN_MODULES = {"judge": "support.judge_cli",  # where a script's main lives when the script only calls it
                "discriminator": "support.discriminator_cli"}

# The real command line for a few of them (one per script and kind of fault): run in parallel, two at a time.
SUBPROCESS_CASES = ["judge data: keywords a string", "judge: data missing", "judge endpoint: list",
                    "evaluate data: kwargs element a list", "rollout: --max-new-tokens 0",
                    "discriminator show: folder without weights"]


# ---------------------------------------------------------------------------------------------------------------
# Running a case

def _fill(text: str, d: Path, models: dict, url: str, disc: Path, closed: int) -> str:
    for name, path in models.items():
        text = text.replace(f"{{m:{name}}}", str(path))
    return (text.replace("{d}", str(d)).replace("{url}", url).replace("{disc}", str(disc))
            .replace("{closed}", str(closed)))


def _prepare(case, tmp_path, models, url, disc, closed):
    name, script, argv, files, names = case
    d = tmp_path / "case"
    d.mkdir()
    (d / "d.jsonl").write_bytes(line(GOOD_ROW))
    (d / "r.jsonl").write_bytes(line(GOOD_RESPONSES))
    (d / "bench.jsonl").write_bytes(IFEVAL_MINI.read_bytes())
    fill = lambda s: _fill(s, d, models, url, disc, closed)  # noqa: E731
    for rel, content in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(content if isinstance(content, bytes) else fill(content).encode())
    return d, [fill(a) for a in argv], [fill(n) for n in names]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _check(name, code, stderr, names, before, after):
    assert code == 2, f"{name}: exit {code}\n{stderr[-2000:]}"
    assert "Traceback" not in stderr, f"{name}: {stderr[-3000:]}"
    last = stderr.strip().splitlines()[-1]
    assert "error: " in last, f"{name}: last line {last!r}"
    for n in names:
        assert n in last, f"{name}: {n!r} not in {last!r}"
    assert before == after, f"{name}: files changed: {sorted(set(after) ^ set(before))}"


@pytest.fixture(scope="module")
def closed_port():
    return _closed_port()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fault_is_one_line_exit_2_nothing_written(case, tmp_path, models_dir, endpoint, tiny_disc_dir, closed_port,
                                                  capsys):
    name, script = case[0], case[1]
    d, argv, names = _prepare(case, tmp_path, models_dir, endpoint, tiny_disc_dir, closed_port)
    before = _snapshot(d)
    main = importlib.import_module(MAIN_MODULES.get(script, script)).main
    with pytest.raises(SystemExit) as e:
        errors.main_boundary(main, argv)
    _check(name, e.value.code, capsys.readouterr().err, names, before, _snapshot(d))


def test_fault_through_the_real_command_line(tmp_path_factory, models_dir, endpoint, tiny_disc_dir, closed_port):
    cases = [c for c in CASES if c[0] in SUBPROCESS_CASES]
    assert len(cases) == len(SUBPROCESS_CASES)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def run(case):
        d, argv, names = _prepare(case, tmp_path_factory.mktemp("sub"), models_dir, endpoint, tiny_disc_dir,
                                  closed_port)
        before = _snapshot(d)
        done = subprocess.run([sys.executable, str(ROOT / f"{case[1]}.py"), *argv], capture_output=True, text=True,
                              timeout=300, cwd=ROOT, env=env)
        return case[0], done.returncode, done.stderr, names, before, _snapshot(d)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for result in pool.map(run, cases):
            _check(*result)


def test_a_bug_keeps_its_traceback():
    """The boundary does not swallow what the project did not expect."""
    def buggy_main(argv):
        return {}["missing"]
    with pytest.raises(KeyError):
        errors.main_boundary(buggy_main, [])


def test_table_size():
    assert len(CASES) >= 80


def test_readme_says_what_happens_when_something_goes_wrong():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## When something goes wrong", 1)[1].split("\n## ", 1)[0]
    assert "errors.main_boundary" in section and "What is kept" in section and "--resume" in section
