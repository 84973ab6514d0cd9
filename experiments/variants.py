"""
Experiment: does RTT beat response-level GRPO here? Six variants at equal steps and samples, on the embedded default.

    python experiments/variants.py                          # seed 42, one job at a time
    python experiments/variants.py --seeds 1 2 3 --parallel 2 --threads 1   # 3 seeds, two jobs at once
    python experiments/variants.py --only grpo-aon rtt-intra -- --steps 20  # after --: passed to train.py as is
    python experiments/variants.py --ifeval 100             # also IFEval's first 100 prompts for every policy
    python experiments/variants.py --dry-run                # print the commands, run nothing

Every run is `python train.py` with the same settings (train.py's defaults for the device: on a CPU P=2 prompts,
G=8, 64 new tokens, 5 steps, lr 1e-5) and only the algorithm flags below differing: the five of the comparison,
plus RTT (intra) without the std floor of the token normalisation (advantages.TOKEN_STD_FLOOR), to show what it
does. Then the base model and each final policy are scored with `evaluate.py --bench heldout` (greedy, the same
token cap as training) on the first --limit prompts of data/heldout.jsonl, which shares no prompt with the training
set; with --ifeval N also on IFEval's first N prompts. Results: OUT/results.md (mean ± std over seeds, the exact
command of each row), OUT/results.json, OUT/curves.png (AON and CSR pass rates of the sampled responses, per step).

Runs and evaluations that already finished are not redone, so a killed experiment continues where it stopped.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PAPER_CREDIT = ["--token-credit", "all"]   # every token, as printed: what these runs used (train.py's default then)
VARIANTS = {  # name -> train.py flags; everything else is the same for all of them
    "grpo-aon": ["--algo", "grpo", "--union", "aon"],
    "grpo-csr": ["--algo", "grpo", "--union", "csr"],
    "rtt-intra": ["--algo", "rtt", "--norm", "intra", *PAPER_CREDIT],
    "rtt-inter": ["--algo", "rtt", "--norm", "inter", *PAPER_CREDIT],
    "rtt-random": ["--algo", "rtt", "--norm", "intra", "--relevance", "random", *PAPER_CREDIT],
    "rtt-intra-nofloor": ["--algo", "rtt", "--norm", "intra", "--token-std-floor", "0", *PAPER_CREDIT],  # as printed
}
METRICS = ("all_constraints_met_rate", "constraint_rate")
IFEVAL_METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc")


def run(cmd: list, log: Path) -> float:
    """Run cmd with stdout+stderr to log; seconds taken. A failure stops the experiment with the log's tail.
    (experiments/grid.py runs its jobs with this too.)"""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"[experiment] failed (exit {done.returncode}): {' '.join(map(str, cmd))}\n  "
                         + "\n  ".join(tail))
    return time.perf_counter() - t0


def final_checkpoint(run_dir: Path) -> Path | None:
    latest = run_dir / "checkpoints" / "latest"
    return run_dir / "checkpoints" / latest.read_text().strip() if latest.exists() else None


def finished(run_dir: Path) -> bool:
    """A run is done when its metrics hold as many train steps as its config asked for."""
    cfg, metrics = run_dir / "config.json", run_dir / "metrics.jsonl"
    if not (cfg.exists() and metrics.exists() and final_checkpoint(run_dir)):
        return False
    want = json.loads(cfg.read_text())["steps"]
    got = sum(1 for line in metrics.read_text().splitlines() if '"kind": "train"' in line)
    return got >= want


def train_rows(out: Path, label: str) -> list:
    """The per-step training rows of run `label`'s metrics.jsonl (held-out eval rows left out)."""
    rows = [json.loads(l) for l in (out / label / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [r for r in rows if r.get("kind") == "train"]


def summarise(out: Path, names: list, seeds: list, commands: dict) -> dict:
    """Mean ± std over seeds of the held-out metrics of each variant (and the base model), with the commands."""
    def metrics(label: str) -> dict:  # held-out metrics, plus IFEval's where that evaluation was run
        m = json.loads((out / "eval" / label / "metrics.json").read_text())
        m = {k: m[k] for k in METRICS}
        f = out / "eval-ifeval" / label / "metrics.json"
        if f.exists():
            ife = json.loads(f.read_text())
            m.update({f"ifeval_{k}": ife[k] for k in IFEVAL_METRICS})
        return m

    res = {}
    base = metrics("base")
    res["base"] = {k: {"mean": v, "std": 0.0, "n": 1} for k, v in base.items()}
    res["base"]["command"] = commands["base"]
    for name in names:
        vals = {}
        rewards, tok_abs = [], []
        for s in seeds:
            for k, v in metrics(f"{name}-seed{s}").items():
                vals.setdefault(k, []).append(v)
            rows = train_rows(out, f"{name}-seed{s}")
            rewards.append(np.mean([r["csr_pass"] for r in rows]))
            tok_abs.append(np.mean([r.get("tok_adv_abs", 0.0) for r in rows]))   # 0 for GRPO: no token term
        res[name] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                         "n": len(v)} for k, v in vals.items()}
        res[name]["train_csr_mean"] = float(np.mean(rewards))
        res[name]["train_tok_adv_abs"] = float(np.mean(tok_abs))
        res[name]["command"] = commands[name]
    return res


def markdown(res: dict, n_prompts: int, n_ifeval: int = 0) -> str:
    ife = n_ifeval and all(f"ifeval_{k}" in r for r in res.values() for k in IFEVAL_METRICS)
    cols = [("all_constraints_met_rate", "held-out: all constraints met %"), ("constraint_rate", "constraints met %")]
    cols += [(f"ifeval_{k}", f"IFEval {k.replace('_acc', '').replace('_level', '').replace('_', ' ')} %")
             for k in IFEVAL_METRICS] if ife else []
    lines = [f"Held-out rubric split, first {n_prompts} prompts" + (f"; IFEval, first {n_ifeval} prompts" if ife else "")
             + "; greedy. Mean ± sample std over seeds where n (seeds) > 1.", "",
             "| variant | " + " | ".join(c for _, c in cols)
             + " | n | mean training CSR | mean \\|A_tok\\| | command |",
             "|---|" + "---:|" * (len(cols) + 3) + "---|"]
    pm = lambda v: f"{100 * v['mean']:.1f}" + (f" ± {100 * v['std']:.1f}" if v["n"] > 1 else "")  # noqa: E731
    for name, r in res.items():
        tr = f"{r['train_csr_mean']:.3f} | {r['train_tok_adv_abs']:.2f}" if "train_csr_mean" in r else "- | -"
        lines.append(f"| {name} | " + " | ".join(pm(r[k]) for k, _ in cols)
                     + f" | {r[METRICS[0]]['n']} | {tr} | `{r['command']}` |")
    return "\n".join(lines) + "\n"


def plot(out: Path, names: list, seeds: list) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name in names:
        for i, s in enumerate(seeds):
            rows = train_rows(out, f"{name}-seed{s}")
            steps = [r["step"] for r in rows]
            for ax, key in zip(axes, ("aon_pass", "csr_pass")):
                ax.plot(steps, [r[key] for r in rows], marker="o", alpha=0.8,
                        color=f"C{names.index(name)}", label=name if i == 0 else None)
    for ax, title in zip(axes, ("sampled responses meeting all constraints (AON)", "constraints met (CSR)")):
        ax.set_title(title, fontsize=10), ax.set_xlabel("step"), ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=120)
    return path


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    ap.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds (paper: 42)")
    ap.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS), help="variants to run")
    ap.add_argument("--model", default="smollm2-135m", help="policy for every variant")
    ap.add_argument("--out", default="runs/variants", help="experiment folder")
    ap.add_argument("--limit", type=int, default=100, help="held-out prompts to evaluate on")
    ap.add_argument("--eval-tokens", type=int, default=64, help="max new tokens at evaluation (train.py's CPU default)")
    ap.add_argument("--ifeval", type=int, default=0, metavar="N", help="also score IFEval's first N prompts (0: no)")
    ap.add_argument("--ifeval-data", default=None, help="IFEval JSONL for evaluate.py --data (default: its own lookup)")
    ap.add_argument("--parallel", type=int, default=1, help="jobs at once")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per job (0: torch's default)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = ap.parse_args(argv)
    out = ROOT / args.out
    py = sys.executable
    threads = ["--threads", str(args.threads)] if args.threads else []

    train_jobs, commands = [], {}
    for name in args.only:
        flags = ["--model", args.model, *VARIANTS[name], *extra]
        seed = str(args.seeds[0]) if len(args.seeds) == 1 else "S  (S = " + " ".join(map(str, args.seeds)) + ")"
        commands[name] = "python train.py " + " ".join(flags) + " --seed " + seed
        for s in args.seeds:
            run_dir = out / f"{name}-seed{s}"
            cmd = [py, "train.py", *flags, "--seed", str(s), "--out", str(run_dir), "--eval-prompts", "0",
                   "--no-progress", *threads]
            train_jobs.append((f"{name}-seed{s}", run_dir, cmd))
    eval_cmd = lambda model, d, bench, n: [py, "evaluate.py", "--model", str(model), "--bench", bench,  # noqa: E731
                                           "--limit", str(n), "--max-new-tokens", str(args.eval_tokens),
                                           "--out", str(d), *threads,
                                           *(["--data", args.ifeval_data] if bench == "ifeval" and args.ifeval_data
                                             else [])]
    commands["base"] = (f"python evaluate.py --model {args.model} --bench heldout --limit {args.limit} "
                        f"--max-new-tokens {args.eval_tokens}"
                        + (f"; the same with --bench ifeval --limit {args.ifeval}" if args.ifeval else ""))
    if args.dry_run:
        for _, _, cmd in train_jobs:
            print(" ".join(cmd[1:]))
        print(commands["base"] + "   (and the same for each run's final checkpoint)")
        return
    out.mkdir(parents=True, exist_ok=True)

    def train_one(job):
        label, run_dir, cmd = job
        if finished(run_dir):
            print(f"[variants] {label}: already done", flush=True)
            return
        print(f"[variants] {label}: training ...", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        # a checkpoint: continue from it; none (killed before the first one): start that run again
        cmd = [*cmd, "--resume", str(run_dir)] if final_checkpoint(run_dir) else [*cmd, "--overwrite"]
        sec = run(cmd, out / f"{label}.train.log")
        print(f"[variants] {label}: trained in {sec / 60:.1f} min", flush=True)

    def eval_one(job):
        label, model, bench, n = job
        d = out / ("eval" if bench == "heldout" else f"eval-{bench}") / label
        if (d / "metrics.json").exists():
            print(f"[variants] {bench} {label}: already done", flush=True)
            return
        d.mkdir(parents=True, exist_ok=True)
        sec = run(eval_cmd(model, d, bench, n), out / f"{label}.{bench}.log")
        m = json.loads((d / "metrics.json").read_text())
        a, b = (METRICS if bench == "heldout" else IFEVAL_METRICS)                  # what the table reports
        print(f"[variants] {bench} {label}: {a} {100 * m[a]:.1f} %, {b} {100 * m[b]:.1f} % ({sec / 60:.1f} min)",
              flush=True)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(train_one, train_jobs))
        models = [("base", args.model)] + [(label, final_checkpoint(d)) for label, d, _ in train_jobs]
        evals = [(label, m, "heldout", args.limit) for label, m in models]
        evals += [(label, m, "ifeval", args.ifeval) for label, m in models] if args.ifeval else []
        list(pool.map(eval_one, evals))

    res = summarise(out, args.only, args.seeds, commands)
    md = markdown(res, args.limit, args.ifeval)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "results.md").write_text(md)
    print(md)
    print(f"[variants] wrote {out / 'results.md'}, {out / 'results.json'}, {plot(out, args.only, args.seeds)}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
