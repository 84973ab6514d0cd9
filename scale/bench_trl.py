"""
Benchmark: one RL step of train.py next to the same step on TRL's GRPOTrainer (scale/trl_rtt.py), same prompts,
same shapes, same judge and discriminator; time per phase, step time and peak memory, side by side.

    python scale/bench_trl.py --threads 1                  # CPU: SmolLM2-135M, P=2, G=4, 32 new tokens, 2 steps each
    python scale/bench_trl.py --model Qwen2.5-1.5B --discriminator runs/disc-qwen --prompts-per-step 8 \
        --group-size 8 --max-new-tokens 1024               # one GPU
    python bench.py trl ...                                # the same, from bench.py

Each path runs in its own process (so each peak memory is its own: RSS on CPU, max_memory_allocated on GPU) for
--steps RL steps; the first is a warm-up and is left out when there are more. Identical prompts: TRL gets, in order
and unshuffled, exactly the prompts train.py draws for those steps (support/prompt_order.batch_of_prompts). Without
--discriminator, a stand-in is built once: the policy's discriminator backbone cut to 12 layers, as
`discriminator.py ensure` builds it, with an untrained head; its time is that of a real one, its output is not.

Phases on TRL's side: generate (TRL's `_generate`), judge (the reward function), discriminator (relevance and the
[B, T] advantages), logprobs (the rest of TRL's scoring: mostly the no-grad pass for the old log-probs), update
(the step minus those: the mini-batches' forward and backward, optimizer steps).
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHASES = ["t_generate", "t_judge", "t_discriminator", "t_logprobs", "t_update"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="policy (alias, hub id or folder)")
    p.add_argument("--discriminator", default=None, help="discriminator folder (default: a 12-layer stand-in)")
    p.add_argument("--prompts-per-step", type=int, default=2, help="P")
    p.add_argument("--group-size", type=int, default=4, help="G")
    p.add_argument("--max-new-tokens", type=int, default=32, help="response length limit")
    p.add_argument("--mini-batches", type=int, default=2, help="optimizer steps per rollout")
    p.add_argument("--steps", type=int, default=2, help="RL steps per path (the first is a warm-up)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--path", choices=["both", "ours", "trl"], default="both", help="which step to time")
    p.add_argument("--json", default=None, help="write the result here (JSON)")
    return p.parse_args(argv)


def common_flags(args, disc: str, out: str) -> list:
    """The flags both paths read, with train.py's names."""
    return ["--model", args.model, "--discriminator", disc, "--prompts-per-step", str(args.prompts_per_step),
            "--group-size", str(args.group_size), "--max-new-tokens", str(args.max_new_tokens),
            "--mini-batches", str(args.mini_batches), "--steps", str(args.steps), "--threads", str(args.threads),
            "--lr", "1e-6", "--seed", "42", "--out", out]


def stand_in_discriminator(policy: str, folder: Path) -> str:
    """The policy's discriminator backbone cut to 12 layers, head untrained but marked trained (timing only)."""
    import discriminator as disc_lib
    from support import discriminator_backbone, models
    if not (folder / "config.json").exists():
        backbone = models.DEFAULT_DISCRIMINATOR_BACKBONE.get(policy, policy)
        model = discriminator_backbone.keep_bottom_layers(models.load_token_classifier(backbone, device="cpu",
                                                                                      dtype=torch.float32), 12)
        disc_lib.save_discriminator(model, models.load_tokenizer(backbone), folder)
    return str(folder)


def measured(rows: list) -> list:
    return rows[1:] if len(rows) > 1 else rows


def run_ours(args, disc: str, out: str) -> dict:
    """train.py's step, as bench.py runs it."""
    import train
    from support.train_metrics import peak_memory_gb
    train.main([*common_flags(args, disc, out), "--eval-prompts", "0", "--save-every", str(10**9),
                "--keep-checkpoints", "0", "--no-progress"])
    rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    rows = measured([r for r in rows if r.get("kind") == "train"])
    res = {k: sum(r[k] for r in rows) / len(rows) for k in PHASES + ["step_seconds"]}
    res["peak_mem_gb"] = peak_memory_gb(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return res


def run_trl(args, disc: str, out: str) -> dict:
    """The same step on RTTGRPOTrainer: the prompts train.py draws, in its order, shuffling off."""
    from datasets import Dataset
    from transformers import TrainerCallback

    from data import load_rubric_jsonl
    from judge import Judge
    from scale import trl_rtt
    from support import models
    from support.prompt_order import batch_of_prompts
    from support.train_metrics import peak_memory_gb
    targs = trl_rtt.parse_args(common_flags(args, disc, out) + ["--save-every", str(10**6)])
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = load_rubric_jsonl(targs.train_data, max_constraints=targs.max_constraints)
    drawn = [p for s in range(args.steps) for p in batch_of_prompts(prompts, s, args.prompts_per_step, 42)]
    dataset = Dataset.from_list([{"prompt": p.messages, "prompt_id": i} for i, p in enumerate(drawn)])
    tokenizer = models.load_tokenizer(args.model)
    config = trl_rtt.grpo_config(targs, 1)
    config.shuffle_dataset, config.save_strategy, config.disable_tqdm = False, "no", True

    class StepClock(TrainerCallback):  # wall time at the end of every optimizer step
        def __init__(self):
            self.ends = []

        def on_train_begin(self, *a, **k):
            self.ends.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.ends.append(time.perf_counter())

    clock = StepClock()
    trainer = trl_rtt.RTTGRPOTrainer(
        model=models.resolve(args.model)[0], args=config, train_dataset=dataset, processing_class=tokenizer,
        rubric_prompts=drawn, judge=Judge(), discriminator=trl_rtt.load_checked_discriminator(disc, tokenizer),
        callbacks=[clock], relevance_seed=42)
    trainer.train()
    per_rl_step = [clock.ends[(s + 1) * args.mini_batches] - clock.ends[s * args.mini_batches]
                   for s in range(args.steps)]
    rows = [{**phases, "step_seconds": step} for phases, step in zip(trainer.phase_seconds, per_rl_step)]
    for r in rows:
        r["t_update"] = r["step_seconds"] - sum(r[k] for k in PHASES[:-1])
    rows = measured(rows)
    res = {k: sum(r[k] for r in rows) / len(rows) for k in PHASES + ["step_seconds"]}
    res["peak_mem_gb"] = peak_memory_gb(trainer.accelerator.device)
    return res


def table(ours: dict, trl: dict) -> str:
    lines = ["| phase | train.py s / step | TRL s / step |", "|---|---:|---:|"]
    for k in PHASES:
        lines.append(f"| {k[2:]} | {ours[k]:.2f} | {trl[k]:.2f} |")
    lines.append(f"| **step** | **{ours['step_seconds']:.2f}** | **{trl['step_seconds']:.2f}** |")
    lines.append(f"| peak memory GiB | {ours['peak_mem_gb']:.2f} | {trl['peak_mem_gb']:.2f} |")
    return "\n".join(lines) + f"\n\nTRL step / train.py step: {trl['step_seconds'] / ours['step_seconds']:.2f}"


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        disc = args.discriminator or stand_in_discriminator(
            args.model, Path(tempfile.gettempdir()) / f"rtt-bench-disc-{Path(args.model).name}")
        if args.path != "both":     # one path in this process
            res = (run_ours if args.path == "ours" else run_trl)(args, disc, str(Path(tmp) / "run"))
            Path(args.json).write_text(json.dumps(res)) if args.json else print(json.dumps(res))
            return
        results = {}
        for path in ("ours", "trl"):  # each in its own process: its own peak memory
            cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--path", path,
                   "--discriminator", disc, "--json", str(Path(tmp) / f"{path}.json")]
            subprocess.run(cmd, cwd=ROOT, check=True)
            results[path] = json.loads((Path(tmp) / f"{path}.json").read_text())
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"CPU, {args.threads or torch.get_num_threads()} threads"
    summary = {"device": device, "argv": sys.argv[1:] if argv is None else argv, **results,
               "trl_over_ours": results["trl"]["step_seconds"] / results["ours"]["step_seconds"]}
    print(json.dumps(summary, indent=2))
    print(table(results["ours"], results["trl"]))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
