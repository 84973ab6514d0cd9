"""
The judge: one verdict per (response, constraint), +1 met / -1 not met (spec §7).

    python judge.py --data data/heldout.jsonl --responses responses.jsonl            # rule checkers only
    python judge.py --data data/heldout.jsonl --responses responses.jsonl --judge-model smollm2-135m
    python judge.py --data my.jsonl --responses r.jsonl --judge-url http://127.0.0.1:8000/v1 --judge-name Qwen/Qwen2.5-7B-Instruct

Routing, per rubric item (`data.RubricItem`):
  1. an item with a `checker` ({"instruction_id", "kwargs"}) goes to the official IFEval / IFBench checker code (the
     `if-verifiable` package, 25 + 58 instruction ids), through `run_checker` (support/checkers.py);
  2. a checker that raises goes to the LLM judge if one is configured, else counts as not met; either way it is
     counted in `stats["checker_errors"]` and logged (never silently);
  3. an item with no checker goes to the LLM judge (an InfoBench-style YES/NO prompt); with no LLM judge configured it
     counts as not met and is counted in `stats["no_judge"]`;
  4. an item carrying Python source (`code`, VerIF-style rule functions) is NOT executed unless the Judge was built
     with `allow_rule_code=True` (`--allow-rule-code`), and then only in a separate Python process with a time limit;
     otherwise it is treated like an item with no checker.

How this departs from the reference code (spec §10.3) and why:
- The LLM judge is shown the criterion's natural-language description, not a Python dict repr.
- The reply parser is strict by default (`parse_verdict`: an unambiguous YES or NO first word); the reference's
  ("lenient": `yes` anywhere wins) is `parser="lenient"`, which a response saying "answer YES" can steer.
- An over-long judge prompt is shortened in the middle of the *response* (never the tail, which would cut off the
  criterion and the answer instruction).
- Rule functions from the data are never `exec`-ed in the trainer's process.

What lives where (support/ holds what only makes this run; this file is the routing):
  support/checkers.py      run_checker, describe, CheckerError: the IFEval / IFBench registries and their NLTK set-up
  support/llm.py           LocalLLM, EndpointLLM (JudgeEndpointError): the two LLM-judge backends
  support/rule_sandbox.py  run_rule_code: rule functions from data, in a child process with a time limit
  support/judge_cli.py     the command line above (load_responses, main)
"""
import logging
import re
import time
from collections import Counter, defaultdict

from data import item_family
from support.checkers import CheckerError, run_checker
from support.rule_sandbox import run_rule_code

log = logging.getLogger("rtt.judge")


# ---------------------------------------------------------------------------------------------------------------
# 1. The LLM judge: prompt (InfoBench style, spec §7) and reply parsers

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
      is NO, "Yes, there are no commas." and "YES. No commas are used." are YES, but "Yes, I can judge that. The
      answer is NO." and "No problem! YES, it fulfils the criterion." are unparseable.
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


# ---------------------------------------------------------------------------------------------------------------
# 2. The Judge: route every (response, constraint) pair, return scores [B, K] in {+1, -1, 0 = padding}

class Judge:
    """Scores responses against their prompts' rubrics.

    llm: None (rule checkers only), a LocalLLM or an EndpointLLM of support/llm.py (anything with .generate(list of
      chats) -> list of replies). parser: "strict" (default) or "lenient" (the reference's). max_constraints: items
      beyond it are an error (load_rubric_jsonl enforces it; here it is checked again). allow_rule_code: run `code`
      rubric items in a subprocess (see run_rule_code); off by default. rule_timeout: seconds per rule-code process.
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
        assert len(responses) == len(prompt_index), "one prompt index per response"
        prompt_index = [int(p) for p in prompt_index]  # a list or a tensor
        B = len(responses)
        K = max((len(prompts[p].rubrics) for p in set(prompt_index)), default=0)
        if self.max_constraints and self.max_constraints > 0 and K > self.max_constraints:
            raise ValueError(f"a prompt has {K} constraints, more than max_constraints={self.max_constraints}")
        scores = torch.zeros(B, K, dtype=torch.int8)  # [B, K]
        counts, family_seconds = Counter(), defaultdict(float)
        llm_jobs, code_jobs = [], defaultdict(list)  # (b, k) pairs waiting for the LLM / for a rule-code process

        def to_llm_or_fail(b, k, reason):
            if self.llm is not None:
                llm_jobs.append((b, k))
                if reason != "no_checker":
                    counts["llm_fallbacks"] += 1
            else:
                scores[b, k] = -1
                if reason == "no_checker":
                    counts["no_judge"] += 1

        for b, (resp, p) in enumerate(zip(responses, prompt_index)):   # 1. rule checkers, in this process
            prompt = prompts[p]
            for k, item in enumerate(prompt.rubrics):
                if item.checker is not None:
                    t0 = time.perf_counter()
                    try:
                        ok = run_checker(item.checker["instruction_id"], item.checker.get("kwargs") or {},
                                         resp, prompt.instruction)
                        scores[b, k] = 1 if ok else -1
                        counts["checker"] += 1
                    except CheckerError as e:
                        counts["checker_errors"] += 1
                        self._warn("checker failed (prompt %s, item %d): %s -> %s", prompt.id, k, e,
                                   "LLM judge" if self.llm else "not met")
                        to_llm_or_fail(b, k, "checker_error")
                    dt = time.perf_counter() - t0
                    counts["seconds_checker"] += dt
                    family_seconds[item_family(item)] += dt
                elif item.code is not None:
                    if self.allow_rule_code:
                        code_jobs[item.code].append((b, k))
                    else:
                        counts["rule_code_skipped"] += 1
                        to_llm_or_fail(b, k, "rule_code_skipped")
                else:
                    to_llm_or_fail(b, k, "no_checker")
        self._run_rule_code(code_jobs, prompts, responses, prompt_index, scores, counts, family_seconds,
                            to_llm_or_fail)                                          # 2. rule code, sandboxed
        self._run_llm(llm_jobs, prompts, responses, prompt_index, scores, counts)   # 3. the LLM judge, batched
        return scores, self._stats(prompts, prompt_index, scores, counts, family_seconds)

    def _run_rule_code(self, code_jobs, prompts, responses, prompt_index, scores, counts, family_seconds,
                       to_llm_or_fail) -> None:
        """Verdicts of rubric items given as Python rule code: one child process per distinct rule function."""
        for code, pairs in code_jobs.items():
            t0 = time.perf_counter()
            verdicts = run_rule_code(code, [responses[b] for b, _ in pairs], self.rule_timeout)
            dt = time.perf_counter() - t0
            counts["seconds_rule_code"] += dt
            family_seconds["rule_code"] += dt
            for (b, k), v in zip(pairs, verdicts, strict=True):  # run_rule_code answers one per response
                if v is None:
                    counts["rule_code_errors"] += 1
                    self._warn("rule code failed for prompt %s item %d", prompts[prompt_index[b]].id, k)
                    to_llm_or_fail(b, k, "rule_code_error")
                else:
                    scores[b, k] = 1 if v else -1
                    counts["rule_code"] += 1

    def _run_llm(self, llm_jobs, prompts, responses, prompt_index, scores, counts) -> None:
        """Verdicts of the LLM judge on every (b, k) pair sent to it, in one batched call; unparseable = not met."""
        if not llm_jobs:
            return
        t0 = time.perf_counter()
        chats = [judge_messages(prompts[prompt_index[b]].instruction, responses[b],
                                prompts[prompt_index[b]].rubrics[k].description, self.max_response_chars)
                 for b, k in llm_jobs]
        replies = self.llm.generate(chats)
        for (b, k), reply in zip(llm_jobs, replies, strict=True):  # a backend that drops one: an error
            v = parse_verdict(reply, self.parser)
            if v is None:
                counts["llm_unparseable"] += 1
            scores[b, k] = 1 if v else -1
            counts["llm"] += 1
        counts["seconds_llm"] += time.perf_counter() - t0

    def _stats(self, prompts, prompt_index, scores, counts, family_seconds) -> dict:
        """The stats of one call (see score), added to self.totals; failures are logged in one line."""
        family_n, family_met = Counter(), Counter()
        for b, p in enumerate(prompt_index):
            for k, item in enumerate(prompts[p].rubrics):
                family_n[item_family(item)] += 1
                family_met[item_family(item)] += int(scores[b, k] > 0)
        if counts["checker_errors"] or counts["rule_code_errors"] or counts["llm_unparseable"] or counts["no_judge"]:
            log.warning("judge: %d checker errors, %d rule-code errors, %d unparseable LLM replies, %d items with "
                        "no judge (all counted as not met unless an LLM judge took them over)",
                        counts["checker_errors"], counts["rule_code_errors"], counts["llm_unparseable"],
                        counts["no_judge"])
        self.totals.update(counts)
        stats = {key: counts[key] for key in ("checker", "llm", "rule_code", "checker_errors", "llm_fallbacks",
                                              "llm_unparseable", "rule_code_errors", "rule_code_skipped", "no_judge")}
        stats.update({key: round(counts[key], 4) for key in ("seconds_checker", "seconds_llm", "seconds_rule_code")})
        stats["by_family"] = {f: {"n": family_n[f], "met": family_met[f], "seconds": round(family_seconds[f], 4)}
                              for f in sorted(family_n)}
        return stats

    def score_group(self, prompt, responses: list[str]):
        """One prompt's group: scores [G, K_p] (no padding) and stats."""
        return self.score([prompt], responses, [0] * len(responses))


if __name__ == "__main__":
    from support import errors
    from support.judge_cli import main
    errors.main_boundary(main)
