"""
RTT-GRPO on Hugging Face TRL's `GRPOTrainer`: the method of train.py, run by a maintained distributed RL engine.

train.py is one process on one GPU, on purpose: it is the readable version. This file is for a user who outgrows one
GPU: TRL runs under `accelerate` (DDP, DeepSpeed ZeRO-2/3, FSDP), generates with HF `generate` or vLLM, and its
PPO-clip loss already takes a per-token advantage. Only the RTT parts are ours, and the math is advantages.py's.

    accelerate launch scale/trl_rtt.py --model Qwen2.5-7B --discriminator runs/disc-qwen          # every GPU here
    accelerate launch --config_file scale/accelerate/zero3_1node_8gpu.yaml scale/trl_rtt.py \
        --model Qwen2.5-7B --discriminator runs/disc-qwen --prompts-per-step 64 --max-new-tokens 4096 \
        --steps 500 --grad-accum 8 --vllm colocate                                           # the paper's setting
    python scale/trl_rtt.py --model smollm2-135m --steps 1                                  # one process, CPU

One step, with who does what (train.py's numbering):
  1. rollout: TRL (HF generate, or vLLM with --vllm); rows come G per prompt, and a group may straddle processes
  2. judge: `RTTGRPOTrainer.judge_reward`, the project's Judge, one verdict per (response, constraint); the verdicts
     are kept for step 4, and TRL gets `advantages.response_rewards` (AON or CSR) as its one reward per completion
  3-4. advantages: `RTTGRPOTrainer._generate_and_score_completions` replaces TRL's [B] advantage by RTT's [B, T]
     one, computed by advantages.py over the group gathered from every process (`group_advantages`); the relevance
     comes from the project's discriminator, which runs on every process next to the policy
  5. update: TRL's PPO-clip loss (loss_type "grpo" = seq-mean-token-mean, epsilon 0.2 / epsilon_high 0.27) with the
     per-token advantage; --mini-batches optimizer steps per rollout = TRL's steps_per_generation

Where it departs from train.py, and why (README "Scaling out" has the flag table):
  - TRL's log-probs are those of the logits divided by the sampling temperature (0.99), train.py's of the plain
    logits: the ratio is 1 on-policy in both, off-policy they differ slightly. That is TRL's choice; we keep it.
  - A step where every advantage is 0 still makes an optimizer step in TRL (AdamW replays its momentum); train.py
    skips it. TRL shuffles the rollout's rows before splitting it into mini-batches; train.py splits in order.
  - Refused, with a one-line reason, because they change RTT's meaning: importance_sampling_level="sequence"
    (GSPO: one ratio per response, whose gradient sees only the sum of the token advantages, which intra-sample
    normalisation makes ~0: RTT would silently become GRPO); loss types other than grpo/bnpo/dr_grpo/dapo; the
    off-policy sequence mask (it keeps a sequence by the sign of its advantage, which a [B, T] advantage lacks).
  - Not offered here: the periodic held-out evaluation (run evaluate.py on a checkpoint), an LLM judge as a local
    model on every rank (use --judge-url: one endpoint serves all ranks), train.py's --resume (TRL resumes from a
    checkpoint-N folder with its own resume_from_checkpoint).
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's modules live one folder up

import advantages as adv  # noqa: E402
import discriminator as disc_lib  # noqa: E402
from support import discriminator_build, models  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

# loss types whose per-token loss is -min(rho A, clip(rho) A) with rho and A per token (TRL broadcasts [B, T])
TOKEN_LEVEL_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo")


class RefusedSetting(ValueError):
    """A TRL setting that would change what RTT means; the message says why in one line."""


# -----------------------------------------------------------------------------
# The advantage over the gathered group (pure function: advantages.py does the math)


def group_advantages(all_scores, relevance, mask, stop, rows: slice, G: int, algo="rtt", gather_cube=None,
                     **rtt_flags):
    """This process's [b, T] advantages, every group statistic taken over the whole group: advantages.py's
    grpo_advantages (algo="grpo") or rtt_advantages (the one call train.py makes), on the gathered batch.

    all_scores [B_all, K]: the verdicts of every process's rows, gathered (rows prompt-major, b = p*G + g, so a group
    may straddle two processes); `rows` says which are this process's. relevance [b, K, T], mask [b, T] and stop [b, T]
    (advantages.stop_token_mask) are this process's own. What the rest of the group must provide:
      - the response advantage (GRPO, spec §3) needs the group's rewards: `all_scores` has them;
      - intra-sample token normalisation (RTT, §5) is per response, over its own tokens: the other processes' rows
        can stay empty (mask 0), they change nothing here;
      - inter-sample normalisation (§5 baseline) and the released code's reshape defect (reference_quirks) mix the
        rows of a group: `gather_cube(relevance, mask, stop)` must return the whole batch's (relevance [B_all, K, T'],
        mask [B_all, T'], stop [B_all, T']) padded to a common T' (None: refused).
    rtt_flags: rtt_advantages's union, norm, combine, weight, reference_quirks, std_floor, eos, credit.
    Returns float32 [b, T], 0 on padded tokens.
    """
    B_all, K = all_scores.shape
    P, T = B_all // G, mask.shape[-1]
    if algo == "grpo":
        rewards = adv.response_rewards(all_scores.view(P, G, K), rtt_flags.get("union", "aon"))       # [P, G]
        return (adv.grpo_advantages(rewards).reshape(B_all)[rows, None] * mask).float()              # [b, T]
    if rtt_flags.get("norm") == "inter" or rtt_flags.get("reference_quirks"):
        if gather_cube is None:
            raise RefusedSetting("--norm inter and --reference-quirks need the whole group's relevance cube, and it "
                                 "was not gathered")
        relevance_all, mask_all, stop_all = gather_cube(relevance, mask, stop)   # [B_all, K, T'], [B_all, T'] x 2
    else:
        relevance_all = relevance.new_zeros(B_all, K, T)                          # [B_all, K, T] ours, others empty
        mask_all = mask.new_zeros(B_all, T)                                       # [B_all, T]
        stop_all = stop.new_zeros(B_all, T)                                       # [B_all, T]
        relevance_all[rows], mask_all[rows], stop_all[rows] = relevance, mask, stop
    T_all = mask_all.shape[-1]
    A, _ = adv.rtt_advantages(all_scores.view(P, G, K), relevance_all.view(P, G, K, T_all),
                              mask_all.view(P, G, T_all), stop_mask=stop_all.view(P, G, T_all),
                              **rtt_flags)                                         # [P, G, T']
    return A.reshape(B_all, T_all)[rows, :T].float()                              # [b, T]


# -----------------------------------------------------------------------------
# The trainer: TRL's GRPOTrainer with RTT's judge, relevance and advantages


class RTTGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer running RTT (or GRPO with the project's judge and advantages: algo="grpo").

    rubric_prompts: the data.RubricPrompt list; every row of `train_dataset` carries "prompt" (its messages) and
    "prompt_id" (its index in this list). judge: a judge.Judge (anything with .score(prompts, texts, prompt_index)).
    discriminator: a saved discriminator folder, or a loaded (model, tokenizer) pair; None with relevance="uniform"
    or algo="grpo". The other keywords are train.py's flags of the same name; the rest goes to GRPOTrainer.
    """

    def __init__(self, *, rubric_prompts, judge, discriminator=None, algo="rtt", union="aon", norm="intra",
                 combine="add", token_weight=0.5, relevance="discriminator", reference_quirks=False,
                 token_std_floor=None, eos_relevance=None, token_credit=None, disc_batch_tokens=None,
                 relevance_seed=0, args: GRPOConfig, processing_class, **kwargs):
        refuse_settings(args, algo)
        if token_credit not in (None, "all") and reference_quirks:   # None: rtt_advantages picks train.py's default
            raise RefusedSetting(f"--token-credit {token_credit} is ours; --reference-quirks reproduces the released "
                                 "code, which credits every token")
        self.rubric_prompts, self.judge, self.algo, self.relevance_source = rubric_prompts, judge, algo, relevance
        self.rtt_flags = dict(union=union, norm=norm, combine=combine, weight=token_weight,
                              reference_quirks=reference_quirks, std_floor=token_std_floor, eos=eos_relevance,
                              credit=token_credit)
        self.disc_batch_tokens, self.relevance_seed = disc_batch_tokens, relevance_seed
        self.num_constraints = max(len(p.rubrics) for p in rubric_prompts)    # K: one width on every process
        self.disc = None
        if algo == "rtt" and relevance in ("discriminator", "random"):
            if discriminator is None:
                raise disc_lib.DiscriminatorError(f"--relevance {relevance} needs a trained discriminator")
            self.disc = load_checked_discriminator(discriminator, processing_class)   # before any weights move
        self.phase_seconds = []       # one dict per rollout: generate, judge, discriminator, logprobs (bench)
        self._verdicts = None         # [b, K] scores of the rows judged last, handed from the reward to step 4
        super().__init__(reward_funcs=[self.judge_reward], args=args, processing_class=processing_class, **kwargs)
        if self.disc is not None:
            self.disc = (self.disc[0].to(self.accelerator.device).eval(), self.disc[1])

    # --- 2. judge: per-constraint verdicts kept, the response reward returned to TRL

    def judge_reward(self, prompts, completions, prompt_id, **kwargs):
        """TRL's reward function: advantages.response_rewards of the judge's verdicts, one float per completion."""
        t0 = time.perf_counter()
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        scores, _ = self.judge.score(self.rubric_prompts, texts, [int(i) for i in prompt_id])   # [b, K_here]
        K = self.num_constraints
        self._verdicts = torch.nn.functional.pad(scores.float(), (0, K - scores.shape[1]))       # [b, K]
        self._t_judge = time.perf_counter() - t0
        return adv.response_rewards(self._verdicts, self.rtt_flags["union"]).tolist()          # [b]

    # --- 1. rollout (timed for the benchmark only)

    def _generate(self, prompts):
        t0 = time.perf_counter()
        out = super()._generate(prompts)
        self._t_generate = time.perf_counter() - t0
        return out

    # --- 3-4. relevance and the [B, T] advantage, replacing TRL's [B] one

    def _generate_and_score_completions(self, inputs):
        t0 = time.perf_counter()
        output = super()._generate_and_score_completions(inputs)  # rollout, judge_reward, TRL's GRPO advantage [b]
        t1 = time.perf_counter()
        mask = output["completion_mask"]                                                # [b, T]
        device = mask.device
        scores = self._verdicts.to(device)                                              # [b, K]
        b, K = scores.shape
        all_scores = self.accelerator.gather(scores)                                    # [B_all, K] every process
        rank = self.accelerator.process_index
        relevance = self.token_relevance(inputs, output["completion_ids"], mask, K)     # [b, K, T] or None
        stop = adv.stop_token_mask(output["completion_ids"], mask, self._tokenizer.all_special_ids)   # [b, T]
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        advantage = group_advantages(all_scores, relevance, mask, stop, slice(rank * b, (rank + 1) * b), G,
                                     self.algo, gather_cube=self.gather_cube, **self.rtt_flags)   # [b, T]
        output["advantages"] = advantage.to(device)                                     # TRL's loss broadcasts it
        t2 = time.perf_counter()
        self.log_rtt_metrics(mode, scores, advantage, mask)
        self.phase_seconds.append({"t_generate": self._t_generate, "t_judge": self._t_judge,
                                   "t_discriminator": t2 - t1,
                                   "t_logprobs": (t1 - t0) - self._t_generate - self._t_judge})
        return output

    def token_relevance(self, inputs, completion_ids, mask, K):
        """w [b, K, T]: the discriminator's relevance of each response token to each of its prompt's constraints."""
        if self.algo == "grpo":
            return None
        if self.relevance_source == "uniform":
            return adv.uniform_relevance(mask, K)                                      # [b, K, T]
        criteria = [[item.description for item in self.rubric_prompts[int(x["prompt_id"])].rubrics] for x in inputs]
        disc_model, disc_tokenizer = self.disc
        w = disc_lib.relevance(disc_model, disc_tokenizer, completion_ids, mask, criteria, K,
                               batch_tokens=self.disc_batch_tokens)                     # [b, K, T]
        if self.relevance_source == "random":
            seed = self.relevance_seed * 7919 + self.state.global_step * 1009 + self.accelerator.process_index
            w = adv.random_relevance(w, mask, torch.Generator(device=w.device).manual_seed(seed))
        return w

    def gather_cube(self, relevance, mask, stop):
        """The whole generation batch's relevance cube and masks, padded to the longest response of any process."""
        relevance = self.accelerator.pad_across_processes(relevance, dim=2)             # [b, K, T']
        mask = self.accelerator.pad_across_processes(mask, dim=1)                       # [b, T']
        stop = self.accelerator.pad_across_processes(stop.long(), dim=1)                # [b, T']
        gather = self.accelerator.gather
        return gather(relevance), gather(mask), gather(stop).bool()                     # [B_all, K, T'], [B_all, T']

    def log_rtt_metrics(self, mode, scores, advantage, mask):
        real = scores != 0
        aon = ((scores > 0) | ~real).all(-1).float()                                    # [b]
        csr = ((scores > 0) & real).sum(-1).float() / real.sum(-1).clamp(min=1)         # [b]
        adv_abs = (advantage.abs() * mask).sum() / mask.sum().clamp(min=1)
        stats = self.accelerator.gather(torch.stack([aon.mean(), csr.mean(), adv_abs]).to(mask.device)[None])
        for name, value in zip(("aon_pass", "csr_pass", "adv_abs"), stats.mean(0).tolist()):
            self._metrics[mode][f"rtt/{name}"].append(value)


def refuse_settings(args: GRPOConfig, algo: str) -> None:
    """Refuse the TRL settings under which a per-token advantage would not mean what RTT means (one line each)."""
    if args.importance_sampling_level != "token":
        raise RefusedSetting(
            f"importance_sampling_level={args.importance_sampling_level!r} (GSPO) is refused: one ratio per response "
            "sees only the sum of its token advantages, which intra-sample normalisation makes ~0, so RTT would "
            "silently become GRPO; use importance_sampling_level='token'")
    if args.loss_type not in TOKEN_LEVEL_LOSSES:
        raise RefusedSetting(f"loss_type={args.loss_type!r} is refused: RTT needs a token-level PPO-clip loss, one "
                             f"of {', '.join(TOKEN_LEVEL_LOSSES)}")
    if algo == "rtt" and args.off_policy_mask_threshold is not None:
        raise RefusedSetting("off_policy_mask_threshold is refused with RTT: it keeps or drops a whole sequence by "
                             "the sign of its advantage, and RTT's advantage has a sign per token")


def load_checked_discriminator(discriminator, policy_tokenizer):
    """(model, tokenizer) of the discriminator, refused (DiscriminatorError / ModelLoadError) when it is not a trained
    discriminator folder or does not share the policy's tokenizer: it reads the policy's token ids as they are."""
    if isinstance(discriminator, (str, Path)):
        disc_lib.check_tokenizer(models.load_tokenizer(str(discriminator)), policy_tokenizer,
                                 where=f"the discriminator {discriminator}")          # cheap: before the weights
        return disc_lib.load_discriminator(discriminator, policy_tokenizer=policy_tokenizer, device="cpu",
                                           dtype=models.default_dtype(models.default_device()))
    model, tokenizer = discriminator
    disc_lib.check_tokenizer(tokenizer, policy_tokenizer)
    return model, tokenizer


# -----------------------------------------------------------------------------
# CLI: train.py's flag names, mapped onto GRPOConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=models.DEFAULT_MODEL, help="policy: alias, hub id or local folder")
    g.add_argument("--train-data", default="data/train.jsonl", help="rubric prompts to train on (JSONL)")
    g.add_argument("--max-constraints", type=int, default=20, help="cap on rubric items per prompt (reference: 20)")
    g.add_argument("--out", default="runs/trl-rtt", help="output folder: checkpoints (checkpoint-N) and logs")
    g = p.add_argument_group("algorithm (paper knobs, as in train.py)")
    g.add_argument("--algo", choices=["rtt", "grpo"], default="rtt", help="rtt: RTT-GRPO; grpo: response level only")
    g.add_argument("--union", choices=["aon", "csr"], default="aon", help="response reward: all-or-nothing or CSR")
    g.add_argument("--norm", choices=["intra", "inter"], default="intra",
                   help="token normalisation: intra-sample (RTT) or inter-sample (baseline; gathers the group's cube)")
    g.add_argument("--combine", choices=["add", "mix"], default="add", help="A_res + l*A_tok, or (1-l)*A_res + l*A_tok")
    g.add_argument("--token-weight", type=float, default=0.5, help="lambda, weight of the token advantage (paper 0.5)")
    g.add_argument("--relevance", choices=["discriminator", "random", "uniform"], default="discriminator",
                   help="token relevance: the discriminator, or an ablation (shuffled positions / every token)")
    g.add_argument("--discriminator", default=None,
                   help="trained discriminator folder (default: the one train.py builds for the policy)")
    g.add_argument("--reference-quirks", action="store_true",
                   help="reproduce the released code's defects (train.py --reference-quirks; gathers the group's cube)")
    g.add_argument("--token-std-floor", type=float, default=None,
                   help=f"floor on sigma in the token normalisations (ours; default {adv.TOKEN_STD_FLOOR}, 0 with "
                        "--reference-quirks); 0 = the paper's formula as printed")
    g.add_argument("--eos-relevance", choices=adv.EOS_MODES, default=None,
                   help="relevance of the stop token: as rated (default), zero (released code) or excluded")
    g.add_argument("--token-credit", choices=adv.CREDIT_MODES, default=None,
                   help="tokens a constraint's normalised reward reaches: only its relevant ones (ours, default) or "
                        "all (the paper as printed; default with --reference-quirks); train.py --token-credit")
    g.add_argument("--group-size", type=int, default=8, help="G, responses per prompt = num_generations (paper 8)")
    g.add_argument("--prompts-per-step", type=int, default=2, help="P, prompts per rollout over all processes (paper 64)")
    g.add_argument("--temperature", type=float, default=0.99, help="sampling temperature (paper 0.99)")
    g.add_argument("--top-p", type=float, default=0.99, help="nucleus sampling top-p (paper 0.99)")
    g.add_argument("--top-k", type=int, default=100, help="top-k sampling (paper 100)")
    g.add_argument("--max-new-tokens", type=int, default=64, help="response length limit = max_completion_length "
                                                                    "(paper 4096)")
    g.add_argument("--max-prompt-tokens", type=int, default=2048, help="longer prompts are dropped from the data")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=5, help="RL steps (rollouts); TRL's max_steps = steps x mini-batches")
    g.add_argument("--lr", type=float, default=1e-6, help="AdamW learning rate (paper 1e-6)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (paper 0)")
    g.add_argument("--warmup-steps", type=int, default=None, help="warm-up in optimizer steps (default 4%% of the run)")
    g.add_argument("--decay", choices=["linear", "cosine", "constant"], default=None,
                   help="after warm-up: linear to 0 (paper), cosine to 0.1*lr, or constant (default: linear on GPU, "
                        "cosine on CPU, as train.py)")
    g.add_argument("--mini-batches", type=int, default=2,
                   help="optimizer steps per rollout = steps_per_generation (reference 2)")
    g.add_argument("--num-iterations", type=int, default=1, help="PPO epochs over each rollout (reference 1)")
    g.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per optimizer step (memory knob: rows per forward = rows per mini-batch / this)")
    g.add_argument("--clip-low", type=float, default=0.2, help="PPO epsilon_low = epsilon (paper 0.2)")
    g.add_argument("--clip-high", type=float, default=0.27, help="PPO epsilon_high, clip-higher (paper 0.27)")
    g.add_argument("--loss-agg", choices=["seq-mean-token-mean", "token-mean"], default="seq-mean-token-mean",
                   help="seq-mean-token-mean = loss_type grpo; token-mean = loss_type dapo")
    g.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clipping = max_grad_norm")
    g.add_argument("--kl", type=float, default=0.0, help="KL coefficient = beta (paper 0: no reference model)")
    g.add_argument("--lora", type=int, default=0, help="LoRA rank (0 = full fine-tuning, the paper's setting)")
    g.add_argument("--grad-checkpointing", choices=["auto", "on", "off"], default="auto",
                   help="activation checkpointing (auto: on with a GPU)")
    g.add_argument("--disc-batch-tokens", type=int, default=None, help="token budget per discriminator forward")
    g.add_argument("--vllm", choices=["off", "colocate", "server"], default="off",
                   help="generate with vLLM: in the training processes (colocate) or a `trl vllm-serve` server")
    g.add_argument("--vllm-server-url", default=None, help="--vllm server: its URL (default http://0.0.0.0:8000)")
    g.add_argument("--vllm-gpu-memory", type=float, default=0.3,
                   help="--vllm colocate: share of each GPU's memory vLLM takes for weights and KV cache")
    g = p.add_argument_group("judge and run")
    g.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint for the LLM judge")
    g.add_argument("--judge-name", default="judge", help="model name sent to --judge-url")
    g.add_argument("--seed", type=int, default=42, help="seed (paper 42)")
    g.add_argument("--save-every", type=int, default=5, help="checkpoint every N RL steps (and at the end)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p.parse_args(argv)


def grpo_config(args, num_processes: int) -> GRPOConfig:
    """train.py's flags as a GRPOConfig (README "Scaling out" has the same table)."""
    rows = args.prompts_per_step * args.group_size                                    # B, responses per rollout
    per_device, left = divmod(rows, num_processes * args.mini_batches * args.grad_accum)
    if left or per_device == 0:
        raise SystemExit(f"error: P*G = {rows} responses per rollout must split evenly into {num_processes} "
                         f"processes x {args.mini_batches} mini-batches x {args.grad_accum} micro-batches")
    optimizer_steps = args.steps * args.mini_batches * args.num_iterations
    cuda = torch.cuda.is_available()
    decay = args.decay or ("linear" if cuda else "cosine")
    schedule = {"linear": "linear", "cosine": "cosine_with_min_lr", "constant": "constant_with_warmup"}[decay]
    return GRPOConfig(
        output_dir=args.out, seed=args.seed, report_to="none", logging_steps=1,
        num_generations=args.group_size,                         # G
        per_device_train_batch_size=per_device,                  # rows per process per forward/backward
        gradient_accumulation_steps=args.grad_accum,
        steps_per_generation=args.mini_batches * args.grad_accum,  # = mini-batches when grad_accum = 1
        num_iterations=args.num_iterations,
        max_steps=optimizer_steps,
        loss_type="grpo" if args.loss_agg == "seq-mean-token-mean" else "dapo",
        epsilon=args.clip_low, epsilon_high=args.clip_high, beta=args.kl,
        importance_sampling_level="token",
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        max_completion_length=args.max_new_tokens,
        learning_rate=args.lr, weight_decay=args.weight_decay, max_grad_norm=args.grad_clip,
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else max(1, round(0.04 * optimizer_steps)),
        lr_scheduler_type=schedule, lr_scheduler_kwargs={"min_lr_rate": 0.1} if decay == "cosine" else None,
        bf16=cuda,                                               # bf16 autocast; TRL loads float32 weights
        gradient_checkpointing=args.grad_checkpointing == "on" or (args.grad_checkpointing == "auto" and cuda),
        **({} if args.vllm == "off" else dict(use_vllm=True, vllm_mode=args.vllm,
                                               vllm_server_base_url=args.vllm_server_url,
                                               vllm_gpu_memory_utilization=args.vllm_gpu_memory)),
        save_strategy="steps", save_steps=args.save_every * args.mini_batches * args.num_iterations,
        save_total_limit=2, shuffle_dataset=True,
    )


def main(argv=None):
    args = parse_args(argv)
    from datasets import Dataset

    from data import DataError, load_rubric_jsonl
    from judge import Judge
    from support.llm import EndpointLLM
    from rollout import encode_prompts

    if args.threads:
        torch.set_num_threads(args.threads)
    # --- checks that need no weights: data, tokenizers, the discriminator's vocabulary
    try:
        prompts = load_rubric_jsonl(args.train_data, max_constraints=args.max_constraints,
                                    llm_judge=bool(args.judge_url))
        tokenizer = models.load_tokenizer(args.model)
        policy_path, gguf = models.resolve(args.model)
        if gguf:
            raise models.ModelLoadError(f"{args.model} is a GGUF file: convert it to a model folder first")
        disc = None
        if args.algo == "rtt" and args.relevance != "uniform":
            disc_path = args.discriminator or discriminator_build.default_dir(args.model)
            if not Path(disc_path).exists():
                raise disc_lib.DiscriminatorError(
                    f"no discriminator at {disc_path}: build one with `python discriminator.py ensure --policy "
                    f"{args.model} --out DIR` and pass --discriminator DIR")
            # Loaded before GRPOConfig exists: under DeepSpeed ZeRO-3 a from_pretrained after it would be sharded
            # across ranks; the discriminator is small and stays whole on every rank (README "Scaling out").
            disc = load_checked_discriminator(disc_path, tokenizer)
    except (DataError, OSError, RuntimeError) as e:  # ModelLoadError, DiscriminatorError: one line, no trace
        raise SystemExit(f"error: {e}")
    _, fits, _ = encode_prompts(tokenizer, [p.messages for p in prompts], args.max_prompt_tokens)
    dataset = Dataset.from_list([{"prompt": prompts[i].messages, "prompt_id": i} for i in fits])

    config = grpo_config(args, int(os.environ.get("WORLD_SIZE", "1")))
    judge = Judge(llm=EndpointLLM(args.judge_url, model=args.judge_name) if args.judge_url else None,
                  max_constraints=args.max_constraints)
    peft_config = None
    if args.lora:
        from peft import LoraConfig
        peft_config = LoraConfig(r=args.lora, lora_alpha=2 * args.lora, target_modules="all-linear")
    try:
        trainer = RTTGRPOTrainer(
            model=policy_path, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
            rubric_prompts=prompts, judge=judge, discriminator=disc, algo=args.algo, union=args.union,
            norm=args.norm, combine=args.combine, token_weight=args.token_weight, relevance=args.relevance,
            reference_quirks=args.reference_quirks, token_std_floor=args.token_std_floor,
            eos_relevance=args.eos_relevance, token_credit=args.token_credit,
            disc_batch_tokens=args.disc_batch_tokens, relevance_seed=args.seed)
    except (RefusedSetting, RuntimeError) as e:
        raise SystemExit(f"error: {e}")
    trainer.train()
    trainer.save_model(args.out)  # a save_pretrained folder: from_pretrained(args.out) loads the policy
    if trainer.accelerator.is_main_process:
        print(f"[trl_rtt] policy saved to {args.out} (checkpoints: {args.out}/checkpoint-N)", flush=True)


if __name__ == "__main__":
    main()
