"""
RTT-GRPO training: rollout -> judge -> discriminator -> advantages -> PPO-clip update. One GPU, or a laptop CPU.

    python train.py                                  # the embedded SmolLM2-135M with RTT on the bundled data (CPU ok)
    python train.py --model Qwen2.5-1.5B             # one GPU, paper-like settings (see README for the recipe)
    python train.py --algo grpo --union csr          # response-level GRPO baseline with a CSR reward
    python train.py --resume runs/rtt                # continue exactly where a run stopped
    python train.py --plot runs/rtt                  # redraw the PNG curves of a run from its metrics.jsonl

One step, top to bottom in `main()` (spec sections in brackets):
  1. take P prompts, sample G responses each (rollout.py)                                          [§2]
  2. judge every (response, constraint): scores [P, G, K] in {+1, -1, 0=padded slot} (judge.py)     [§7]
  3. response reward (AON or CSR) and GRPO advantage A_res [P, G]  (advantages.py)                   [§3]
  4. RTT only: relevance w [P, G, K, T] (discriminator.py), token rewards s*w, intra- (or inter-)
     sample normalisation, token advantage A_tok [P, G, T], combined A = A_res + lambda*A_tok       [§4-6]
  5. PPO-clip update, token-level ratio, clip-higher (0.2 / 0.27), seq-mean-token-mean,
     the rollout split into --mini-batches optimizer steps (2 in the reference)                   [§6]

How this departs from the released code (spec §10), and why:
  - the [G, K, T] cube is permuted, not reshaped, and relevance stays continuous: `--reference-quirks` brings
    both defects back for comparison;
  - the token normalisations floor sigma at 0.01 (`--token-std-floor`, advantages.py): a "whole response"
    constraint rated ~0.999 on every token gives ~0, as a constant row should, instead of discriminator noise
    blown up to full-size advantages; `--token-std-floor 0` is the formula as printed;
  - a step where every advantage is 0 (and --kl is 0) makes no optimizer step: the loss has no gradient, and AdamW
    would only replay the momentum of earlier steps (the learning-rate schedule still advances);
  - the response is located by position (prompt length), never by substring search;
  - old log-probs: the first mini-batch is the sampling policy itself, so its "old" log-probs are the detached
    log-probs of the same forward pass (ratio exactly 1) instead of a second identical forward pass; only the
    later mini-batches get a no-grad pass before the first optimizer step;
  - defaults sized to where the run happens (RUN_DEFAULTS): on a CPU the main job (discriminator + RL) must finish
    in under 30 minutes on 2 cores, so P=2, 64 new tokens, 5 steps, lr 1e-5; every paper value is in --help.
"""
import argparse
import contextlib
import json
import math
import os
import random
import re
import resource
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import advantages as adv
from support import diagnostics
from support import errors
from support import models
from rollout import add_sampling_args, generate_rollout

# -----------------------------------------------------------------------------
# CLI: every flag names the knob of the paper it is

# Defaults that depend on the device; a flag given on the command line always wins. On a CPU, `python train.py`
# (discriminator build + RL run + two held-out evaluations) has to finish in under 30 minutes on 2 cores: one step of
# P=4, 256 new tokens took 6.5 min there (update 3 min), so the CPU run is small; its lr is 10x the paper's because
# the run has only 10 optimizer steps (a choice, not a tuned value). The GPU values are a short version of the paper's.
RUN_DEFAULTS = {
    "cpu": dict(prompts_per_step=2, max_new_tokens=64, steps=5, lr=1e-5, eval_prompts=16, decay="cosine"),
    "cuda": dict(prompts_per_step=4, max_new_tokens=256, steps=10, lr=1e-6, eval_prompts=32, decay="linear"),
}


def fill_run_defaults(args, device_type: str):
    """Replace the flags left at None by RUN_DEFAULTS for this device (cpu, cuda; anything else counts as cpu)."""
    for k, v in RUN_DEFAULTS.get(device_type, RUN_DEFAULTS["cpu"]).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: x)" except where the default is None (those flags say in their help what they default to)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_HelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=models.DEFAULT_MODEL,
                   help=f"policy: alias ({', '.join(models.ALIASES)}), hub id, local folder or .gguf")
    g.add_argument("--train-data", default="data/train.jsonl", help="rubric prompts to train on (JSONL, README)")
    g.add_argument("--eval-data", default="data/heldout.jsonl", help="held-out rubric prompts for periodic eval")
    g.add_argument("--max-constraints", type=int, default=20, help="cap on rubric items per prompt (reference: 20)")
    g.add_argument("--out", default=None, help="run folder (default runs/<algo>-<norm>-seed<seed>)")
    g = p.add_argument_group("algorithm (paper knobs)")
    g.add_argument("--algo", choices=["rtt", "grpo"], default="rtt",
                   help="rtt: RTT-GRPO (response + token advantage); grpo: response-level GRPO only")
    g.add_argument("--union", choices=["aon", "csr"], default="aon",
                   help="response reward: all-or-nothing (paper default) or constraint satisfaction rate")
    g.add_argument("--norm", choices=["intra", "inter"], default="intra",
                   help="token group normalisation: intra-sample (RTT) or inter-sample (appendix D baseline)")
    g.add_argument("--combine", choices=["add", "mix"], default="add",
                   help="add: A_res + lambda*A_tok (released configs); mix: (1-lambda)*A_res + lambda*A_tok")
    g.add_argument("--token-weight", type=float, default=0.5, help="lambda, weight of the token advantage (paper: 0.5)")
    g.add_argument("--relevance", choices=["discriminator", "random", "uniform"], default="discriminator",
                   help="token relevance w: the trained discriminator, or an ablation (random positions with the "
                        "same count / every token relevant)")
    g.add_argument("--discriminator", default=None,
                   help="trained discriminator folder (default: built offline for the policy if missing)")
    g.add_argument("--reference-quirks", action="store_true",
                   help="reproduce the released code's defects: reshape(K,G,T) cube, {0,1}-truncated relevance, "
                        "EOS relevance 0 and no std floor (the last two unless --eos-relevance / --token-std-floor)")
    g.add_argument("--token-std-floor", type=float, default=None,
                   help=f"floor on sigma in the token normalisations (ours, not in the paper): a row whose sigma is "
                        f"below it is scaled by sigma/floor, so a 'whole response' constraint rated ~0.999 on every "
                        f"token gives ~0 instead of noise scaled to size 1; 0 = the paper's formula as printed "
                        f"(default {adv.TOKEN_STD_FLOOR}; 0 with --reference-quirks)")
    g.add_argument("--eos-relevance", choices=adv.EOS_MODES, default=None,
                   help="relevance of the stop token: as the discriminator rates it (ours), zero (the released "
                        "code: the stop token then takes about -sqrt(n-1)*s), or exclude it from the token advantage "
                        "(it keeps A_res) (default: discriminator; zero with --reference-quirks)")
    g.add_argument("--curriculum", choices=["none", "constraints"], default="none",
                   help="prompt order: none (the paper's: shuffled), or constraints: easy to hard over the number "
                        "of constraints, K <= 1 first, then <= 2, ... in equal stages (Conifer; not in the paper)")
    g.add_argument("--group-size", type=int, default=8, help="G, responses per prompt (paper: 8)")
    g.add_argument("--prompts-per-step", type=int, default=None,
                   help="P, prompts per step (paper: 64; default 2 on CPU, 4 on GPU)")
    add_sampling_args(p, max_new_tokens=None, max_new_tokens_help="default 64 on CPU, 256 on GPU")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=None, help="RL steps (paper: 500; default 5 on CPU, 10 on GPU)")
    g.add_argument("--lr", type=float, default=None,
                   help="AdamW learning rate (paper: 1e-6; default 1e-5 on CPU, where a run is 10 optimizer steps; "
                        "1e-6 on GPU)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (paper: 0)")
    g.add_argument("--warmup-steps", type=int, default=None,
                   help="linear warm-up, in optimizer steps (paper: 20 optimizer steps of its 1000, i.e. 10 of 500 "
                        "RL steps at 2 optimizer steps each; default 4%% of the run's optimizer steps, so that a "
                        "short run is not all warm-up)")
    g.add_argument("--decay", choices=["linear", "cosine", "constant"], default=None,
                   help="after warm-up: linear decay to 0 (paper: ROLL's default schedule), cosine decay to "
                        "0.1*lr, or constant (default linear on GPU, cosine on CPU, where the runs measured so far "
                        "used it)")
    g.add_argument("--mini-batches", type=int, default=2,
                   help="optimizer steps per rollout batch, one PPO epoch (reference: 2)")
    g.add_argument("--clip-low", type=float, default=0.2, help="PPO epsilon_low (paper: 0.2)")
    g.add_argument("--clip-high", type=float, default=0.27, help="PPO epsilon_high, clip-higher (paper: 0.27; Llama 0.2)")
    g.add_argument("--loss-agg", choices=["seq-mean-token-mean", "token-mean"], default="seq-mean-token-mean",
                   help="how token losses are averaged (reference: seq-mean-token-mean)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clipping (reference: 1.0)")
    g.add_argument("--kl", type=float, default=0.0,
                   help="KL penalty coefficient (paper: 0, no reference model); >0 loads a frozen reference")
    g.add_argument("--lora", type=int, default=0, help="LoRA rank (0 = full fine-tuning, the paper's setting; needs peft)")
    g.add_argument("--micro-batch-tokens", type=int, default=4096,
                   help="token budget per forward/backward micro-batch (memory knob, not an algorithm knob)")
    g.add_argument("--grad-checkpointing", choices=["auto", "on", "off"], default="auto",
                   help="activation checkpointing (auto: on for GPU, off for CPU where micro-batching is cheaper)")
    g.add_argument("--disc-batch-tokens", type=int, default=8192, help="token budget per discriminator forward")
    g = p.add_argument_group("judge")
    g.add_argument("--judge-model", default=None, help="local LLM judge for constraints without a rule checker")
    g.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint for the LLM judge (vLLM, ...)")
    g.add_argument("--judge-name", default="judge", help="model name sent to --judge-url")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=42, help="seed (paper: 42)")
    g.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    g.add_argument("--eval-every", type=int, default=0, help="held-out eval every N steps (0: only first and last)")
    g.add_argument("--eval-prompts", type=int, default=None,
                   help="held-out prompts per evaluation, greedy (default 16 on CPU, 32 on GPU)")
    g.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 is often faster on a CPU shared with other jobs)")
    g.add_argument("--save-every", type=int, default=5, help="checkpoint every N steps (and at the end)")
    g.add_argument("--keep-checkpoints", type=int, default=2,
                   help="checkpoints kept on disk (oldest deleted; 0 = keep all)")
    g.add_argument("--resume", default=None, help="run folder (or checkpoint folder) to continue exactly")
    g.add_argument("--plot", default=None, metavar="RUN", help="only redraw the PNG curves of RUN and exit")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    g.add_argument("--stop-after", type=int, default=None,
                   help="stop after N steps of this invocation, as if killed (to test --resume)")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run even if --out holds one (its checkpoints and metrics are deleted)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def given_flags(argv=None) -> set:
    """The settings the command line actually gave (dest names), as opposed to those left at their default."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


# On --resume every setting comes from the saved run. These may be given again with another value: they steer how
# the run is carried out (where, how fast, how long, what is printed and kept), not what a step computes.
# Those of PER_INVOCATION belong to one command, never to the run, and are not taken from the saved settings.
RESUME_MAY_CHANGE = {"out", "steps", "device", "threads", "no_progress", "save_every", "keep_checkpoints",
                     "eval_every", "eval_prompts", "eval_data", "micro_batch_tokens", "disc_batch_tokens",
                     "grad_checkpointing", "judge_url"}
PER_INVOCATION = {"resume", "stop_after", "overwrite", "plot"}


def settings_for_resume(args, saved: dict, given: set, where: str):
    """The settings of a resumed run: the saved run's, except flags given again that may change (RESUME_MAY_CHANGE).

    A flag given again with the saved value is fine; with another value it is refused, because it would change the
    algorithm, the data order or the shapes half-way through a run. Settings that did not exist when the run was
    saved take their current default.
    """
    merged = {**vars(args), **{k: v for k, v in saved.items() if k in vars(args) and k not in PER_INVOCATION}}
    for k in sorted(given):
        new, old = getattr(args, k), saved.get(k)
        if k == "steps" and new != old and (merged["decay"] != "constant" or merged["curriculum"] != "none"):
            raise errors.UsageError(f"--steps {new}: the run was planned for {old} steps, and its learning-rate "
                                    f"schedule (--decay {merged['decay']}) or curriculum (--curriculum "
                                    f"{merged['curriculum']}) depends on that length; only a run with --decay "
                                    "constant and --curriculum none can be extended")
        if k in RESUME_MAY_CHANGE or k in PER_INVOCATION or k not in saved:
            merged[k] = new
        elif new != old:
            flag = "--" + k.replace("_", "-")
            raise errors.UsageError(f"{flag} {new} contradicts the run being resumed ({where} has {flag} {old}); "
                             f"resume without {flag}, or start a new run")
    return argparse.Namespace(**merged)


# -----------------------------------------------------------------------------
# The policy-gradient math (pure functions on tensors)


class _TokenLogProbs(torch.autograd.Function):
    """log p(target) and entropy per row of `logits` [N, V] without a [N, V] float32 log-softmax kept for backward.

    Forward works through row chunks in float32 and keeps only the (bf16 / fp32) logits and the log-sum-exp [N];
    backward rebuilds softmax chunk by chunk: d logp / d logits = onehot(target) - softmax(logits).
    """

    @staticmethod
    def forward(ctx, logits, targets, chunk):
        N = logits.shape[0]
        lse = torch.empty(N, dtype=torch.float32, device=logits.device)       # [N]
        entropy = torch.empty(N, dtype=torch.float32, device=logits.device)   # [N]
        for s in range(0, N, chunk):
            x = logits[s:s + chunk].float()                                   # [n, V]
            lse[s:s + chunk] = torch.logsumexp(x, dim=-1)
            p = torch.exp(x - lse[s:s + chunk, None])
            entropy[s:s + chunk] = lse[s:s + chunk] - (p * x).sum(-1)
        logp = logits.gather(1, targets[:, None]).squeeze(1).float() - lse    # [N]
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk = chunk
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        logits, targets, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for s in range(0, logits.shape[0], ctx.chunk):
            g = -torch.exp(logits[s:s + ctx.chunk].float() - lse[s:s + ctx.chunk, None])  # -softmax, [n, V]
            g.scatter_add_(1, targets[s:s + ctx.chunk, None], torch.ones_like(g[:, :1]))
            grad[s:s + ctx.chunk] = (g * grad_logp[s:s + ctx.chunk, None]).to(logits.dtype)
        return grad, None, None


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple:
    """logits [..., V], targets [...] -> (log p(target) [...] float32, entropy [...] float32, no grad)."""
    V = logits.shape[-1]
    chunk = max(1, (64 * 2**20) // (4 * V))  # ~64 MB of float32 per chunk
    logp, ent = _TokenLogProbs.apply(logits.reshape(-1, V), targets.reshape(-1), chunk)
    return logp.view(targets.shape), ent.view(targets.shape)


def ppo_clip_loss(logp, old_logp, advantages, mask, clip_low=0.2, clip_high=0.27, agg="seq-mean-token-mean",
                  ref_logp=None, kl_coef=0.0):
    """PPO-clip policy loss with clip-higher, per token, then aggregated (spec §6).

        rho = exp(logp - old_logp)
        l   = -min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A)   (+ kl_coef * k3(ref, logp))
        seq-mean-token-mean:  mean over sequences of (mean over that sequence's tokens of l)
        token-mean:           sum of l over all tokens / number of tokens

    All inputs [B, T] (mask 1 on response tokens). Returns (loss, stats) where the loss is the *sum* of the
    aggregated parts divided by the whole mini-batch's count, so micro-batches add up: the caller passes in
    `mask` and divides by the mini-batch's number of sequences (or tokens) itself, see `aggregate_denominator`.

    Example (on-policy, so rho = 1 and the loss is -mean A):
        logp = old_logp = [[-1., -2.]], A = [[0.5, -1.5]], mask = [[1, 1]]  ->  loss sum = -(0.5 - 1.5)/2 = 0.5
    """
    mask = mask.float()
    ratio = torch.exp(logp - old_logp)                                                  # [B, T]
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * advantages
    per_token = -torch.minimum(unclipped, clipped)                                      # [B, T]
    kl = None
    if ref_logp is not None and kl_coef > 0:
        log_r = ref_logp - logp                                                         # k3 estimator, >= 0
        kl = torch.exp(log_r) - log_r - 1
        per_token = per_token + kl_coef * kl
    if agg == "seq-mean-token-mean":
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)                # [B]
        loss_sum = per_seq.sum()
    else:
        loss_sum = (per_token * mask).sum()
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        stats = {"clip_frac": float(((clipped < unclipped).float() * mask).sum() / n),
                 "ratio_mean": float((ratio * mask).sum() / n),
                 "kl": float((kl * mask).sum() / n) if kl is not None else 0.0}
    return loss_sum, stats


def aggregate_denominator(mask: torch.Tensor, agg: str) -> float:
    """What the summed loss of a mini-batch is divided by: its sequences, or its tokens."""
    return float(mask.shape[0]) if agg == "seq-mean-token-mean" else float(mask.sum().clamp(min=1))


# -----------------------------------------------------------------------------
# Policy forward on response positions only


def response_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask):
    """log p and entropy of each response token [B, T] from one forward over [prompt | response].

    Position ids come from the attention mask (left padding), exactly as `generate` computed them, so on-policy
    log-probs match the sampler's. Only the T+1 last positions go through the LM head (`logits_to_keep`): the
    prompt's logits are never computed.
    """
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)                             # [B, Tp + T]
    attn = torch.cat([prompt_mask, response_mask], dim=1)                               # [B, Tp + T]
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    T = response_ids.shape[1]
    logits = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids,
                   logits_to_keep=T + 1, use_cache=False).logits[:, :-1]               # [B, T, V]
    return token_logprobs(logits, response_ids)                                         # [B, T], [B, T]


def micro_batches(rows: list, lengths: list, budget: int) -> list:
    """Split row indices into consecutive groups whose padded size (rows x longest) stays within `budget` tokens."""
    out, cur, longest = [], [], 0
    for r in rows:
        new_longest = max(longest, lengths[r])
        if cur and new_longest * (len(cur) + 1) > budget:
            out.append(cur)
            cur, new_longest = [], lengths[r]
        cur.append(r)
        longest = new_longest
    if cur:
        out.append(cur)
    return out


def crop(rollout, rows: list) -> tuple:
    """The rows' tensors with the common padding cut off (left of prompts, right of responses)."""
    idx = torch.tensor(rows, device=rollout.prompt_ids.device)
    pm, rm = rollout.prompt_mask[idx], rollout.response_mask[idx]
    p0 = int((pm.sum(0) > 0).nonzero()[0]) if pm.any() else 0                            # first used prompt column
    t1 = int(rm.sum(-1).max())                                                          # longest response
    return rollout.prompt_ids[idx, p0:], pm[:, p0:], rollout.response_ids[idx, :t1], rm[:, :t1], t1


# -----------------------------------------------------------------------------
# Checkpoints, metrics, plots


def save_checkpoint(out: Path, step: int, model, tokenizer, optimizer, scheduler, args, keep: int) -> Path:
    """Write out/checkpoints/step_XXXXXX atomically: a temporary folder renamed at the end."""
    final = out / "checkpoints" / f"step_{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # full model; with --lora only the adapter (load it with peft on the base)
    tokenizer.save_pretrained(tmp)
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": get_rng_state(), "data_position": step * args.prompts_per_step, "args": run_settings(args)}
    torch.save(state, tmp / "trainer_state.pt")  # tensors, numbers, strings, lists, dicts: loads with weights_only
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (out / "checkpoints" / "latest").write_text(final.name)
    ckpts = sorted(p for p in (out / "checkpoints").glob("step_*") if not p.name.endswith(".tmp"))
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(path: str) -> Path:
    """The checkpoint to resume from: a checkpoint folder, or a run folder's `latest` (else its newest step folder)."""
    p = Path(path)
    if (p / "trainer_state.pt").exists():
        return p
    latest = p / "checkpoints" / "latest"
    if latest.exists() and (p / "checkpoints" / latest.read_text().strip() / "trainer_state.pt").exists():
        return p / "checkpoints" / latest.read_text().strip()
    steps = sorted(d for d in (p / "checkpoints").glob("step_*") if (d / "trainer_state.pt").exists()
                   and not d.name.endswith(".tmp"))
    if steps:  # `latest` missing or dangling (killed between the rename and its write): the newest complete one
        print(f"[train] {latest} does not name a checkpoint; resuming from the newest one, {steps[-1].name}")
        return steps[-1]
    raise errors.UsageError(f"--resume {path}: no checkpoint there (expected {p}/checkpoints/latest or a "
                     "checkpoint folder with trainer_state.pt)")


def load_trainer_state(ckpt: Path) -> dict:
    """A checkpoint's trainer state, loaded with weights_only=True: a file in a run folder never runs code."""
    path = ckpt / "trainer_state.pt"
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # pickle payloads, truncated or foreign files: refused, never executed
        raise errors.UsageError(f"cannot load {path} as a trainer state ({type(e).__name__}: {str(e)[:200]}); "
                         "it may be damaged or come from an older version: resume from another checkpoint folder")


def get_rng_state() -> dict:
    """Every RNG a step draws from, as tensors and plain lists (so that the state loads with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                   cached],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(rng: dict) -> None:
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def run_settings(args) -> dict:
    """What config.json and a checkpoint keep of the command line: the run's settings, not this command's."""
    return {k: v for k, v in vars(args).items() if k not in PER_INVOCATION}


def refuse_to_overwrite_a_run(out: Path, overwrite: bool) -> None:
    """A new run never mixes into an old one: a folder with checkpoints or metrics is resumed or, if asked, emptied."""
    holds_run = (out / "metrics.jsonl").exists() or any((out / "checkpoints").glob("step_*"))
    if holds_run and not overwrite:
        raise errors.UsageError(f"{out} already holds a run (checkpoints or metrics.jsonl); continue it with "
                                f"`python train.py --resume {out}`, or pass --overwrite to delete it and start again")


SETTING_RULES = [  # (setting, what it must be, test): impossible values are refused before any work
    ("prompts_per_step", "at least 1", lambda v: v >= 1), ("group_size", "at least 2 (GRPO normalises within a "
                                                                         "group)", lambda v: v >= 2),
    ("steps", "at least 1", lambda v: v >= 1), ("mini_batches", "at least 1", lambda v: v >= 1),
    ("lr", "above 0 and below 1 (paper: 1e-6)", lambda v: 0 < v < 1),
    ("weight_decay", "0 or more", lambda v: v >= 0), ("warmup_steps", "0 or more", lambda v: v is None or v >= 0),
    ("clip_low", "above 0 and below 1 (paper: 0.2)", lambda v: 0 < v < 1),
    ("clip_high", "above 0 (paper: 0.27)", lambda v: 0 < v < math.inf), ("grad_clip", "above 0", lambda v: v > 0),
    ("kl", "0 or more", lambda v: v >= 0), ("lora", "0 (off) or a rank of at least 1", lambda v: v >= 0),
    ("token_weight", "0 or more (paper: 0.5)", lambda v: v >= 0), ("token_std_floor", "0 or more",
                                                                    lambda v: v >= 0),
    ("micro_batch_tokens", "at least 1", lambda v: v >= 1), ("disc_batch_tokens", "at least 1", lambda v: v >= 1),
    ("save_every", "at least 1", lambda v: v >= 1), ("keep_checkpoints", "0 (keep all) or more", lambda v: v >= 0),
    ("eval_every", "0 or more", lambda v: v >= 0), ("eval_prompts", "0 or more", lambda v: v >= 0),
    ("threads", "0 (torch's default) or more", lambda v: v >= 0),
]


def check_settings(args) -> None:
    """Refuse settings that cannot make a run (0 prompts, a negative clip, a NaN weight, ...), naming the flag."""
    for name, must_be, ok in SETTING_RULES:
        value = getattr(args, name)
        finite = not isinstance(value, float) or math.isfinite(value)
        if not (finite and ok(value)):
            raise errors.UsageError(f"--{name.replace('_', '-')} {value}: must be {must_be}")
    if args.mini_batches > args.prompts_per_step * args.group_size:
        raise errors.UsageError(f"--mini-batches {args.mini_batches}: at most P*G = "
                                f"{args.prompts_per_step * args.group_size} (one response per optimizer step)")


def last_checkpoint_note(out: Path) -> str:
    """Where a run that stopped on an error can continue from (for the error line)."""
    latest = out / "checkpoints" / "latest"
    if latest.exists() and (out / "checkpoints" / latest.read_text().strip()).exists():
        return (f"the last finished step's checkpoint is {out / 'checkpoints' / latest.read_text().strip()}; fix the "
                f"cause, then continue with `python train.py --resume {out}`")
    return f"no checkpoint was written yet; fix the cause and start again with --overwrite --out {out}"


class TrainingStopped(errors.UsageError):
    """The loop stopped on a fault; the message already says which checkpoint to resume from."""


@contextlib.contextmanager
def name_the_checkpoint_on_error(out: Path):
    """A project error raised during the loop (an endpoint that stays down, a divergence) names where to resume."""
    try:
        yield
    except TrainingStopped:
        raise
    except errors.ProjectError as e:
        raise TrainingStopped(f"{' '.join(str(e).split())}; {last_checkpoint_note(out)}") from None


def stop_if_diverged(step: int, what: str, value: float, entropy, uniform_entropy: float, out: Path,
                     start_entropy: float | None = None) -> None:
    """Stop before an optimizer step that would apply a NaN / inf, or train a policy that has collapsed to uniform
    (entropy within 1 % of ln V, when it started clearly below: a random-init model is near-uniform from the start)."""
    if not math.isfinite(value):
        raise TrainingStopped(f"step {step + 1}: the {what} is {value}; nothing of it was applied to the weights; "
                              f"{last_checkpoint_note(out)} (the run's settings; a lower --lr or another "
                              f"--token-weight is a new run: --overwrite, or another --out)")
    started_lower = start_entropy is not None and start_entropy < 0.9 * uniform_entropy
    if entropy is not None and started_lower and float(entropy) >= 0.99 * uniform_entropy:
        raise TrainingStopped(f"step {step + 1}: the policy's next-token distribution is uniform (entropy "
                              f"{float(entropy):.2f} of at most {uniform_entropy:.2f}): training has diverged; start "
                              f"a new run with a lower --lr (--overwrite, or another --out); the last checkpoint may "
                              f"already hold the collapsed policy: {last_checkpoint_note(out)}")


def clear_run(out: Path) -> None:
    """--overwrite: the old run's checkpoints and metrics go (only once every check of the new command passed)."""
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep only the metric rows of steps <= step (a run killed after logging a step but before its checkpoint)."""
    if not path.exists():
        return
    def step_of(line):  # a line cut short by a kill does not parse: it goes too
        try:
            return json.loads(line).get("step", 0)
        except ValueError:
            return math.inf

    lines = [l for l in path.read_text().splitlines() if l.strip()]
    kept = [l for l in lines if step_of(l) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(l + "\n" for l in kept))


PLOTS = [("reward", "mean response reward"), ("aon_pass", "AON pass rate (all constraints met)"),
         ("csr_pass", "CSR (share of constraints met)"), ("zero_var_groups", "groups with zero reward variance"),
         ("tok_adv_abs", "mean |token advantage|"), ("entropy", "policy entropy"), ("clip_frac", "clip fraction"),
         ("response_len", "response length (tokens)"), ("step_seconds", "seconds per step")]


def plot_run(out: Path) -> Path:
    """Draw the training curves of a run folder from metrics.jsonl into curves.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    fig, axes = plt.subplots(2, 5, figsize=(20, 7))
    for ax, (key, title) in zip(axes.flat, PLOTS):
        xs = [r["step"] for r in train if key in r]
        ax.plot(xs, [r[key] for r in train if key in r], marker=".")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax = axes.flat[-1]
    for key, label in [("eval_aon", "all constraints met"), ("eval_csr", "constraints met")]:
        ax.plot([r["step"] for r in evals], [r[key] for r in evals], marker="o", label=label)
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


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


# -----------------------------------------------------------------------------
# Small pieces of the loop


def skip_optimizer_steps(scheduler, n: int) -> None:
    """Advance the learning-rate schedule past n optimizer steps that are not taken (a step with no signal), so the
    learning rate stays a function of the step. torch warns when the schedule moves before any optimizer step; here
    that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        for _ in range(n):
            scheduler.step()


def lr_lambda(warmup: int, total: int, decay: str):
    """The learning-rate multiplier of optimizer step i (0-based): warm-up, then the decay."""
    def f(i):
        if i < warmup:
            return (i + 1) / warmup
        progress = min(1.0, (i - warmup) / max(1, total - warmup))      # 0 after warm-up, 1 at the end
        if decay == "linear":
            return 1.0 - progress
        if decay == "cosine":
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0
    return f


def batch_of_prompts(prompts: list, step: int, per_step: int, seed: int, curriculum: str = "none",
                     steps: int = 1) -> list:
    """Prompts of a step: an endless stream of seeded epoch permutations, so position = step * per_step.

    curriculum "constraints" (easy to hard, as in Conifer): the run is cut into as many equal stages as the largest
    number of constraints K_max; stage j draws only prompts with at most j + 1 constraints (the last stage: all).
    """
    if curriculum == "constraints":
        k_max = max(len(p.rubrics) for p in prompts)
        allowed = min(k_max, 1 + step * k_max // max(1, steps))                 # K of this step's stage
        pool = [p for p in prompts if len(p.rubrics) <= allowed] or prompts
        seed = seed + 1000 * allowed                                           # each stage its own stream
    else:
        pool = prompts
    out = []
    for pos in range(step * per_step, (step + 1) * per_step):
        epoch, i = divmod(pos, len(pool))
        order = np.random.default_rng(seed + epoch).permutation(len(pool))
        out.append(pool[order[i]])
    return out


def family_pass_rates(prompts: list, prompt_index: list, scores: torch.Tensor) -> dict:
    """Pass rate per constraint family (the checker's instruction id, or 'llm') over one step's verdicts."""
    met, seen = {}, {}
    for b, p in enumerate(prompt_index):
        for k, item in enumerate(prompts[p].rubrics):
            fam = item.checker["instruction_id"] if item.checker else "llm"
            seen[fam] = seen.get(fam, 0) + 1
            met[fam] = met.get(fam, 0) + int(scores[b, k] > 0)
    return {fam: met[fam] / seen[fam] for fam in sorted(seen)}


@torch.no_grad()
def evaluate_heldout(model, tokenizer, judge, prompts, args) -> dict:
    """Greedy responses to the held-out prompts; share with all constraints met, and share of constraints met."""
    r = generate_rollout(model, tokenizer, [p.messages for p in prompts], group_size=1,
                         max_new_tokens=args.max_new_tokens, temperature=0, max_prompt_tokens=args.max_prompt_tokens)
    scores, _ = judge.score(prompts, r.texts, r.prompt_index)                          # [B, K]
    real = scores != 0
    aon = ((scores > 0) | ~real).all(-1).float()
    csr = ((scores > 0) & real).sum(-1).float() / real.sum(-1).clamp(min=1)
    return {"eval_aon": float(aon.mean()), "eval_csr": float(csr.mean()), "eval_n": len(r.texts)}


# -----------------------------------------------------------------------------
# Main


def main(argv=None):
    args = parse_args(argv)
    if args.plot:
        print(f"wrote {plot_run(Path(args.plot))}")
        return
    from data import DataError, item_family, load_rubric_jsonl
    from judge import EndpointLLM, Judge, LocalLLM

    # --- configuration checks: everything cheap that can be wrong, before any model is loaded
    resume_ckpt = find_checkpoint(args.resume) if args.resume else None
    trainer_state = None
    if resume_ckpt is not None:  # the run continues with its own settings; see settings_for_resume
        trainer_state = load_trainer_state(resume_ckpt)
        given = given_flags(argv)
        args = settings_for_resume(args, trainer_state["args"], given, where=str(resume_ckpt))
        if "out" not in given:
            args.out = str(resume_ckpt.parent.parent)
        elif Path(args.out).resolve() != resume_ckpt.parent.parent.resolve():
            refuse_to_overwrite_a_run(Path(args.out), overwrite=False)   # never mix into another run
    out = Path(args.out or f"runs/{args.algo}-{args.norm}-seed{args.seed}")
    if resume_ckpt is None:
        refuse_to_overwrite_a_run(out, args.overwrite)
    device = torch.device(args.device) if args.device else models.default_device()
    fill_run_defaults(args, device.type)
    if args.token_std_floor is None:  # --reference-quirks means the released behaviour: no floor, EOS relevance 0
        args.token_std_floor = 0.0 if args.reference_quirks else adv.TOKEN_STD_FLOOR
    if args.eos_relevance is None:
        args.eos_relevance = "zero" if args.reference_quirks else "discriminator"
    check_settings(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        use_llm_judge = bool(args.judge_model or args.judge_url)
        train_prompts = load_rubric_jsonl(args.train_data, max_constraints=args.max_constraints,
                                          llm_judge=use_llm_judge)
        eval_prompts = load_rubric_jsonl(args.eval_data, max_constraints=args.max_constraints,
                                         llm_judge=use_llm_judge)[:args.eval_prompts]
    except OSError as e:  # DataError (file:line: field) goes to the error boundary as it is
        raise errors.UsageError(f"cannot read the prompts: {e}") from None
    if not train_prompts:
        raise errors.UsageError(f"{args.train_data} has no prompts, give a rubric JSONL with at least one row")
    try:
        tokenizer = models.load_tokenizer(args.model)
        use_disc = args.algo == "rtt" and args.relevance in ("discriminator", "random")
        if use_disc:
            import discriminator
            if args.discriminator:  # the vocabulary check needs only the tokenizer: do it before any weights
                discriminator.check_tokenizer(models.load_tokenizer(args.discriminator), tokenizer,
                                              where=f"the discriminator {args.discriminator}")
    except RuntimeError as e:  # ModelLoadError, DiscriminatorError: one clear line, no stack trace
        raise errors.UsageError(str(e)) from None

    # --- init
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    log = lambda msg: print(f"[train] {msg}", flush=True)
    # Master weights stay float32 (a 1e-6 update vanishes in bf16 weights); forward passes run under bf16 autocast
    # on GPU, so generation, log-probs and the backward use bf16 matmuls.
    policy_src = str(resume_ckpt) if resume_ckpt and not args.lora else args.model
    model = models.load_causal_lm(policy_src, device=device, dtype=torch.float32)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    grad_ckpt = args.grad_checkpointing == "on" or (args.grad_checkpointing == "auto" and device.type == "cuda")
    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ref_model = None
    if args.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise errors.UsageError("--lora needs the peft package: pip install 'peft>=0.13'")
        if resume_ckpt:
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, resume_ckpt, is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(r=args.lora, lora_alpha=2 * args.lora,
                                                     target_modules="all-linear"))
        if grad_ckpt:
            model.enable_input_require_grads()  # checkpointed frozen embeddings would otherwise cut the graph
    elif args.kl > 0:
        ref_model = models.load_causal_lm(args.model, device=device, dtype=torch.float32).eval()
        ref_model.requires_grad_(False)

    judge_llm = None
    if args.judge_url:
        judge_llm = EndpointLLM(args.judge_url, model=args.judge_name)
    elif args.judge_model:
        judge_llm = LocalLLM(models.load_causal_lm(args.judge_model, device=device),
                             models.load_tokenizer(args.judge_model))
    judge = Judge(llm=judge_llm, max_constraints=args.max_constraints)

    disc = None
    if use_disc:
        # no --discriminator: the one built for this policy in the cache, built now (offline labels) if missing
        disc_path = args.discriminator or discriminator.ensure_discriminator(
            args.model, discriminator.default_dir(args.model), device=device, log=log)
        try:
            disc, _ = discriminator.load_discriminator(disc_path, policy_tokenizer=tokenizer, device=device)
        except discriminator.DiscriminatorError as e:
            raise errors.UsageError(str(e)) from None
        log(f"discriminator: {disc_path}")
    if args.overwrite and resume_ckpt is None:  # every model loaded: only now may the old run go
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    total_opt_steps = args.steps * args.mini_batches
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, round(0.04 * total_opt_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total_opt_steps, args.decay))
    start_step = 0
    if trainer_state is not None:
        optimizer.load_state_dict(trainer_state["optimizer"])
        scheduler.load_state_dict(trainer_state["scheduler"])
        set_rng_state(trainer_state["rng"])
        start_step = trainer_state["step"]
        drop_metrics_after(out / "metrics.jsonl", start_step)   # rows of steps the checkpoint does not hold
        log(f"resumed from {resume_ckpt} at step {start_step}")
    (out / "config.json").write_text(json.dumps(run_settings(args), indent=2))
    metrics_file = open(out / "metrics.jsonl", "a")

    def write_metrics(row):
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()

    log(f"policy {args.model} on {device} | algo {args.algo} union {args.union}"
        + (f" norm {args.norm} combine {args.combine} lambda {args.token_weight} relevance {args.relevance}"
           f" eos {args.eos_relevance} std-floor {args.token_std_floor}"
           + (" reference-quirks" if args.reference_quirks else "") if args.algo == "rtt" else "")
        + f" | P={args.prompts_per_step} G={args.group_size} steps {start_step}->{args.steps} | run folder {out}")
    if start_step == 0 and eval_prompts:
        with amp:
            ev = evaluate_heldout(model, tokenizer, judge, eval_prompts, args)
        write_metrics({"kind": "eval", "step": 0, **ev})
        log(f"held-out before training: all constraints met {ev['eval_aon']:.3f}, constraints met {ev['eval_csr']:.3f}")

    # --- the loop
    uniform_entropy = math.log(model.config.vocab_size)   # entropy of a policy that has collapsed to uniform
    start_entropy = None                                    # the policy's entropy at the first update of this run
    from tqdm import tqdm
    bar = tqdm(range(start_step, args.steps), initial=start_step, total=args.steps, disable=args.no_progress,
               desc="RTT" if args.algo == "rtt" else "GRPO", dynamic_ncols=True)
    G, P = args.group_size, args.prompts_per_step
    done = start_step
    with name_the_checkpoint_on_error(out):  # a fault mid-run: one line that says where to resume from
        for step in bar:
            t_step = time.perf_counter()
            times = {}
            prompts = batch_of_prompts(train_prompts, step, P, args.seed, args.curriculum, args.steps)

            # 1. rollout: G responses per prompt, rows prompt-major (b = p*G + g)
            t0 = time.perf_counter()
            with amp:
                ro = generate_rollout(model, tokenizer, [p.messages for p in prompts], G, args.max_new_tokens,
                                      args.temperature, args.top_p, args.top_k, args.max_prompt_tokens,
                                      seed=args.seed * 100_003 + step)
            times["t_generate"] = time.perf_counter() - t0
            if ro.num_prompts == 0:
                log(f"step {step}: every prompt was longer than --max-prompt-tokens; skipped")
                continue
            prompts = [prompts[i] for i in sorted(set(ro.prompt_index))]
            prompt_index = [i // G for i in range(len(ro.texts))]   # index into the kept prompts
            Pk = len(prompts)
            mask = ro.response_mask                                                             # [B, T]

            # 2. judge: scores [B, K] in {+1, -1, 0 = padded slot}
            t0 = time.perf_counter()
            scores, judge_stats = judge.score(prompts, ro.texts, prompt_index)                  # [B, K]
            times["t_judge"] = time.perf_counter() - t0
            scores = scores.to(device).float()
            K = scores.shape[1]

            # 3. response rewards and GRPO advantages, per group
            rewards = adv.response_rewards(scores.view(Pk, G, K), args.union)                   # [P, G]
            T = mask.shape[1]
            relevance = None
            t0 = time.perf_counter()
            if args.algo == "rtt":
                # 4. token relevance w [P, G, K, T] and the RTT advantage
                if args.relevance == "uniform":
                    relevance = adv.uniform_relevance(mask.view(Pk, G, T), K)
                else:
                    criteria = [[item.description for item in prompts[i].rubrics] for i in prompt_index]
                    with amp:
                        w = discriminator.relevance(disc, tokenizer, ro.response_ids, mask, criteria, K,
                                                    batch_tokens=args.disc_batch_tokens)        # [B, K, T]
                    relevance = w.view(Pk, G, K, T).to(device)
                    if args.relevance == "random":
                        gen = torch.Generator(device=relevance.device).manual_seed(args.seed * 7919 + step)
                        relevance = adv.random_relevance(relevance, mask.view(Pk, G, T), gen)
                stop_tokens = adv.stop_token_mask(ro.response_ids, mask, tokenizer.all_special_ids)  # [B, T]
                advantage, parts = adv.rtt_advantages(scores.view(Pk, G, K), relevance, mask.view(Pk, G, T),
                                                      union=args.union, norm=args.norm, combine=args.combine,
                                                      weight=args.token_weight, reference_quirks=args.reference_quirks,
                                                      std_floor=args.token_std_floor, stop_mask=stop_tokens.view(Pk, G, T),
                                                      eos=args.eos_relevance)
                advantage = advantage.reshape(Pk * G, T)                                        # [B, T]
                tok_adv = parts["token_adv"].reshape(Pk * G, T)
            else:
                advantage = adv.grpo_advantages(rewards)[..., None].expand(Pk, G, T).reshape(Pk * G, T) * mask
                tok_adv = torch.zeros_like(advantage)
            times["t_discriminator"] = time.perf_counter() - t0
            advantage = advantage.float()

            # 5. PPO-clip update, one epoch, the rollout split into mini-batches (optimizer steps)
            t0 = time.perf_counter()
            B = mask.shape[0]
            minis = [list(range(j * B // args.mini_batches, (j + 1) * B // args.mini_batches))
                     for j in range(args.mini_batches)]                                   # consecutive groups of rows
            minis = [m for m in minis if m]
            upd = {"clip_frac": 0.0, "kl": 0.0, "entropy": 0.0, "grad_norm": 0.0, "loss": 0.0}
            skipped = args.kl == 0 and not bool((advantage * mask).ne(0).any())
            if skipped:
                # No learning signal (e.g. GRPO-AON with every group tied): the loss is 0 whatever the weights, so there
                # is nothing to compute, and an optimizer step would not be a no-op (AdamW replays its momentum). The
                # learning-rate schedule advances as if the steps were taken.
                skip_optimizer_steps(scheduler, len(minis))
                times["t_logprobs"] = times["t_update"] = 0.0
            else:
                model.train()
                lengths = (ro.prompt_mask.sum(-1) + mask.sum(-1)).tolist()
                # old log-probs (and reference log-probs for KL) of the later mini-batches, before any update
                old_logp = torch.zeros(B, T, device=device)
                ref_logp = torch.zeros(B, T, device=device) if args.kl > 0 else None
                with torch.no_grad(), amp:
                    for mb_rows in minis[1:]:
                        for rows in micro_batches(mb_rows, lengths, args.micro_batch_tokens):
                            pi, pm, ri, rm, t1 = crop(ro, rows)
                            old_logp[rows, :t1] = response_logprobs(model, pi, pm, ri, rm)[0]
                    if ref_logp is not None:
                        for rows in micro_batches(list(range(B)), lengths, args.micro_batch_tokens):
                            pi, pm, ri, rm, t1 = crop(ro, rows)
                            if args.lora:
                                with model.disable_adapter():
                                    ref_logp[rows, :t1] = response_logprobs(model, pi, pm, ri, rm)[0]
                            else:
                                ref_logp[rows, :t1] = response_logprobs(ref_model, pi, pm, ri, rm)[0]
                times["t_logprobs"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                n_tok = float(mask.sum())
                for j, mb_rows in enumerate(minis):
                    denom = aggregate_denominator(mask[mb_rows], args.loss_agg)
                    optimizer.zero_grad(set_to_none=True)
                    for rows in micro_batches(mb_rows, lengths, args.micro_batch_tokens):
                        pi, pm, ri, rm, t1 = crop(ro, rows)
                        with amp:
                            logp, ent = response_logprobs(model, pi, pm, ri, rm)                        # [b, t1]
                        old = logp.detach() if j == 0 else old_logp[rows, :t1]   # mini-batch 0: the sampler itself
                        loss_sum, st = ppo_clip_loss(logp, old, advantage[rows, :t1], rm, args.clip_low, args.clip_high,
                                                     args.loss_agg, None if ref_logp is None else ref_logp[rows, :t1],
                                                     args.kl)
                        mean_entropy = float((ent * rm).sum() / rm.sum().clamp(min=1))
                        start_entropy = mean_entropy if start_entropy is None else start_entropy
                        stop_if_diverged(step, "loss", float(loss_sum.detach()), mean_entropy, uniform_entropy, out,
                                         start_entropy)
                        (loss_sum / denom).backward()
                        w_tok = float(rm.sum()) / n_tok
                        upd["clip_frac"] += st["clip_frac"] * w_tok
                        upd["kl"] += st["kl"] * w_tok
                        upd["entropy"] += float((ent * rm).sum()) / n_tok
                        upd["loss"] += float(loss_sum.detach()) / denom / len(minis)
                    gn = torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
                    stop_if_diverged(step, "gradient norm", float(gn), None, uniform_entropy, out)   # before the step
                    upd["grad_norm"] += float(gn) / len(minis)
                    optimizer.step()
                    scheduler.step()
                model.eval()
                times["t_update"] = time.perf_counter() - t0

            # --- log
            with torch.no_grad():
                real = scores != 0
                aon = ((scores > 0) | ~real).all(-1).float()                                         # [B]
                csr = ((scores > 0) & real).sum(-1).float() / real.sum(-1).clamp(min=1)             # [B]
                tok_abs = (tok_adv.abs() * mask).sum() / mask.sum().clamp(min=1)
                row = {"kind": "train", "step": step + 1, "reward": float(rewards.mean()),
                       "aon_pass": float(aon.mean()), "csr_pass": float(csr.mean()),
                       "zero_var_groups": float((rewards.std(-1) == 0).float().mean()) if G > 1 else 1.0,
                       "tok_adv_abs": float(tok_abs),
                       "tok_adv_nonzero": float(((tok_adv != 0) & (mask > 0)).sum() / mask.sum()),
                       "adv_mean": float((advantage * mask).sum() / mask.sum()),
                       "response_len": float(mask.sum(-1).float().mean()),
                       "truncated": float(ro.truncated.float().mean()),
                       **upd, "lr": scheduler.get_last_lr()[0], "new_tokens_per_s": ro.tokens_per_second,
                       **{k: round(v, 3) for k, v in times.items()}, "step_seconds": time.perf_counter() - t_step,
                       "peak_mem_gb": peak_memory_gb(device), "skipped_prompts": len(ro.skipped),
                       "update_skipped": skipped,
                       "judge": {k: v for k, v in judge_stats.items() if isinstance(v, (int, float))},
                       "family_pass": family_pass_rates(prompts, prompt_index, scores)}
                if relevance is not None:
                    row["relevance_mean"] = float((relevance.reshape(-1, K, T).sum(1) * mask).sum() / (mask.sum() * K))
                if args.algo == "grpo":
                    row["res_adv_abs"] = float((advantage.abs() * mask).sum() / mask.sum().clamp(min=1))
                if args.algo == "rtt":  # where the token term pushes: EOS, last tokens, per family (diagnostics.py)
                    families = [[item_family(item) for item in p.rubrics] for p in prompts]
                    seen = mask.bool() & ~stop_tokens if args.eos_relevance == "exclude" else None   # [B, T]
                    row.update(diagnostics.token_advantage_stats(
                        parts, mask.view(Pk, G, T), stop_tokens.view(Pk, G, T), scores.view(Pk, G, K), families,
                        args.token_weight, args.token_std_floor, None if seen is None else seen.view(Pk, G, T)))
            write_metrics(row)
            bar.set_postfix(reward=f"{row['reward']:.3f}", aon=f"{row['aon_pass']:.2f}", csr=f"{row['csr_pass']:.2f}",
                            s=f"{row['step_seconds']:.0f}")
            if args.no_progress:
                log(f"step {step + 1}/{args.steps} reward {row['reward']:.3f} aon {row['aon_pass']:.2f} "
                    f"csr {row['csr_pass']:.2f} zero-var groups {row['zero_var_groups']:.2f} "
                    f"|A_tok| {row['tok_adv_abs']:.3f} clip {row['clip_frac']:.3f} "
                    f"({', '.join(f'{k[2:]} {v:.1f}s' for k, v in times.items())})"
                    + (" | every advantage 0: no update" if skipped else ""))
            elif skipped:
                bar.write(f"[train] step {step + 1}: every advantage is 0 (no group has a reward spread): no update")

            done = step + 1
            if args.eval_every and done % args.eval_every == 0 and done < args.steps and eval_prompts:
                with amp:
                    ev = evaluate_heldout(model, tokenizer, judge, eval_prompts, args)
                write_metrics({"kind": "eval", "step": done, **ev})
            stop_now = args.stop_after is not None and done - start_step >= args.stop_after
            if done % args.save_every == 0 or done == args.steps or stop_now:
                save_checkpoint(out, done, model, tokenizer, optimizer, scheduler, args, args.keep_checkpoints)
            if stop_now:
                log(f"stopping after {args.stop_after} steps (--stop-after); continue with --resume {out}")
                break

    # --- the end: final eval, plots, where everything is
    if eval_prompts and start_step < args.steps and done == args.steps:
        with amp:
            ev = evaluate_heldout(model, tokenizer, judge, eval_prompts, args)
        write_metrics({"kind": "eval", "step": args.steps, **ev})
        log(f"held-out after training: all constraints met {ev['eval_aon']:.3f}, constraints met {ev['eval_csr']:.3f}")
    metrics_file.close()
    png = plot_run(out)
    log(f"checkpoints: {out / 'checkpoints'} | metrics: {out / 'metrics.jsonl'} | curves: {png}")


if __name__ == "__main__":
    errors.main_boundary(main)
