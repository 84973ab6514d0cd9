"""
Benchmark: how long a training step takes, phase by phase, and how much memory it needs.

Runs a few steps of train.py with a fixed configuration (no held-out eval, no checkpoints but the last), then
prints, as JSON and as a table, the mean time per phase over the measured steps (the first step is a warm-up and is
left out when there are more), new tokens/s, peak memory (RSS on CPU, max_memory_allocated on GPU), and each phase's
share of the step. It checks the target of the project: judge + discriminator <= 15 % of the step time.

    python bench.py                              # the embedded default on CPU (P=2, G=8, 64 new tokens)
    python bench.py --config qwen1.5b-gpu        # Qwen2.5-1.5B-Instruct on one GPU (P=8, G=8, 1024 new tokens)
    python bench.py --steps 5 -- --max-new-tokens 256     # anything after -- goes to train.py as is
"""
import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

CONFIGS = {
    "cpu-default": ["--model", "smollm2-135m", "--prompts-per-step", "2", "--group-size", "8",
                    "--max-new-tokens", "64", "--device", "cpu"],  # = what `python train.py` runs on a CPU
    "qwen1.5b-gpu": ["--model", "Qwen2.5-1.5B", "--prompts-per-step", "8", "--group-size", "8",
                     "--max-new-tokens", "1024", "--micro-batch-tokens", "32768"],
}
PHASES = ["t_generate", "t_judge", "t_discriminator", "t_logprobs", "t_update"]
TARGET_JUDGE_DISC_SHARE = 0.15


def summarise(rows: list) -> dict:
    """Mean of each phase over the measured steps, each phase's share, tokens/s and peak memory."""
    measured = rows[1:] if len(rows) > 1 else rows
    n = len(measured)
    phases = {k: sum(r[k] for r in measured) / n for k in PHASES}
    step = sum(r["step_seconds"] for r in measured) / n
    out = {"steps_measured": n, "step_seconds": step, **phases,
           "share": {k: phases[k] / step for k in PHASES},
           "new_tokens_per_s": sum(r["new_tokens_per_s"] for r in measured) / n,
           "response_len": sum(r["response_len"] for r in measured) / n,
           "peak_mem_gb": max(r["peak_mem_gb"] for r in rows)}
    out["judge_plus_discriminator_share"] = out["share"]["t_judge"] + out["share"]["t_discriminator"]
    out["target_met"] = out["judge_plus_discriminator_share"] <= TARGET_JUDGE_DISC_SHARE
    return out


def table(s: dict) -> str:
    lines = ["| phase | seconds / step | share |", "|---|---:|---:|"]
    for k in PHASES:
        lines.append(f"| {k[2:]} | {s[k]:.2f} | {100 * s['share'][k]:.1f} % |")
    lines.append(f"| **step** | **{s['step_seconds']:.2f}** | 100 % |")
    lines.append("")
    lines.append(f"new tokens/s (generation): {s['new_tokens_per_s']:.0f} | mean response length: "
                 f"{s['response_len']:.0f} tokens | peak memory: {s['peak_mem_gb']:.2f} GiB | judge + discriminator: "
                 f"{100 * s['judge_plus_discriminator_share']:.1f} % of the step (target <= "
                 f"{100 * TARGET_JUDGE_DISC_SHARE:.0f} %: {'met' if s['target_met'] else 'NOT met'})")
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu-default")
    p.add_argument("--steps", type=int, default=3, help="training steps to run (the first is a warm-up)")
    p.add_argument("--json", default=None, help="also write the summary to this file")
    args = p.parse_args(argv)
    import train
    with tempfile.TemporaryDirectory() as tmp:
        train.main([*CONFIGS[args.config], "--steps", str(args.steps), "--eval-prompts", "0",
                    "--save-every", str(10**9), "--keep-checkpoints", "0", "--out", tmp, "--no-progress", *extra])
        rows = [json.loads(l) for l in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("kind") == "train"]
    s = summarise(rows)
    s["config"] = args.config
    s["argv"] = CONFIGS[args.config] + extra
    s["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(json.dumps(s, indent=2))
    print(table(s))
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["trl"]:  # python bench.py trl [...]: the same step on TRL's GRPOTrainer, side by side
        from scale import bench_trl
        sys.exit(bench_trl.main(sys.argv[2:]))
    main()
