"""
The judge's command line: score saved responses against the rubrics of their prompts.

    python judge.py --data data/heldout.jsonl --responses responses.jsonl            # rule checkers only
    python judge.py --data data/heldout.jsonl --responses responses.jsonl --judge-model smollm2-135m
    python judge.py --data my.jsonl --responses r.jsonl --judge-url http://127.0.0.1:8000/v1 --judge-name Qwen/Qwen2.5-7B-Instruct

judge.py runs `main` here (through support/errors.py's boundary). Writes one JSON line per response (`--out`, or
stdout): {"id", "scores" (K_p values in {+1, -1}), "all_met", "response" (its first 200 characters)}; the totals,
per family, go to stderr.
"""
import argparse
import json
import logging
import os
import sys
from pathlib import Path

from data import DataError, iter_jsonl, load_rubric_jsonl
from judge import Judge
from support import errors
from support.llm import EndpointLLM, LocalLLM


def load_responses(path) -> list[tuple[str, list[str]]]:
    """The responses file: JSONL, one row per prompt or per response, keyed by the prompt's id:
        {"id": "heldout-00003", "response": "text"}            one response
        {"id": "heldout-00003", "responses": ["text", ...]}    a group
    Several rows may share an id; their responses are scored together.
    """
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
