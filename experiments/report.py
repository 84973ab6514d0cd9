"""
Tables and figures of a grid, rebuilt from its committed small outputs alone (results/GRID/, see grid.py).

    python experiments/report.py results/diagnosis                 # writes results/diagnosis/report.md + PNGs
    python experiments/report.py results/diagnosis --reference grpo-aon
    python experiments/report.py results/short --contrast rtt rtt-random --contrast rtt grpo-csr

Held-out metrics, per policy: instruction level = share of single constraints met (pooled over prompts), prompt
level = share of prompts with every constraint met; strict, greedy. Per variant: mean ± sample std over its seeds,
and the paired difference to the base model and to the reference variant with a 95 % bootstrap interval that
resamples prompts (the same prompts for both sides: paired) and each side's seeds. Where the grid also scored its
policies on IFEval (results/GRID/LABEL/eval-ifeval/), the same columns for IFEval: both levels, and the
instruction-level difference to the base model and to the reference variant. Training figures per variant
(means over the last 5 steps, then over seeds): share of sampled responses cut off at the token cap, token
advantage on EOS, |A_res| and lambda*|A_tok| per token, share of groups with zero reward spread. Below the table,
the held-out constraints met per family (instruction id), base model and each variant: where a variant won or lost.
Degenerate text: the share of held-out (and IFEval, where scored) responses that repeat one word 8 or more times in
a row ("* * * * ...", "P.S. P.S. ..."), and the instruction level when each of those meets none of its constraints
(the strict checkers pass some constraints on such text: a run of "[address]" has placeholders and no comma), with
the same intervals, and the words repeated.

Figures: curves.png (per step, mean over seeds, min..max band: share cut off, A_tok on EOS, training CSR) and, where
the runs evaluated during training (the "eval" rows of metrics.jsonl, e.g. the short grid), learning_curves.png:
train.py's greedy held-out all-met and constraints-met rates per evaluation step and the share of groups with zero
reward spread (a 5-step trailing mean), mean ± sample std over seeds; report.md links it. `--contrast A B` adds the
paired differences A - B (e.g. RTT against RTT with random relevance: does the discriminator matter?).
"""
import argparse
import json
import re
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from support.diagnostics import REPEAT_RUN, repeated_word  # noqa: E402

N_BOOT = 10_000
SMOOTH = 5   # steps in the trailing mean of the zero-spread share (learning_curves.png)


def read_jsonl(path: Path) -> list:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def verdict_matrix(results: Path, label: str, keys: list, folder: str = "eval") -> tuple:
    """(met [N], total [N], repeated [N]) constraints met / constraints per prompt / the word the response repeats
    REPEAT_RUN times in a row ("" where none), in the order of `keys`, from the verdicts.jsonl of
    results/LABEL/FOLDER (eval: the held-out file; eval-ifeval: IFEval; evaluate.py writes both alike)."""
    path = results / label / folder / "verdicts.jsonl"
    by_key = {}
    for line, v in enumerate(read_jsonl(path), 1):
        if "response" not in v:
            raise SystemExit(f"[report] {path}, verdict {line}: no 'response' field (evaluate.py writes one)")
        by_key[v["key"]] = (v["follow_instruction_list_strict"], repeated_word(v["response"]))
    met = np.array([sum(by_key[k][0]) for k in keys], dtype=float)
    total = np.array([len(by_key[k][0]) for k in keys], dtype=float)
    return met, total, [by_key[k][1] for k in keys]


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


def seeds_of(results: Path, variant: str, folder: str = "eval") -> list:
    """The run labels (VARIANT-seedS) of `variant` that have an evaluation in results/LABEL/FOLDER."""
    return sorted(d.name for d in results.iterdir() if d.is_dir() and d.name.rsplit("-seed", 1)[0] == variant
                  and (d / folder / "verdicts.jsonl").exists())


class Verdicts(NamedTuple):
    """One benchmark's strict verdicts, aligned on its N prompts (the base model's order)."""
    total: np.ndarray           # [N] constraints per prompt
    base: "np.ndarray | None"   # [N] constraints the base model met; None where it was not evaluated
    met: dict                   # variant -> [S, N] constraints met per seed (variants with at least one seed)
    seeds: dict                 # variant -> the S run labels, in the order of met's rows
    base_repeated: "list | None"   # [N] the word the base model's response repeats ("" where none)
    repeated: dict              # variant -> [S] lists of [N]: the same, per seed


def repetitive(repeated: list) -> np.ndarray:
    """1.0 where a response repeats a word (repeated: [N] words, or [S] lists of them), else 0.0; same shape."""
    return (np.array(repeated, dtype=object) != "").astype(float)


def top_words(repeated: list) -> str:
    """The words repetitive responses repeat, most frequent first, over [S] lists of [N] words: "`*` 30, ..." (4)."""
    counts = {}
    for word in (w for seed in repeated for w in seed if w):
        counts[word] = counts.get(word, 0) + 1
    return ", ".join(f"`{w}` {n}" for w, n in sorted(counts.items(), key=lambda kv: -kv[1])[:4])


def repetitive_as_failed(bench: Verdicts) -> Verdicts:
    """The same verdicts with every repetitive response counted as meeting none of its constraints."""
    base = None if bench.base is None else bench.base * (1 - repetitive(bench.base_repeated))
    met = {v: m * (1 - repetitive(bench.repeated[v])) for v, m in bench.met.items()}
    return bench._replace(base=base, met=met)


def load_verdicts(results: Path, variants: list, folder: str):
    """The verdicts of every policy evaluated in results/LABEL/FOLDER; None when none was."""
    seeds = {v: seeds_of(results, v, folder) for v in variants}
    seeds = {v: labels for v, labels in seeds.items() if labels}
    has_base = (results / "base" / folder / "verdicts.jsonl").exists()
    if not (has_base or seeds):
        return None
    first = "base" if has_base else next(iter(seeds.values()))[0]
    keys = [v["key"] for v in read_jsonl(results / first / folder / "verdicts.jsonl")]
    total = verdict_matrix(results, first, keys, folder)[1]
    base, base_repeated = verdict_matrix(results, "base", keys, folder)[::2] if has_base else (None, None)
    runs = {v: [verdict_matrix(results, label, keys, folder) for label in labels] for v, labels in seeds.items()}
    met = {v: np.stack([m for m, _, _ in matrices]) for v, matrices in runs.items()}
    repeated = {v: [r for _, _, r in matrices] for v, matrices in runs.items()}
    return Verdicts(total, base, met, seeds, base_repeated, repeated)


def levels(met: np.ndarray, total: np.ndarray) -> tuple:
    """(instruction level [S], prompt level [S]) of met [S, N] constraints met per seed and prompt, total [N]."""
    return met.sum(1) / total.sum(), (met == total).mean(1)


def percent_over_seeds(x: np.ndarray) -> str:
    """x [S] as a percentage: its mean, and ± its sample std where there are two seeds or more."""
    return f"{100 * x.mean():.1f}" + (f" ± {100 * x.std(ddof=1):.1f}" if len(x) > 1 else "")


def signed(x: float) -> str:
    return f"{round(100 * x, 1) + 0.0:+.1f}"   # percentage points, "+0.0" (never "-0.0")


def paired_delta(bench: Verdicts, variant: str, against: str, level: str) -> str:
    """`point [lo, hi]` of variant - against (a variant, or "base") on bench, in points; "" where not comparable
    (against not evaluated, or the variant itself)."""
    other = bench.base[None] if against == "base" and bench.base is not None else bench.met.get(against)
    if variant not in bench.met or other is None or variant == against:
        return ""
    point, lo, hi = bootstrap_difference(bench.met[variant], other, bench.total, level)
    return f"{signed(point)} [{signed(lo)}, {signed(hi)}]"


def family_rates(results: Path, label: str, folder: str = "eval") -> dict:
    """instruction id -> (met, n): constraints of that family met, and asked, in results/LABEL/FOLDER's verdicts."""
    rates = {}
    for row in read_jsonl(results / label / folder / "verdicts.jsonl"):
        for family, met in zip(row["instruction_id_list"], row["follow_instruction_list_strict"]):
            m, n = rates.get(family, (0, 0))
            rates[family] = (m + met, n + 1)
    return rates


def family_table(results: Path, heldout: Verdicts) -> list:
    """Markdown lines: per constraint family, the share met by the base model and by each variant (mean over its
    seeds), on the held-out prompts. Where a variant won or lost shows here."""
    policies = {"base": ["base"], **heldout.seeds}
    rates = {name: [family_rates(results, label) for label in labels] for name, labels in policies.items()}
    families = sorted(rates["base"][0])
    lines = [markdown_row(["family", "n", *policies]), "|" + "|".join(["---", "---:", *["---:"] * len(policies)]) + "|"]
    for family in families:
        cells = [f"{100 * np.mean([r[family][0] / r[family][1] for r in runs]):.0f}" for runs in rates.values()]
        lines.append(markdown_row([family, str(rates["base"][0][family][1]), *cells]))
    return lines


def seed_as_s(command: str, label: str) -> str:
    """A run's command with its seed written as S, as the report's "Commands (seed S)" heading promises.

    >>> seed_as_s("python train.py --seed 42 --out runs/short/rtt-seed42 --threads 1", "rtt-seed42")
    'python train.py --seed S --out runs/short/rtt-seedS --threads 1'
    """
    seed = label.rsplit("-seed", 1)[1]
    return re.sub(rf"(--seed |-seed){seed}\b", r"\1S", command)


def markdown_row(cells: list) -> str:
    return "| " + " | ".join(cells) + " |"


def training_figures(results: Path, labels: list) -> dict:
    """Means over the last 5 training steps, then over seeds; None where a run did not log the figure (GRPO has no
    token term). The token advantage on EOS is weighted by the number of EOS tokens of each step (a step whose
    responses were all cut off has none)."""
    keys = ("truncated", "res_adv_abs", "tok_term_abs", "zero_var_groups", "csr_pass", "aon_pass")
    out = {}
    train_rows = [[r for r in read_jsonl(results / label / "metrics.jsonl") if r.get("kind") == "train"]
                  for label in labels]                                          # per seed, read once
    rows = [r for runs in train_rows for r in runs[-5:]]
    for k in keys:
        per_seed = [[r[k] for r in runs if r.get(k) is not None][-5:] for runs in train_rows]
        out[k] = float(np.mean([np.mean(v) for v in per_seed])) if all(per_seed) else None
    weights = [r.get("eos_count", 0) for r in rows if r.get("eos_tok_adv") is not None]
    values = [r["eos_tok_adv"] for r in rows if r.get("eos_tok_adv") is not None]
    out["eos_tok_adv"] = float(np.average(values, weights=weights)) if sum(weights) else None
    return out


def heldout_cells(heldout: Verdicts, variant: str, reference: str) -> list:
    """Held-out columns of a variant: both levels over seeds, Δ instruction level vs base and vs reference, Δ prompt
    level vs base."""
    inst, prompt = levels(heldout.met[variant], heldout.total)
    return [percent_over_seeds(inst), percent_over_seeds(prompt), paired_delta(heldout, variant, "base", "instruction"),
            paired_delta(heldout, variant, reference, "instruction"), paired_delta(heldout, variant, "base", "prompt")]


def ifeval_cells(ifeval: Verdicts, variant: str, reference: str, n_heldout_seeds: int) -> list:
    """IFEval columns of a variant: both levels over the seeds it was scored on (their number where it is not the
    held-out one), Δ instruction level vs base and vs reference; empty cells where it was not scored on IFEval."""
    if variant not in ifeval.met:
        return ["", "", "", ""]
    inst, prompt = levels(ifeval.met[variant], ifeval.total)
    fewer = f" ({len(inst)} seed{'s' * (len(inst) > 1)})" if len(inst) != n_heldout_seeds else ""
    return [percent_over_seeds(inst) + fewer, percent_over_seeds(prompt),
            paired_delta(ifeval, variant, "base", "instruction"),
            paired_delta(ifeval, variant, reference, "instruction")]


def training_cells(results: Path, labels: list) -> list:
    """Training columns of a variant (last 5 steps, mean over seeds): cut off %, A_tok on EOS, |A_res|, λ|A_tok|."""
    t = training_figures(results, labels)
    fmt = lambda x, f: "–" if x is None else format(round(x, 3) + 0.0, f)  # noqa: E731  (never "-0.000")
    return [fmt(None if t["truncated"] is None else 100 * t["truncated"], ".0f"), fmt(t["eos_tok_adv"], "+.3f"),
            fmt(t["res_adv_abs"], ".3f"), fmt(t["tok_term_abs"], ".3f")]


def contrast_lines(heldout: Verdicts, ifeval: "Verdicts | None", contrasts: list) -> list:
    """A table of the paired differences A - B asked for (`--contrast A B`): instruction and prompt level on the
    held-out prompts, instruction level on IFEval where both were scored; a pair with a side not evaluated is left
    out."""
    lines = []
    for a, b in contrasts:
        if a not in heldout.met or b not in heldout.met:
            missing = " and ".join(v for v in (a, b) if v not in heldout.met)
            print(f"[report] --contrast {a} {b}: no held-out evaluation of {missing} in this folder, left out",
                  file=sys.stderr)
            continue
        cells = [f"{a} - {b}", f"{len(heldout.seeds[a])} / {len(heldout.seeds[b])}",
                 paired_delta(heldout, a, b, "instruction"), paired_delta(heldout, a, b, "prompt")]
        if ifeval:
            cells.append(paired_delta(ifeval, a, b, "instruction") if a in ifeval.met and b in ifeval.met else "")
        lines.append(markdown_row(cells))
    if not lines:
        return []
    header = ["difference", "seeds", "Δ inst.", "Δ prompt", *(["Δ IFEval inst."] if ifeval else [])]
    return ["", "Paired differences between variants (percentage points, 95 % bootstrap interval over prompts and "
                "seeds):", "", markdown_row(header), "|" + "|".join(["---", "---:", *["---"] * (len(header) - 2)]) + "|",
            *lines]


def repetition_lines(bench: Verdicts, reference: str, contrasts: list, name: str = "held-out") -> list:
    """A table of degenerate responses on a benchmark (`name`): per policy, the share whose text repeats one word
    REPEAT_RUN times in a row, and the instruction level when such a response meets none of its constraints (the
    strict checkers pass some constraints on text like "[address] [address] ..."), with its paired differences to
    the base model, to `reference` and for each contrast; and which words the repetitive responses repeat."""
    strict = repetitive_as_failed(bench)
    header = ["policy", "seeds", "repetitive %", "inst. % (repetitive = failed)", "Δ vs base", "Δ vs " + reference,
              "words repeated (responses, all seeds)"]
    lines = ["", f"Repetitive responses on the {name} prompts (one word {REPEAT_RUN} or more times in a row, e.g. "
                 f"`* * * * ...`): their share, and the instruction level when each of them counts as meeting none of "
                 f"its constraints (Δ: paired, 95 % bootstrap interval over prompts and seeds):", "",
             markdown_row(header), "|---|---:|---:|---:|---|---|---|"]
    if bench.base is not None:
        lines.append(markdown_row(["base", "-", f"{100 * repetitive(bench.base_repeated).mean():.1f}",
                                   f"{100 * levels(strict.base[None], strict.total)[0][0]:.1f}", "", "",
                                   top_words([bench.base_repeated])]))
    for v in bench.met:
        share = repetitive(bench.repeated[v]).mean(1)                                    # [S]
        lines.append(markdown_row([v, str(len(bench.seeds[v])), percent_over_seeds(share),
                                   percent_over_seeds(levels(strict.met[v], strict.total)[0]),
                                   paired_delta(strict, v, "base", "instruction"),
                                   paired_delta(strict, v, reference, "instruction"),
                                   top_words(bench.repeated[v])]))
    pairs = [(a, b) for a, b in contrasts if a in bench.met and b in bench.met]
    if pairs:
        lines += ["", "| difference | Δ inst. (repetitive = failed) |", "|---|---|",
                  *(markdown_row([f"{a} - {b}", paired_delta(strict, a, b, "instruction")]) for a, b in pairs)]
    return lines


def report(results: Path, reference: str, contrasts: tuple = ()) -> str:
    """report.md of a grid: the table (held-out, IFEval where scored, training figures), the paired differences
    between the variants in `contrasts` ([(A, B), ...]), the command of every row, and the link to
    learning_curves.png where the runs evaluated during training."""
    grid = json.loads((results / "grid.json").read_text())
    heldout = load_verdicts(results, grid["variants"], "eval")
    variants = [v for v in grid["variants"] if v in heldout.met]
    ifeval = load_verdicts(results, variants, "eval-ifeval")
    chosen = "no filter" if grid["filter"] == "all" else f"{grid['filter']} filter"
    lines = [f"Held-out: {len(heldout.total)} prompts ({chosen}), greedy, {grid['eval_tokens']} new tokens, "
             f"strict. Mean ± sample std over seeds; Δ = paired difference with a 95 % bootstrap interval over prompts "
             f"and seeds ({N_BOOT} replicates). Training columns: last 5 steps, mean over seeds."]
    header = ["policy", "seeds", "instruction-level %", "prompt-level %", "Δ inst. vs base",
              "Δ inst. vs " + reference, "Δ prompt vs base"]
    align = ["---", "---:", "---:", "---:", "---", "---", "---"]
    if ifeval:
        lines[0] += (f" IFEval: {len(ifeval.total)} prompts, greedy, {grid['eval_tokens']} new tokens, strict; the "
                     f"same statistics.")
        header += ["IFEval inst. %", "IFEval prompt %", "Δ IFEval inst. vs base", "Δ IFEval inst. vs " + reference]
        align += ["---:", "---:", "---", "---"]
    header += ["cut off %", "A_tok on EOS", "\\|A_res\\|", "λ\\|A_tok\\|"]
    align += ["---:"] * 4
    lines += ["", markdown_row(header), "|" + "|".join(align) + "|"]

    base = ["base", "-", *(f"{100 * x[0]:.1f}" for x in levels(heldout.base[None], heldout.total)), "", "", ""]
    if ifeval:
        scored = ifeval.base is not None
        base += [*(f"{100 * x[0]:.1f}" for x in levels(ifeval.base[None], ifeval.total))] if scored else ["", ""]
        base += ["", ""]
    lines.append(markdown_row(base + [""] * 4))
    for v in variants:
        labels = heldout.seeds[v]
        lines.append(markdown_row([v, str(len(labels)), *heldout_cells(heldout, v, reference),
                                   *(ifeval_cells(ifeval, v, reference, len(labels)) if ifeval else []),
                                   *training_cells(results, labels)]))

    lines += contrast_lines(heldout, ifeval, contrasts)
    lines += repetition_lines(heldout, reference, contrasts)
    if ifeval:
        lines += repetition_lines(ifeval, reference, contrasts, "IFEval")
    lines += ["", "Commands (seed S):", ""]
    lines += [f"- `{v}`: `{seed_as_s(grid['commands'][heldout.seeds[v][0]], heldout.seeds[v][0])}`" for v in variants]
    lines += [f"- base: `{grid['commands']['base']}`"]
    if ifeval and "base-ifeval" in grid["commands"]:
        lines += [f"- IFEval (base; a trained policy: the same with `--model` its final checkpoint): "
                  f"`{grid['commands']['base-ifeval']}`"]
    if heldout.base is not None:
        lines += ["", "Constraints met per family on the held-out prompts (strict, %, mean over seeds; n = constraints "
                      "of that family):", "", *family_table(results, heldout)]
    curves = learning_curve_data(results, variants)
    if curves:
        n = sorted({r["eval_n"] for c in curves.values() for run in c["eval_rows"] for r in run if "eval_n" in r})
        lines += ["", f"Learning curves (train.py's greedy evaluation on the first {'/'.join(map(str, n)) or 'N'} "
                      f"held-out prompts: all constraints met and constraints met; the share of groups with zero "
                      f"reward spread, trailing mean over {SMOOTH} steps; mean ± sample std over seeds):", "",
                  "![learning curves](learning_curves.png)"]
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
            with warnings.catch_warnings():   # a step where no seed's response stopped has no EOS value: a gap
                warnings.simplefilter("ignore", RuntimeWarning)
                ax.plot(range(1, n + 1), np.nanmean(vals, 0), color=f"C{i}", label=v)
                if len(runs) > 1:
                    ax.fill_between(range(1, n + 1), np.nanmin(vals, 0), np.nanmax(vals, 0), color=f"C{i}",
                                    alpha=0.15)
    for ax, title in zip(axes, ("sampled responses cut off at the cap", "token advantage on EOS (RTT)",
                                "constraints met by sampled responses (CSR)")):
        ax.set_title(title, fontsize=10), ax.set_xlabel("step"), ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = results / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve_data(results: Path, variants: list) -> dict:
    """variant -> {"eval_rows": per seed, its "eval" rows of metrics.jsonl; "train_rows": per seed, its "train"
    rows}, for the variants whose runs evaluated during training; {} where none did (the diagnosis grid)."""
    out = {}
    for v in variants:
        runs = [read_jsonl(results / label / "metrics.jsonl") for label in seeds_of(results, v)
                if (results / label / "metrics.jsonl").exists()]
        eval_rows = [[r for r in rows if r.get("kind") == "eval"] for rows in runs]
        if runs and all(eval_rows):
            out[v] = {"eval_rows": eval_rows, "train_rows": [[r for r in rows if r.get("kind") == "train"]
                                                              for rows in runs]}
    return out


def trailing_mean(x: np.ndarray, window: int = None) -> np.ndarray:
    """Mean of each value and the window - 1 before it (fewer at the start).

        >>> trailing_mean(np.array([0., 1, 0, 1, 1]), 2).tolist()
        [0.0, 0.5, 0.5, 0.5, 1.0]
    """
    window = window or SMOOTH
    sums = np.cumsum(np.concatenate([[0.0], x]))
    lo = np.maximum(np.arange(1, len(x) + 1) - window, 0)
    return (sums[1:] - sums[lo]) / (np.arange(1, len(x) + 1) - lo)


def over_seeds(runs: list, key: str) -> tuple:
    """(steps [T], mean [T], sample std [T]) of `key` over seeds, at the steps every seed logged it; runs holds per
    seed its rows, a step logged twice (a resumed run) counts once, the last value."""
    per_seed = [{r["step"]: r[key] for r in rows if r.get(key) is not None} for rows in runs]
    steps = sorted(set.intersection(*(set(d) for d in per_seed)))
    values = np.array([[d[s] for s in steps] for d in per_seed], dtype=float).reshape(len(runs), len(steps))  # [S, T]
    sd = values.std(0, ddof=1) if len(runs) > 1 else np.zeros(len(steps))
    return np.array(steps), values.mean(0), sd


def learning_curves(results: Path):
    """learning_curves.png: per variant, the held-out all-met and constraints-met rates of train.py's evaluations
    (step 0 = the base model) and the share of groups with zero reward spread (trailing mean over SMOOTH steps),
    mean ± sample std over seeds (band). None, and no file, where no run evaluated during training."""
    grid = json.loads((results / "grid.json").read_text())
    curves = learning_curve_data(results, list(grid["variants"]))
    if not curves:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for i, (v, c) in enumerate(curves.items()):
        n_seeds = len(c["eval_rows"])
        for ax, runs, key, marker in ((axes[0], c["eval_rows"], "eval_aon", "o"),
                                      (axes[1], c["eval_rows"], "eval_csr", "o"),
                                      (axes[2], c["train_rows"], "zero_var_groups", None)):
            steps, mean, sd = over_seeds(runs, key)
            if key == "zero_var_groups":   # P groups per step: 0, 1/P, ... 1; a trailing mean shows the trend
                mean, sd = trailing_mean(mean), trailing_mean(sd)
            ax.plot(steps, mean, color=f"C{i}", marker=marker, label=f"{v} ({n_seeds} seeds)")
            if n_seeds > 1:
                ax.fill_between(steps, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1), color=f"C{i}", alpha=0.15)
    for ax, title in zip(axes, ("held-out: all constraints met (greedy)", "held-out: constraints met (greedy)",
                                f"groups with zero reward spread ({SMOOTH}-step trailing mean)")):
        ax.set_title(title, fontsize=10), ax.set_xlabel("step"), ax.grid(alpha=0.3)
    axes[2].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = results / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    ap.add_argument("results", help="a grid's results folder (results/GRID)")
    ap.add_argument("--reference", default="grpo-aon", help="variant the others are compared with")
    ap.add_argument("--contrast", nargs=2, action="append", default=[], metavar=("A", "B"),
                    help="also the paired difference A - B (repeatable), e.g. --contrast rtt rtt-random")
    args = ap.parse_args(argv)
    results = Path(args.results)
    md = report(results, args.reference, args.contrast)
    (results / "report.md").write_text(md)
    print(md)
    figures = [plot(results), learning_curves(results)]
    print(f"[report] wrote {results / 'report.md'} and " + ", ".join(str(f) for f in figures if f))


if __name__ == "__main__":
    main()
