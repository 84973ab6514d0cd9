"""
RTT-GRPO training: rollout -> judge -> discriminator -> advantages -> PPO-clip update. One GPU, or a laptop CPU.

    python train.py                                  # the embedded SmolLM2-135M with RTT on the bundled data (CPU ok)
    python train.py --model Qwen2.5-1.5B             # one GPU, paper-like settings (see README for the recipe)
    python train.py --algo grpo --union csr          # response-level GRPO baseline with a CSR reward
    python train.py --resume runs/rtt                # continue exactly where a run stopped
    python train.py --plot runs/rtt                  # redraw the PNG curves of a run from its metrics.jsonl

One step, top to bottom in `main()` (sections of docs/method.md in brackets):
  1. take P prompts, sample G responses each (rollout.py)                                          [§2]
  2. judge every (response, constraint): scores [P, G, K] in {+1, -1, 0=padded slot} (judge.py)     [§7]
  3. response reward (AON or CSR) and GRPO advantage A_res [P, G]  (advantages.py)                   [§3]
  4. RTT only: relevance w [P, G, K, T] (discriminator.py), token rewards s*w, intra- (or inter-)
     sample normalisation, token advantage A_tok [P, G, T], combined A = A_res + lambda*A_tok       [§4-6]
  5. PPO-clip update, token-level ratio, clip-higher (0.2 / 0.27), seq-mean-token-mean,
     the rollout split into --mini-batches optimizer steps (2 in the reference)                   [§6]
Set-up, checkpoints, metrics and plots live in support/ (train_setup, checkpoints, train_metrics, ...).

How this departs from the released code (docs/method.md §10-11), and why:
  1. the [G, K, T] cube is permuted, not reshaped, and relevance stays continuous: `--reference-quirks` brings
     both defects back for comparison;
  2. the token normalisations floor sigma at 0.01 (`--token-std-floor`, advantages.py): a "whole response"
     constraint rated ~0.999 on every token gives ~0, as a constant row should, instead of discriminator noise
     blown up to full-size advantages; `--token-std-floor 0` is the formula as printed;
  3. a step where every advantage is 0 (and --kl is 0) makes no optimizer step: the loss has no gradient, and AdamW
     would only replay the momentum of earlier steps (the learning-rate schedule still advances);
  4. the response is located by position (prompt length), never by substring search;
  5. old log-probs: the first mini-batch is the sampling policy itself, so its "old" log-probs are the detached
     log-probs of the same forward pass (ratio exactly 1) instead of a second identical forward pass; only the
     later mini-batches get a no-grad pass before the first optimizer step;
  6. defaults sized to where the run happens (support/train_flags.py): on a CPU the main job (discriminator + RL)
     must finish in under 30 minutes on 2 cores, so P=2, 64 new tokens, 5 steps, lr 1e-5; paper values in --help;
  7. a constraint's normalised token reward reaches only the tokens relevant to it (`--token-credit relevant`,
     advantages.relevant_only): as printed, centring pushes up every token a failed constraint is not about, and
     with most constraints failing that made RTT lose to GRPO (README "Why RTT lost the pilot"); `--token-credit
     all` is the formula as printed.
"""
import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

import advantages as adv
import discriminator
from rollout import add_sampling_args, generate_rollout
from support import errors, train_flags, train_setup
from support.batching import budget_batches, crop_rows
from support.checkpoints import save_checkpoint
from support.faults import name_the_checkpoint_on_error, stop_if_diverged
from support.logprobs import token_logprobs
from support.prompt_order import batch_of_prompts
from support.schedule import skip_optimizer_steps
from support.train_metrics import MetricsFile, heldout_eval, plot_run, progress_line, run_banner, train_row

# -----------------------------------------------------------------------------
# CLI: the paper's knobs here; paths, memory, judge backend and bookkeeping in support/train_flags.py


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=train_flags.HelpFormatter)
    train_flags.add_model_and_data_flags(p)
    g = p.add_argument_group("algorithm (paper knobs)")
    g.add_argument("--algo", choices=["rtt", "grpo"], default="rtt",
                   help="rtt: RTT-GRPO (response + token advantage); grpo: response-level GRPO only")
    g.add_argument("--reward", "--union", dest="union", choices=["aon", "csr"], default="aon",
                   help="response reward: all-or-nothing (paper default) or constraint satisfaction rate (--union: "
                        "the released code's name)")
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
                   help=f"floor on sigma in the token normalisations (ours): a row with a smaller sigma is scaled by "
                        f"sigma/floor, so a near-constant row gives ~0, not noise scaled to size 1; 0 = the paper's "
                        f"formula as printed (default {adv.TOKEN_STD_FLOOR}; 0 with --reference-quirks)")
    g.add_argument("--eos-relevance", choices=adv.EOS_MODES, default=None,
                   help="relevance of the stop token: as the discriminator rates it (ours), zero (the released "
                        "code: the stop token then takes about -sqrt(n-1)*s), or exclude it from the token advantage "
                        "(it keeps A_res) (default: discriminator; zero with --reference-quirks)")
    g.add_argument("--token-credit", choices=adv.CREDIT_MODES, default=None,
                   help="which tokens a constraint's normalised token reward reaches: only the relevant ones (w >= "
                        "0.5; ours, so a failed constraint no longer pushes up the tokens that do not matter to it: "
                        "README 'Why RTT lost the pilot'), or all, the paper's formula as printed (default: relevant; "
                        "all with --reference-quirks)")
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
                   help="linear warm-up, in optimizer steps (paper: 20 of its 1000 optimizer steps; default 4%% of "
                        "the run's optimizer steps, so that a short run is not all warm-up)")
    g.add_argument("--decay", choices=["linear", "cosine", "constant"], default=None,
                   help="after warm-up: linear decay to 0 (paper: ROLL's default schedule), cosine decay to 0.1*lr, "
                        "or constant (default linear on GPU, cosine on CPU, where the measured runs used it)")
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
    train_flags.add_run_flags(p)
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


# -----------------------------------------------------------------------------
# The policy-gradient math (pure functions on tensors)


def ppo_clip_loss(logp, old_logp, advantages, mask, clip_low=0.2, clip_high=0.27, agg="seq-mean-token-mean",
                  ref_logp=None, kl_coef=0.0):
    """PPO-clip policy loss with clip-higher, per token, then aggregated (docs/method.md §6).

        rho = exp(logp - old_logp)
        l   = -min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A)   (+ kl_coef * k3(ref, logp))
        seq-mean-token-mean:  mean over sequences of (mean over that sequence's tokens of l)
        token-mean:           sum of l over all tokens / number of tokens

    All inputs [B, T] (mask 1 on response tokens). Returns (loss, stats) where the loss is the *sum* of the
    aggregated parts, so that micro-batches add up: the caller divides by the mini-batch's number of sequences (or
    tokens), see `aggregate_denominator`.

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
        loss_sum = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum()       # sum over sequences
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


def response_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask):
    """log p and entropy of each response token [B, T] from one forward over [prompt | response].

    Position ids come from the attention mask (left padding), exactly as `generate` computed them, so on-policy
    log-probs match the sampler's. Only the T+1 last positions go through the LM head (`logits_to_keep`).
    """
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)                             # [B, Tp + T]
    attn = torch.cat([prompt_mask, response_mask], dim=1)                               # [B, Tp + T]
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    T = response_ids.shape[1]
    logits = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids,
                   logits_to_keep=T + 1, use_cache=False).logits[:, :-1]               # [B, T, V]
    return token_logprobs(logits, response_ids)                                         # [B, T], [B, T]


# -----------------------------------------------------------------------------
# Steps 4 and 5 of the loop


def token_relevance(run, rollout, prompts, prompt_index, K: int, step: int) -> torch.Tensor:
    """Step 4a: relevance w [P, G, K, T] of every token for every constraint (discriminator, or an ablation)."""
    args, mask = run.args, rollout.response_mask                                        # [B, T]
    P, G, T = len(prompts), args.group_size, mask.shape[1]
    if args.relevance == "uniform":
        return adv.uniform_relevance(mask.view(P, G, T), K)
    criteria = [[item.description for item in prompts[i].rubrics] for i in prompt_index]
    with run.amp:
        w = discriminator.relevance(run.disc, run.tokenizer, rollout.response_ids, mask, criteria, K,
                                    batch_tokens=args.disc_batch_tokens)                  # [B, K, T]
    relevance = w.view(P, G, K, T).to(run.device)
    if args.relevance == "random":
        gen = torch.Generator(device=relevance.device).manual_seed(args.seed * 7919 + step)
        relevance = adv.random_relevance(relevance, mask.view(P, G, T), gen)
    return relevance


def mini_batch_rows(B: int, n: int) -> list:
    """The rows of each of the n optimizer steps of a rollout: consecutive, equal-sized (so whole groups when n
    divides P), empty ones dropped.  mini_batch_rows(4, 2) -> [[0, 1], [2, 3]]"""
    return [rows for rows in (list(range(j * B // n, (j + 1) * B // n)) for j in range(n)) if rows]


def ppo_update(run, rollout, advantage, step: int, entropy_ref: dict) -> tuple:
    """Step 5: one PPO epoch over the rollout, split into --mini-batches optimizer steps (consecutive groups of rows).

    advantage [B, T]. Returns (the update's statistics, the time the log-prob passes ended). entropy_ref holds the
    policy's entropy at the run's first update ("start") and at uniform ("uniform"), for the collapse check.
    """
    args, model, mask = run.args, run.model, rollout.response_mask                      # [B, T]
    B, T = mask.shape
    mini_batches = mini_batch_rows(B, args.mini_batches)
    lengths = (rollout.prompt_mask.sum(-1) + mask.sum(-1)).tolist()
    batches = lambda rows: budget_batches(rows, lengths, args.micro_batch_tokens)       # noqa: E731
    model.train()
    # old log-probs of the later mini-batches (and reference log-probs for KL), before any optimizer step
    old_logp = torch.zeros(B, T, device=run.device)
    ref_logp = torch.zeros(B, T, device=run.device) if args.kl > 0 else None
    with torch.no_grad(), run.amp:
        for rows in [r for mb in mini_batches[1:] for r in batches(mb)]:
            prompt_ids, prompt_mask, response_ids, response_mask, t1 = crop_rows(rollout, rows)
            old_logp[rows, :t1] = response_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask)[0]
        for rows in batches(list(range(B))) if ref_logp is not None else []:
            prompt_ids, prompt_mask, response_ids, response_mask, t1 = crop_rows(rollout, rows)
            with model.disable_adapter() if args.lora else contextlib.nullcontext():   # LoRA: the base is the reference
                ref_logp[rows, :t1] = response_logprobs(model if args.lora else run.ref_model, prompt_ids, prompt_mask,
                                                        response_ids, response_mask)[0]
    t_logprobs = time.perf_counter()
    stats = {"clip_frac": 0.0, "kl": 0.0, "entropy": 0.0, "grad_norm": 0.0, "loss": 0.0}
    n_tokens = float(mask.sum())
    for j, mb_rows in enumerate(mini_batches):
        denom = aggregate_denominator(mask[mb_rows], args.loss_agg)
        run.optimizer.zero_grad(set_to_none=True)
        for rows in batches(mb_rows):
            prompt_ids, prompt_mask, response_ids, response_mask, t1 = crop_rows(rollout, rows)
            with run.amp:
                logp, ent = response_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask)  # [b, t1]
            old = logp.detach() if j == 0 else old_logp[rows, :t1]        # mini-batch 0: the sampler itself
            loss_sum, loss_stats = ppo_clip_loss(logp, old, advantage[rows, :t1], response_mask, args.clip_low,
                                                 args.clip_high, args.loss_agg,
                                                 None if ref_logp is None else ref_logp[rows, :t1], args.kl)
            mean_entropy = float((ent * response_mask).sum() / response_mask.sum().clamp(min=1))
            entropy_ref["start"] = mean_entropy if entropy_ref["start"] is None else entropy_ref["start"]
            stop_if_diverged(step, "loss", float(loss_sum.detach()), mean_entropy, entropy_ref["uniform"], run.out,
                             entropy_ref["start"])
            (loss_sum / denom).backward()
            token_share = float(response_mask.sum()) / n_tokens
            stats["clip_frac"] += loss_stats["clip_frac"] * token_share
            stats["kl"] += loss_stats["kl"] * token_share
            stats["entropy"] += float((ent * response_mask).sum()) / n_tokens
            stats["loss"] += float(loss_sum.detach()) / denom / len(mini_batches)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, args.grad_clip)
        stop_if_diverged(step, "gradient norm", float(grad_norm), None, entropy_ref["uniform"], run.out)
        stats["grad_norm"] += float(grad_norm) / len(mini_batches)
        run.optimizer.step()
        run.scheduler.step()
    model.eval()
    return stats, t_logprobs


# -----------------------------------------------------------------------------
# Main: set-up, then the loop


def main(argv=None):
    args = parse_args(argv)
    if args.plot:
        print(f"wrote {plot_run(Path(args.plot))}")
        return
    run = train_setup.prepare(args, argv, build_parser())
    args, out, log = run.args, run.out, train_setup.log
    (out / "config.json").write_text(json.dumps(train_flags.run_settings(args), indent=2))
    metrics = MetricsFile(out / "metrics.jsonl")
    log(run_banner(args, run.device, run.start_step, out))
    if run.start_step == 0 and run.eval_prompts:
        heldout_eval(run, metrics, 0, say="before training")

    # --- the loop
    entropy_ref = {"uniform": math.log(run.model.config.vocab_size), "start": None}   # for the collapse check
    bar = tqdm(range(run.start_step, args.steps), initial=run.start_step, total=args.steps,
               disable=args.no_progress, desc="RTT" if args.algo == "rtt" else "GRPO", dynamic_ncols=True)
    G, done = args.group_size, run.start_step
    with name_the_checkpoint_on_error(out):  # a fault mid-run: one line that says where to resume from
        for step in bar:
            t_step = time.perf_counter()
            prompts = batch_of_prompts(run.train_prompts, step, args.prompts_per_step, args.seed, args.curriculum,
                                       args.steps)

            # 1. rollout: G responses per prompt, rows prompt-major (b = p*G + g)
            t0 = time.perf_counter()
            with run.amp:
                rollout = generate_rollout(run.model, run.tokenizer, [p.messages for p in prompts], G,
                                           args.max_new_tokens, args.temperature, args.top_p, args.top_k,
                                           args.max_prompt_tokens, seed=args.seed * 100_003 + step)
            times = {"t_generate": time.perf_counter() - t0}
            if rollout.num_prompts == 0:
                log(f"step {step}: every prompt was longer than --max-prompt-tokens; skipped")
                continue
            prompts = [prompts[i] for i in sorted(set(rollout.prompt_index))]    # the prompts that were sampled
            prompt_index = [i // G for i in range(len(rollout.texts))]         # row -> index into those prompts
            mask = rollout.response_mask                                        # [B, T]
            P, (B, T) = len(prompts), mask.shape

            # 2. judge: scores [B, K] in {+1, -1, 0 = padded slot}
            t0 = time.perf_counter()
            scores, judge_stats = run.judge.score(prompts, rollout.texts, prompt_index)    # [B, K]
            times["t_judge"] = time.perf_counter() - t0
            scores = scores.to(run.device).float()
            K = scores.shape[1]

            # 3. response rewards R [P, G]; the GRPO advantage A_res is computed inside rtt_advantages for RTT
            rewards = adv.response_rewards(scores.view(P, G, K), args.union)                # [P, G]
            t0 = time.perf_counter()
            relevance = parts = stop_tokens = None
            if args.algo == "rtt":
                # 4. token relevance w [P, G, K, T], then A = A_res + lambda * A_tok (advantages.py)
                relevance = token_relevance(run, rollout, prompts, prompt_index, K, step)      # [P, G, K, T]
                stop_tokens = adv.stop_token_mask(rollout.response_ids, mask, run.tokenizer.all_special_ids)  # [B, T]
                advantage, parts = adv.rtt_advantages(
                    scores.view(P, G, K), relevance, mask.view(P, G, T), union=args.union, norm=args.norm,
                    combine=args.combine, weight=args.token_weight, reference_quirks=args.reference_quirks,
                    std_floor=args.token_std_floor, stop_mask=stop_tokens.view(P, G, T), eos=args.eos_relevance,
                    credit=args.token_credit)
                advantage = advantage.reshape(B, T)                                             # [B, T]
                token_adv = parts["token_adv"].reshape(B, T)                                    # [B, T]
            else:
                advantage = adv.grpo_advantages(rewards)[..., None].expand(P, G, T).reshape(B, T) * mask  # [B, T]
                token_adv = torch.zeros_like(advantage)
            times["t_discriminator"] = time.perf_counter() - t0
            advantage = advantage.float()

            # 5. PPO-clip update; a step without any signal makes no optimizer step (departure 3)
            t0 = time.perf_counter()
            update_skipped = args.kl == 0 and not bool((advantage * mask).ne(0).any())
            update = {"clip_frac": 0.0, "kl": 0.0, "entropy": 0.0, "grad_norm": 0.0, "loss": 0.0}
            if update_skipped:
                skip_optimizer_steps(run.scheduler, len(mini_batch_rows(B, args.mini_batches)))
                times["t_logprobs"] = times["t_update"] = 0.0
            else:
                update, t_logprobs = ppo_update(run, rollout, advantage, step, entropy_ref)
                times["t_logprobs"], times["t_update"] = t_logprobs - t0, time.perf_counter() - t_logprobs

            # --- log, evaluate, checkpoint
            row = train_row(step, args, rollout, prompts, prompt_index, scores, rewards, advantage, token_adv, update,
                            run.scheduler.get_last_lr()[0], times, t_step, run.device, update_skipped, judge_stats,
                            relevance, parts, stop_tokens)
            metrics.write(row)
            bar.set_postfix(reward=f"{row['reward']:.3f}", aon=f"{row['aon_pass']:.2f}", csr=f"{row['csr_pass']:.2f}",
                            s=f"{row['step_seconds']:.0f}")
            if args.no_progress:
                log(progress_line(row, args.steps, times))
            elif update_skipped:
                bar.write(f"[train] step {step + 1}: every advantage is 0 (no group has a reward spread): no update")
            done = step + 1
            if args.eval_every and done % args.eval_every == 0 and done < args.steps and run.eval_prompts:
                heldout_eval(run, metrics, done)
            stop_now = args.stop_after is not None and done - run.start_step >= args.stop_after
            if done % args.save_every == 0 or done == args.steps or stop_now:
                save_checkpoint(out, done, run.model, run.tokenizer, run.optimizer, run.scheduler, args,
                                args.keep_checkpoints)
            if stop_now:
                log(f"stopping after {args.stop_after} steps (--stop-after); continue with --resume {out}")
                break

    # --- the end: final eval, plots, where everything is
    if run.eval_prompts and run.start_step < args.steps and done == args.steps:
        heldout_eval(run, metrics, done, say="after training")
    metrics.close()
    log(f"checkpoints: {out / 'checkpoints'} | metrics: {out / 'metrics.jsonl'} | curves: {plot_run(out)}")


if __name__ == "__main__":
    errors.main_boundary(main)
