"""
What a training run writes about itself: one `metrics.jsonl` row per step (rewards, pass rates, advantages, the
update's statistics, timings, where the token term pushes), the greedy held-out evaluation, the progress line, and
the PNG curves drawn from metrics.jsonl alone (`python train.py --plot RUN`).
"""
import json
import resource
import time
from pathlib import Path

import torch

import advantages as adv
from data import item_family
from rollout import generate_rollout
from support import diagnostics


class MetricsFile:
    """metrics.jsonl of a run, appended to and flushed row by row (a kill loses at most the row being written)."""

    def __init__(self, path: Path):
        self.file = open(path, "a")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def family_pass_rates(prompts: list, prompt_index: list, scores: torch.Tensor) -> dict:
    """Pass rate per constraint family (data.item_family) over one step's verdicts. scores [B, K]."""
    met, seen = {}, {}
    for b, p in enumerate(prompt_index):
        for k, item in enumerate(prompts[p].rubrics):
            fam = item_family(item)
            seen[fam] = seen.get(fam, 0) + 1
            met[fam] = met.get(fam, 0) + int(scores[b, k] > 0)
    return {fam: met[fam] / seen[fam] for fam in sorted(seen)}


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


@torch.no_grad()
def train_row(step: int, args, rollout, prompts: list, prompt_index: list, scores, rewards, advantage, token_adv,
              update: dict, lr: float, times: dict, t_step: float, device, update_skipped: bool, judge_stats: dict,
              relevance=None, parts=None, stop_tokens=None) -> dict:
    """The metrics row of one step. scores [B, K], rewards [P, G], advantage / token_adv / stop_tokens [B, T],
    relevance [P, G, K, T] (None for GRPO), parts: advantages.rtt_advantages' second output."""
    mask = rollout.response_mask                                                            # [B, T]
    G, (B, T), K = args.group_size, mask.shape, scores.shape[1]
    row = {"kind": "train", "step": step + 1, "reward": float(rewards.mean()),
           "aon_pass": float(adv.response_rewards(scores, "aon").mean()),
           "csr_pass": float(adv.response_rewards(scores, "csr").mean()),
           "zero_var_groups": float((rewards.std(-1) == 0).float().mean()) if G > 1 else 1.0,
           "tok_adv_abs": float((token_adv.abs() * mask).sum() / mask.sum().clamp(min=1)),
           "tok_adv_nonzero": float(((token_adv != 0) & (mask > 0)).sum() / mask.sum()),
           "adv_mean": float((advantage * mask).sum() / mask.sum()),
           "response_len": float(mask.sum(-1).float().mean()),
           "truncated": float(rollout.truncated.float().mean()),
           "repetitive": diagnostics.repetitive_share(rollout.texts),
           **update, "lr": lr, "new_tokens_per_s": rollout.tokens_per_second,
           **{k: round(v, 3) for k, v in times.items()}, "step_seconds": time.perf_counter() - t_step,
           "peak_mem_gb": peak_memory_gb(device), "skipped_prompts": len(rollout.skipped),
           "update_skipped": update_skipped,
           "judge": {k: v for k, v in judge_stats.items() if isinstance(v, (int, float))},
           "family_pass": family_pass_rates(prompts, prompt_index, scores)}
    if relevance is not None:
        row["relevance_mean"] = float((relevance.reshape(-1, K, T).sum(1) * mask).sum() / (mask.sum() * K))
    if args.algo == "grpo":
        row["res_adv_abs"] = float((advantage.abs() * mask).sum() / mask.sum().clamp(min=1))
    if args.algo == "rtt":  # where the token term pushes: EOS, last tokens, per family (support/diagnostics.py)
        P = B // G
        families = [[item_family(item) for item in p.rubrics] for p in prompts]
        seen = mask.bool() & ~stop_tokens if args.eos_relevance == "exclude" else None      # [B, T]
        row.update(diagnostics.token_advantage_stats(
            parts, mask.view(P, G, T), stop_tokens.view(P, G, T), scores.view(P, G, K), families,
            args.token_weight, args.token_std_floor, None if seen is None else seen.view(P, G, T)))
    return row


def progress_line(row: dict, steps: int, times: dict) -> str:
    """The line printed per step with --no-progress."""
    return (f"step {row['step']}/{steps} reward {row['reward']:.3f} aon {row['aon_pass']:.2f} "
            f"csr {row['csr_pass']:.2f} zero-var groups {row['zero_var_groups']:.2f} "
            f"|A_tok| {row['tok_adv_abs']:.3f} clip {row['clip_frac']:.3f} "
            f"({', '.join(f'{k[2:]} {v:.1f}s' for k, v in times.items())})"
            + (" | every advantage 0: no update" if row["update_skipped"] else ""))


@torch.no_grad()
def evaluate_heldout(model, tokenizer, judge, prompts, args) -> dict:
    """Greedy responses to the held-out prompts; share with all constraints met, share of constraints met, and share
    of responses repeating one word 8+ times in a row (support/diagnostics.py)."""
    r = generate_rollout(model, tokenizer, [p.messages for p in prompts], group_size=1,
                         max_new_tokens=args.max_new_tokens, temperature=0, max_prompt_tokens=args.max_prompt_tokens)
    scores, _ = judge.score(prompts, r.texts, r.prompt_index)                          # [B, K]
    return {"eval_aon": float(adv.response_rewards(scores, "aon").mean()),
            "eval_csr": float(adv.response_rewards(scores, "csr").mean()), "eval_n": len(r.texts),
            "eval_repetitive": diagnostics.repetitive_share(r.texts)}


def heldout_eval(run, metrics: MetricsFile, step: int, say: str | None = None) -> dict:
    """Evaluate the policy of a train.py run on its held-out prompts, write the row, and say it if asked."""
    with run.amp:
        ev = evaluate_heldout(run.model, run.tokenizer, run.judge, run.eval_prompts, run.args)
    metrics.write({"kind": "eval", "step": step, **ev})
    if say:
        print(f"[train] held-out {say}: all constraints met {ev['eval_aon']:.3f}, constraints met "
              f"{ev['eval_csr']:.3f}, repetitive responses {ev['eval_repetitive']:.3f}", flush=True)
    return ev


def run_banner(args, device, start_step: int, out: Path) -> str:
    """The line a run starts with: policy, algorithm and its knobs, sizes, folder."""
    rtt = (f" norm {args.norm} combine {args.combine} lambda {args.token_weight} relevance {args.relevance}"
           f" eos {args.eos_relevance} std-floor {args.token_std_floor} credit {args.token_credit}"
           + (" reference-quirks" if args.reference_quirks else ""))
    return (f"policy {args.model} on {device} | algo {args.algo} union {args.union}"
            + (rtt if args.algo == "rtt" else "")
            + f" | P={args.prompts_per_step} G={args.group_size} steps {start_step}->{args.steps} | run folder {out}")


PLOTS = [("reward", "mean response reward"), ("aon_pass", "AON pass rate (all constraints met)"),
         ("csr_pass", "CSR (share of constraints met)"), ("zero_var_groups", "groups with zero reward variance"),
         ("tok_adv_abs", "mean |token advantage|"), ("entropy", "policy entropy"), ("clip_frac", "clip fraction"),
         ("response_len", "response length (tokens)"), ("repetitive", "samples repeating one word 8+ times"),
         ("step_seconds", "seconds per step")]


def plot_run(out: Path) -> Path:
    """Draw the training curves of a run folder from metrics.jsonl into curves.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    fig, axes = plt.subplots(2, 6, figsize=(24, 7))                 # the PLOTS, then the held-out panel
    for ax, (key, title) in zip(axes.flat, PLOTS):
        xs = [r["step"] for r in train if key in r]
        ax.plot(xs, [r[key] for r in train if key in r], marker=".")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(PLOTS) + 1:]:
        ax.axis("off")
    ax = axes.flat[len(PLOTS)]
    for key, label in [("eval_aon", "all constraints met"), ("eval_csr", "constraints met"),
                       ("eval_repetitive", "repetitive responses")]:
        shown = [r for r in evals if key in r]                      # runs from before a figure existed lack it
        ax.plot([r["step"] for r in shown], [r[key] for r in shown], marker="o", label=label)
    ax.set_title("held-out (greedy)", fontsize=10)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(f"{out.name}", fontsize=12)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
