"""
Which constraint families can RL learn from? The base policy's pass rate per family, greedy and sampled, on a rubric
file: a family met almost never or almost always gives GRPO no reward spread to learn from.

    python experiments/family_rates.py --data data/train-short.jsonl --limit 120 --samples 4 --threads 1 \\
        --out results/short/family_rates

For `--limit` prompts (a seeded choice) it samples one greedy response and `--samples` sampled ones (the training
sampler: temperature 0.99, top-p 0.99, top-k 100) at `--max-new-tokens`, judges every (response, constraint), and
writes per family: constraints seen, greedy pass rate, sampled pass rate, the share of (prompt, constraint) pairs whose
sampled responses disagree (some meet it, some do not: the pairs a group-relative reward can learn from), and a
verdict: kept when the sampled pass rate lies within [--low, --high]. Outputs OUT.json and OUT.md (the table).
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data import item_family, load_rubric_jsonl  # noqa: E402
from judge import Judge  # noqa: E402
from rollout import generate_rollout  # noqa: E402
from support import models  # noqa: E402


def verdicts(model, tokenizer, judge, prompts, group_size: int, temperature: float, max_new_tokens: int,
             seed: int, batch: int = 8) -> list:
    """Per prompt, per constraint: the list of G verdicts (True = met). [P][K][G]"""
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        rollout = generate_rollout(model, tokenizer, [p.messages for p in chunk], group_size, max_new_tokens,
                                   temperature=temperature, seed=seed + i)
        scores, _ = judge.score(chunk, rollout.texts, rollout.prompt_index)                  # [B, K]
        kept = sorted(set(rollout.prompt_index))
        for j, p_i in enumerate(kept):
            rows = scores[j * group_size:(j + 1) * group_size]                                # [G, K]
            out.append((chunk[p_i], [[bool(rows[g, k] > 0) for g in range(group_size)]
                                     for k in range(len(chunk[p_i].rubrics))]))
        print(f"[family_rates] {'greedy' if temperature == 0 else 'sampled'}: {min(i + batch, len(prompts))}/"
              f"{len(prompts)} prompts", flush=True)
    return out


def family_table(greedy: list, sampled: list, low: float, high: float) -> list:
    """One row per family from the verdicts of verdicts() (same prompts, same order)."""
    stats = defaultdict(lambda: {"n": 0, "greedy_met": 0, "sampled_met": 0, "sampled_n": 0, "spread": 0})
    for (prompt, g_rows), (_, s_rows) in zip(greedy, sampled):
        for item, g, s in zip(prompt.rubrics, g_rows, s_rows):
            row = stats[item_family(item)]
            row["n"] += 1
            row["greedy_met"] += int(g[0])
            row["sampled_met"] += sum(s)
            row["sampled_n"] += len(s)
            row["spread"] += int(0 < sum(s) < len(s))
    table = []
    for fam in sorted(stats):
        row = stats[fam]
        sampled_rate = row["sampled_met"] / row["sampled_n"]
        table.append({"family": fam, "n": row["n"], "greedy": row["greedy_met"] / row["n"], "sampled": sampled_rate,
                      "spread": row["spread"] / row["n"], "keep": low <= sampled_rate <= high})
    return table


def markdown(table: list, settings: dict) -> str:
    lines = [f"Base policy {settings['model']} on {settings['data']}: {settings['prompts']} prompts, greedy and "
             f"{settings['samples']} sampled responses each, {settings['max_new_tokens']} new tokens "
             f"(`{settings['command']}`).", "",
             "| family | constraints | greedy pass | sampled pass | pairs with spread | kept |",
             "|---|---:|---:|---:|---:|---|"]
    for r in table:
        lines.append(f"| `{r['family']}` | {r['n']} | {100 * r['greedy']:.0f} % | {100 * r['sampled']:.0f} % | "
                     f"{100 * r['spread']:.0f} % | {'yes' if r['keep'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    ap.add_argument("--model", default=models.DEFAULT_MODEL, help="base policy (alias, folder or .gguf)")
    ap.add_argument("--data", default="data/train-short.jsonl", help="rubric prompts (JSONL)")
    ap.add_argument("--limit", type=int, default=120, help="prompts to sample (a seeded choice)")
    ap.add_argument("--samples", type=int, default=4, help="sampled responses per prompt (G)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="response length cap (the CPU training cap)")
    ap.add_argument("--low", type=float, default=0.05, help="keep a family whose sampled pass rate is at least this")
    ap.add_argument("--high", type=float, default=0.95, help="... and at most this")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt choice and the sampler")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default="results/short/family_rates", help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = load_rubric_jsonl(args.data)
    order = np.random.default_rng(args.seed).permutation(len(prompts))[:args.limit]
    prompts = [prompts[i] for i in sorted(order)]
    tokenizer, model = models.load_tokenizer(args.model), models.load_causal_lm(args.model, device="cpu").eval()
    judge = Judge()
    greedy = verdicts(model, tokenizer, judge, prompts, 1, 0.0, args.max_new_tokens, args.seed)
    sampled = verdicts(model, tokenizer, judge, prompts, args.samples, 0.99, args.max_new_tokens, args.seed)
    table = family_table(greedy, sampled, args.low, args.high)
    settings = {"model": args.model, "data": args.data, "prompts": len(prompts), "samples": args.samples,
                "max_new_tokens": args.max_new_tokens, "low": args.low, "high": args.high, "seed": args.seed,
                "command": "python experiments/family_rates.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "families": table}, indent=1))
    out.with_suffix(".md").write_text(markdown(table, settings))
    print(markdown(table, settings))


if __name__ == "__main__":
    main()
