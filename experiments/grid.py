"""
Run a grid of training runs (variants x seeds) and their held-out evaluations, resumably, keeping the small outputs.

    python experiments/grid.py --grid diagnosis --parallel 2 --threads 1          # why RTT lost the pilot (README)
    python experiments/grid.py --grid diagnosis --only rtt rtt-eos-exclude --seeds 42
    python experiments/grid.py --grid diagnosis --dry-run                         # print the commands, run nothing
    python experiments/report.py results/diagnosis                                # tables and figures, from files only

    python experiments/grid.py --grid short --parallel 2 --threads 1              # 5 variants x 3 seeds, + IFEval
    python experiments/grid.py --grid short --skip-extra                          # this sitting: held-out only

Every run is `python train.py` with the grid's shared settings plus its variant's flags; every policy (the base model
and each run's final checkpoint) is scored greedily with `evaluate.py --bench heldout` on the grid's held-out file,
and with `evaluate.py --bench B` for each of the grid's extra benchmarks (IFEval for `short`; `--skip-extra` leaves
them for a later sitting). A run that stopped continues from its checkpoint (`--resume`), finished runs and
evaluations are skipped (those whose small outputs are in results/GRID count as finished even where runs/ is gone),
so the grid can be run in several sittings, on several machines. As soon as a run or an evaluation finishes, its
small outputs are copied to results/GRID/ (metrics.jsonl, config.json, and per evaluation its metrics.json and
per-prompt verdicts.jsonl: results/GRID/LABEL/eval/ for the held-out file, results/GRID/LABEL/eval-B/ for benchmark
B), which is what gets committed; checkpoints stay under runs/ and are never committed. An extra benchmark of a run
that was trained on another machine needs its checkpoint: run that evaluation where runs/ has it.

Grids (GRIDS below; a key a grid leaves out takes its value from GRID_DEFAULTS):
  diagnosis   the pilot where RTT lost to the base model: prompts whose constraints can be met in 64 new tokens
              (the "short64" filter), 20 steps, lr 1e-5, P=2, G=8; RTT as specified and the ablations that test
              each hypothesis (EOS relevance 0 / excluded, random relevance, lambda, RTT on a CSR reward). No
              evaluation during training, no extra benchmark, seeds 42 1.
  short       the comparison that decides something: data/train-short.jsonl and data/heldout-short.jsonl (300
              prompts), built so that every constraint can be met in 64 new tokens (no filter: "all"); 40 steps,
              lr 1e-5, P=2, G=8; GRPO on the all-met reward (the reference) and on CSR, RTT, and RTT with random
              relevance (does the token term carry information?), then RTT with the paper's credit on every token
              (added once RTT's default, relevant-only credit, was seen to degenerate into repeated marker tokens);
              seeds 42 1 2. train.py scores the first 64
              held-out prompts greedily at steps 0, 10, 20, 30, 40 (the "eval" rows of metrics.jsonl, drawn as
              learning curves by report.py), and every policy is also scored on IFEval (541 prompts, greedy, the
              same 64-token cap).
"""
import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
from variants import final_checkpoint, run  # noqa: E402  (one way to run a job and find its last checkpoint)


def short64(row: dict) -> bool:
    """Prompts whose every constraint can be met inside 64 new tokens (about 45 words): no word-count ranges, no
    paragraph counts, no "at least N words / sentences"."""
    for item in row["rubrics"]:
        checker = item.get("checker") or {}
        iid, kwargs = checker.get("instruction_id"), checker.get("kwargs") or {}
        if iid in ("count:word_count_range", "length_constraints:number_paragraphs"):
            return False
        if iid in ("length_constraints:number_words", "length_constraints:number_sentences") \
                and kwargs.get("relation") == "at least":
            return False
    return True


def every_row(row: dict) -> bool:
    """No filter: for data built to fit the grid (the `short` grid's files); the filtered copy is then the file."""
    return True


FILTERS = {"short64": short64, "all": every_row}
RTT = ["--algo", "rtt", "--norm", "intra"]
RTT_PAPER = RTT + ["--token-credit", "all"]   # the paper's credit, every token: train.py's default until the diagnosis
HELDOUT = "{heldout}"   # in a grid's train_eval_flags: the filtered copy of its held-out file (runs/GRID/data/)
# What a grid definition holds:
#   filter           a FILTERS key; the train and held-out files are filtered into runs/GRID/data/
#   train, heldout   rubric JSONL files (data.py format), relative to the repository root
#   eval_tokens      new-token cap of every evaluation (evaluate.py --max-new-tokens)
#   train_flags      train.py flags shared by every variant
#   train_eval_flags train.py's evaluation during training (placed right after --train-data); HELDOUT stands for
#                    the filtered held-out copy
#   variants         name -> train.py flags, in the order they are run
#   seeds            default of --seeds
#   extra_benches    evaluate.py --bench names every policy is scored on besides the held-out file
GRID_DEFAULTS = {"train_eval_flags": ["--eval-prompts", "0"], "seeds": [42, 1], "extra_benches": []}
GRIDS = {
    "diagnosis": {
        "filter": "short64", "train": "data/train.jsonl", "heldout": "data/heldout.jsonl", "eval_tokens": 64,
        "train_flags": ["--steps", "20", "--lr", "1e-5", "--prompts-per-step", "2", "--group-size", "8",
                        "--max-new-tokens", "64"],
        "train_eval_flags": ["--eval-prompts", "0"], "seeds": [42, 1], "extra_benches": [],
        "variants": {  # in the order they are run: the comparison first, then the ablations
            "grpo-aon": ["--algo", "grpo", "--union", "aon"],
            "rtt": RTT_PAPER,
            "rtt-eos-exclude": RTT_PAPER + ["--eos-relevance", "exclude"],
            "rtt-eos-zero": RTT_PAPER + ["--eos-relevance", "zero"],
            "rtt-random": RTT_PAPER + ["--relevance", "random"],
            "rtt-lambda0.1": RTT_PAPER + ["--token-weight", "0.1"],
            "rtt-csr": RTT_PAPER + ["--union", "csr"],
            "grpo-csr": ["--algo", "grpo", "--union", "csr"],
            "rtt-lambda0.25": RTT_PAPER + ["--token-weight", "0.25"],
            "rtt-credit-relevant": RTT + ["--token-credit", "relevant"],   # the remedy: no push on irrelevant tokens
        },
    },
    "short": {
        "filter": "all", "train": "data/train-short.jsonl", "heldout": "data/heldout-short.jsonl", "eval_tokens": 64,
        "train_flags": ["--steps", "40", "--lr", "1e-5", "--prompts-per-step", "2", "--group-size", "8",
                        "--max-new-tokens", "64"],
        "train_eval_flags": ["--eval-every", "10", "--eval-prompts", "64", "--eval-data", HELDOUT],
        "variants": {
            "grpo-aon": ["--algo", "grpo", "--union", "aon"],
            "grpo-csr": ["--algo", "grpo", "--union", "csr"],
            "rtt": RTT,
            "rtt-random": RTT + ["--relevance", "random"],
            "rtt-credit-all": RTT_PAPER,   # added after the first 8 runs: does the paper's credit degenerate too?
        },
        "seeds": [42, 1, 2],
        "extra_benches": ["ifeval"],
    },
}


def grid_setting(name: str) -> dict:
    """The definition of grid `name`, with GRID_DEFAULTS for the keys it leaves out."""
    return {**GRID_DEFAULTS, **GRIDS[name]}


def eval_folder(bench: str) -> str:
    """Where a policy's evaluation on `bench` goes, inside its results/GRID/LABEL/ (and runs/GRID/) folder:
    eval/ for the grid's held-out file (as the diagnosis grid was committed), eval-B/ for benchmark B."""
    return "eval" if bench == "heldout" else f"eval-{bench}"


def filtered_copy(src: Path, keep, dst: Path) -> Path:
    """The rows of src for which keep(row) holds, written to dst (deterministic, same order)."""
    lines = [l for l in src.read_text().splitlines() if l.strip()]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(l + "\n" for l in lines if keep(json.loads(l))))
    return dst


def finished(run_dir: Path, steps: int) -> bool:
    """Done when its metrics hold `steps` training rows and a checkpoint exists."""
    metrics = run_dir / "metrics.jsonl"
    if not (metrics.exists() and final_checkpoint(run_dir)):
        return False
    return sum('"kind": "train"' in line for line in metrics.read_text().splitlines()) >= steps


def keep_small_outputs(src: Path, dst: Path, names: tuple) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", choices=sorted(GRIDS), required=True, help="which grid (see above)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="training seeds (default: the grid's, 42 1 for diagnosis, 42 1 2 for short; paper: 42)")
    ap.add_argument("--only", nargs="+", default=None, help="variants to run (default: all of the grid)")
    ap.add_argument("--model", default="smollm2-135m", help="policy for every variant")
    ap.add_argument("--runs", default="runs", help="where run folders and checkpoints go (never committed)")
    ap.add_argument("--results", default="results", help="where the small outputs go (committed)")
    ap.add_argument("--parallel", type=int, default=1, help="jobs at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job")
    ap.add_argument("--skip-extra", action="store_true",
                    help="leave out the grid's extra benchmarks (IFEval) in this sitting; a later one adds them")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = ap.parse_args(argv)
    grid = grid_setting(args.grid)
    names = args.only or list(grid["variants"])
    unknown = sorted(set(names) - set(grid["variants"]))
    if unknown:
        raise SystemExit(f"error: --only {' '.join(unknown)}: not in grid {args.grid} ({', '.join(grid['variants'])})")
    runs, results = ROOT / args.runs / args.grid, ROOT / args.results / args.grid
    keep = FILTERS[grid["filter"]]
    train_data = runs / "data" / f"train-{grid['filter']}.jsonl"
    heldout = runs / "data" / f"heldout-{grid['filter']}.jsonl"
    py, threads = sys.executable, ["--threads", str(args.threads)]
    train_eval_flags = [str(heldout) if flag == HELDOUT else flag for flag in grid["train_eval_flags"]]
    extra_benches = [] if args.skip_extra else grid["extra_benches"]

    jobs = []  # (label, run folder, command); seeds outer, so every variant gets its first seed early
    for seed in args.seeds or grid["seeds"]:
        for name in names:
            run_dir = runs / f"{name}-seed{seed}"
            cmd = [py, "train.py", "--model", args.model, "--train-data", str(train_data), *train_eval_flags,
                   *grid["train_flags"], *grid["variants"][name], "--seed", str(seed), "--out", str(run_dir),
                   "--no-progress", *threads]
            jobs.append((f"{name}-seed{seed}", run_dir, cmd))

    def eval_cmd(model, out, bench="heldout"):
        data = ["--data", str(heldout)] if bench == "heldout" else []   # other benchmarks: evaluate.py's own file
        return [py, "evaluate.py", "--model", str(model), "--bench", bench, *data,
                "--max-new-tokens", str(grid["eval_tokens"]), "--out", str(out), *threads]

    def shown(cmd):
        """A command as report.md shows it: `python`, paths relative to the repository root."""
        return " ".join(["python", *map(str, cmd[1:])]).replace(str(ROOT) + "/", "")

    commands = {label: shown(cmd) for label, _, cmd in jobs}
    if args.dry_run:
        print("\n".join(commands.values()))
        return
    filtered_copy(ROOT / grid["train"], keep, train_data)
    filtered_copy(ROOT / grid["heldout"], keep, heldout)
    results.mkdir(parents=True, exist_ok=True)
    described = results / "grid.json"   # several sittings (or two processes with --only) add to one description
    before = json.loads(described.read_text()) if described.exists() else {}
    base_commands = {"base": shown(eval_cmd(args.model, "OUT")),   # and "base-ifeval": the same, on IFEval
                     **{f"base-{b}": shown(eval_cmd(args.model, "OUT", b)) for b in grid["extra_benches"]}}
    described.write_text(json.dumps(
        {"grid": args.grid, "model": args.model, "variants": grid["variants"],
         "train_flags": grid["train_flags"], "filter": grid["filter"], "eval_tokens": grid["eval_tokens"],
         "train_prompts": sum(1 for _ in open(train_data)), "heldout_prompts": sum(1 for _ in open(heldout)),
         "commands": {**before.get("commands", {}), **commands, **base_commands}}, indent=1) + "\n")
    steps = int(grid["train_flags"][grid["train_flags"].index("--steps") + 1])

    def evaluated(label, bench="heldout"):
        """Its evaluation on `bench` finished in an earlier sitting (maybe elsewhere): in the results folder."""
        return (results / label / eval_folder(bench) / "metrics.json").exists()

    def committed(label):
        """Trained and evaluated on the held-out file in an earlier sitting: its small outputs are in results/."""
        metrics = results / label / "metrics.jsonl"
        return evaluated(label) and metrics.exists() and \
            sum('"kind": "train"' in l for l in metrics.read_text().splitlines()) >= steps

    def evaluate(label, model, bench="heldout"):
        if evaluated(label, bench):
            return
        folder = eval_folder(bench)
        out = runs / folder / label
        if not (out / "metrics.json").exists():
            sec = run(eval_cmd(model, out, bench), runs / f"{label}.{folder}.log")
            m = json.loads((out / "metrics.json").read_text())
            print(f"[grid] {folder} {label}: all met {100 * m['prompt_level_strict_acc']:.1f} %, constraints met "
                  f"{100 * m['inst_level_strict_acc']:.1f} % ({sec / 60:.1f} min)", flush=True)
        keep_small_outputs(out, results / label / folder, ("metrics.json", "verdicts.jsonl"))

    def train_and_evaluate(job):
        label, run_dir, cmd = job
        missing = [b for b in extra_benches if not evaluated(label, b)]
        if committed(label):
            if not missing:
                print(f"[grid] {label}: done (results/{args.grid}/{label})", flush=True)
                return
            if not finished(run_dir, steps):   # trained elsewhere: retraining would replace its committed outputs
                print(f"[grid] {label}: trained, but {' '.join(missing)} needs its checkpoint, which is not under "
                      f"{run_dir}: run this grid where it was trained", flush=True)
                return
        else:
            if not finished(run_dir, steps):
                # a checkpoint: continue from it; none (killed before the first one): start that run again
                cmd = [*cmd, "--resume", str(run_dir)] if final_checkpoint(run_dir) else [*cmd, "--overwrite"]
                print(f"[grid] {label}: training ...", flush=True)
                sec = run(cmd, runs / f"{label}.train.log")
                print(f"[grid] {label}: trained in {sec / 60:.1f} min", flush=True)
            keep_small_outputs(run_dir, results / label, ("metrics.jsonl", "config.json"))
        for bench in ("heldout", *missing):
            evaluate(label, final_checkpoint(run_dir), bench)

    with ThreadPoolExecutor(args.parallel) as pool:   # the base model's extra benchmarks last: the runs come first
        futures = [pool.submit(evaluate, "base", args.model)] + [pool.submit(train_and_evaluate, j) for j in jobs] \
            + [pool.submit(evaluate, "base", args.model, b) for b in extra_benches]
        for f in futures:
            f.result()
    print(f"[grid] done; small outputs in {results}; tables: python experiments/report.py {results}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
