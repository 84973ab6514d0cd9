"""
Tables and figures of a grid, rebuilt from its committed small outputs alone (results/GRID/, see grid.py).

    python experiments/report.py results/diagnosis                 # writes results/diagnosis/report.md + PNGs
    python experiments/report.py results/diagnosis --reference grpo-aon

Held-out metrics, per policy: instruction level = share of single constraints met (pooled over prompts), prompt
level = share of prompts with every constraint met; strict, greedy. Per variant: mean ± sample std over its seeds,
and the paired difference to the base model and to the reference variant with a 95 % bootstrap interval that
resamples prompts (the same prompts for both sides: paired) and each side's seeds. Training figures per variant
(means over the last 5 steps, then over seeds): share of sampled responses cut off at the token cap, token
advantage on EOS, |A_res| and lambda*|A_tok| per token, share of groups with zero reward spread.
"""
import argparse
import json
from pathlib import Path

import numpy as np

N_BOOT = 10_000


def read_jsonl(path: Path) -> list:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def verdict_matrix(results: Path, label: str, keys: list) -> tuple:
    """(met [N], total [N]) constraints met / constraints per held-out prompt, in the order of `keys`."""
    by_key = {v["key"]: v["follow_instruction_list_strict"] for v in read_jsonl(results / label / "eval" /
                                                                                  "verdicts.jsonl")}
    met = np.array([sum(by_key[k]) for k in keys], dtype=float)
    total = np.array([len(by_key[k]) for k in keys], dtype=float)
    return met, total


def bootstrap_difference(met_a: np.ndarray, met_b: np.ndarray, total: np.ndarray, level: str, seed: int = 0):
    """Mean difference A - B and its 95 % interval. met_a [Sa, N], met_b [Sb, N] per seed and prompt; total [N].

    instruction level: sum(met) / sum(total) over the prompts; prompt level: share of prompts with met == total.
    Each replicate draws N prompts with replacement (shared by A and B) and Sa (Sb) seeds with replacement.

    Example (two policies, one seed each, three prompts of 2 constraints; A meets one more constraint in total):
        >>> lo_hi = bootstrap_difference(np.array([[2., 1, 1]]), np.array([[1., 1, 1]]), np.array([2., 2, 2]),
        ...                              "instruction")
        >>> round(lo_hi[0], 4)
        0.1667
    """
    rng = np.random.default_rng(seed)

    def stat(met, prompts):                                        # met [R, N'], prompts [R, N'] -> [R]
        if level == "instruction":
            return np.take_along_axis(met, prompts, 1).sum(1) / total[prompts].sum(1)
        return (np.take_along_axis(met, prompts, 1) == total[prompts]).mean(1)

    N = total.shape[0]
    every = np.arange(N)[None]                                     # [1, N] the prompts as they are
    point = float(np.mean([stat(m[None], every)[0] for m in met_a]) - np.mean([stat(m[None], every)[0] for m in met_b]))
    prompts = rng.integers(0, N, (N_BOOT, N))                      # [R, N]
    seeds_a = rng.integers(0, met_a.shape[0], (N_BOOT, met_a.shape[0]))
    seeds_b = rng.integers(0, met_b.shape[0], (N_BOOT, met_b.shape[0]))
    diffs = np.zeros(N_BOOT)
    for side, met, seeds in ((1.0, met_a, seeds_a), (-1.0, met_b, seeds_b)):
        for j in range(seeds.shape[1]):
            diffs += side * stat(met[seeds[:, j]], prompts) / seeds.shape[1]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return point, float(lo), float(hi)


def seeds_of(results: Path, variant: str) -> list:
    return sorted(d.name for d in results.iterdir() if d.is_dir() and d.name.rsplit("-seed", 1)[0] == variant
                  and (d / "eval" / "verdicts.jsonl").exists())


def training_figures(results: Path, labels: list) -> dict:
    """Means over the last 5 training steps, then over seeds; None where a run did not log the figure (GRPO has no
    token term). The token advantage on EOS is weighted by the number of EOS tokens of each step (a step whose
    responses were all cut off has none)."""
    keys = ("truncated", "res_adv_abs", "tok_term_abs", "zero_var_groups", "csr_pass", "aon_pass")
    out = {}
    rows = [r for label in labels
            for r in [r for r in read_jsonl(results / label / "metrics.jsonl") if r.get("kind") == "train"][-5:]]
    for k in keys:
        per_seed = [[r[k] for r in read_jsonl(results / label / "metrics.jsonl")
                     if r.get("kind") == "train" and r.get(k) is not None][-5:] for label in labels]
        out[k] = float(np.mean([np.mean(v) for v in per_seed])) if all(per_seed) else None
    weights = [r.get("eos_count", 0) for r in rows if r.get("eos_tok_adv") is not None]
    values = [r["eos_tok_adv"] for r in rows if r.get("eos_tok_adv") is not None]
    out["eos_tok_adv"] = float(np.average(values, weights=weights)) if sum(weights) else None
    return out


def report(results: Path, reference: str) -> str:
    grid = json.loads((results / "grid.json").read_text())
    keys = [v["key"] for v in read_jsonl(results / "base" / "eval" / "verdicts.jsonl")]
    base_met, total = verdict_matrix(results, "base", keys)
    variants = [v for v in grid["variants"] if seeds_of(results, v)]
    mets = {v: np.stack([verdict_matrix(results, label, keys)[0] for label in seeds_of(results, v)])
            for v in variants}
    pct = lambda x: f"{round(100 * x, 1) + 0.0:+.1f}"  # noqa: E731  (no "-0.0")
    lines = [f"Held-out: {len(keys)} prompts ({grid['filter']} filter), greedy, {grid['eval_tokens']} new tokens, "
             f"strict. Mean ± sample std over seeds; Δ = paired difference with a 95 % bootstrap interval over prompts "
             f"and seeds ({N_BOOT} replicates). Training columns: last 5 steps, mean over seeds.", "",
             "| policy | seeds | instruction-level % | prompt-level % | Δ inst. vs base | Δ inst. vs " + reference
             + " | Δ prompt vs base | cut off % | A_tok on EOS | \\|A_res\\| | λ\\|A_tok\\| |",
             "|---|---:|---:|---:|---|---|---|---:|---:|---:|---:|"]
    lines.append(f"| base | - | {100 * base_met.sum() / total.sum():.1f} | {100 * (base_met == total).mean():.1f} "
                 "| | | | | | | |")
    for v in variants:
        m = mets[v]
        inst = m.sum(1) / total.sum()
        prompt = (m == total).mean(1)
        sd = lambda x: f" ± {100 * x.std(ddof=1):.1f}" if len(x) > 1 else ""  # noqa: E731
        d_base = bootstrap_difference(m, base_met[None], total, "instruction")
        d_ref = bootstrap_difference(m, mets[reference], total, "instruction") if reference in mets and v != reference \
            else None
        d_prompt = bootstrap_difference(m, base_met[None], total, "prompt")
        t = training_figures(results, seeds_of(results, v))
        ci = lambda d: f"{pct(d[0])} [{pct(d[1])}, {pct(d[2])}]" if d else ""  # noqa: E731
        fmt = lambda x, f: "–" if x is None else format(x, f)  # noqa: E731
        lines.append(f"| {v} | {len(m)} | {100 * inst.mean():.1f}{sd(inst)} | {100 * prompt.mean():.1f}{sd(prompt)} "
                     f"| {ci(d_base)} | {ci(d_ref)} | {ci(d_prompt)} | {fmt(100 * t['truncated'], '.0f')} "
                     f"| {fmt(t['eos_tok_adv'], '+.3f')} | {fmt(t['res_adv_abs'], '.3f')} "
                     f"| {fmt(t['tok_term_abs'], '.3f')} |")
    lines += ["", "Commands (seed S):", ""]
    lines += [f"- `{v}`: `{grid['commands'][seeds_of(results, v)[0]]}`" for v in variants]
    lines += [f"- base: `{grid['commands']['base']}`"]
    return "\n".join(lines) + "\n"


def plot(results: Path) -> Path:
    """Per variant, mean over seeds per step: share cut off, A_tok on EOS, training CSR."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    grid = json.loads((results / "grid.json").read_text())
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for i, v in enumerate(x for x in grid["variants"] if seeds_of(results, x)):
        runs = [[r for r in read_jsonl(results / label / "metrics.jsonl") if r.get("kind") == "train"]
                for label in seeds_of(results, v)]
        n = min(len(r) for r in runs)
        for ax, key in zip(axes, ("truncated", "eos_tok_adv", "csr_pass")):
            vals = np.array([[r[s].get(key) if r[s].get(key) is not None else np.nan for s in range(n)]
                             for r in runs], dtype=float)                                 # [seeds, steps]
            if np.isnan(vals).all():
                continue                                                                  # GRPO: no token term
            ax.plot(range(1, n + 1), np.nanmean(vals, 0), color=f"C{i}", label=v)
            if len(runs) > 1:
                ax.fill_between(range(1, n + 1), np.nanmin(vals, 0), np.nanmax(vals, 0), color=f"C{i}", alpha=0.15)
    for ax, title in zip(axes, ("sampled responses cut off at the cap", "token advantage on EOS (RTT)",
                                "constraints met by sampled responses (CSR)")):
        ax.set_title(title, fontsize=10), ax.set_xlabel("step"), ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = results / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    ap.add_argument("results", help="a grid's results folder (results/GRID)")
    ap.add_argument("--reference", default="grpo-aon", help="variant the others are compared with")
    args = ap.parse_args(argv)
    results = Path(args.results)
    md = report(results, args.reference)
    (results / "report.md").write_text(md)
    print(md)
    print(f"[report] wrote {results / 'report.md'} and {plot(results)}")


if __name__ == "__main__":
    main()
