"""
Everything train.py does before its first step: check the settings (cheap checks first, before any model loads),
take a resumed run's settings, read the prompts, load the policy (LoRA, the KL reference, activation checkpointing),
the judge and its LLM backend, the discriminator (built for the policy if missing), the optimizer and its schedule,
and restore a checkpoint. The order of the steps is part of the behaviour: the seeds are set before the first model
loads, and the run folder is emptied (--overwrite) only once everything has loaded.
"""
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import advantages as adv
import discriminator
from data import load_rubric_jsonl
from judge import Judge
from support import errors, models
from support.checkpoints import (clear_run, drop_metrics_after, find_checkpoint, load_trainer_state,
                                 refuse_to_overwrite_a_run, set_rng_state)
from support.discriminator_build import default_dir, ensure_discriminator
from support.llm import EndpointLLM, LocalLLM
from support.schedule import lr_multiplier
from support.train_flags import check_settings, fill_run_defaults, given_flags, settings_for_resume


def log(msg: str) -> None:
    print(f"[train] {msg}", flush=True)


@dataclass
class Run:
    """What the loop works with."""
    args: object
    out: Path
    device: torch.device
    amp: object                  # autocast context: bf16 on GPU, off on CPU
    model: object                # the policy (a peft model with --lora)
    ref_model: object            # frozen reference for --kl > 0 without LoRA, else None
    tokenizer: object
    judge: Judge
    disc: object                 # the discriminator (None for GRPO and uniform relevance)
    train_prompts: list
    eval_prompts: list
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    start_step: int


def settings(args, argv, parser):
    """The run's settings and folder: a resumed run's own, device defaults filled in, impossible values refused."""
    resume_ckpt = find_checkpoint(args.resume) if args.resume else None
    trainer_state = None
    if resume_ckpt is not None:  # the run continues with its own settings; see settings_for_resume
        trainer_state = load_trainer_state(resume_ckpt)
        given = given_flags(parser, argv)
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
    # flags left unset: ours, or under --reference-quirks the released behaviour (no floor, EOS relevance 0, all tokens)
    args.token_std_floor, args.eos_relevance, args.token_credit = adv.token_term_defaults(
        args.reference_quirks, args.token_std_floor, args.eos_relevance, args.token_credit)
    check_settings(args)
    return args, out, device, resume_ckpt, trainer_state


def load_prompts(args) -> tuple:
    """(training prompts, held-out prompts for the periodic evaluation)."""
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
    return train_prompts, eval_prompts


def load_policy(args, device, resume_ckpt) -> tuple:
    """(policy, frozen reference or None). Master weights stay float32 (a 1e-6 update vanishes in bf16 weights);
    forward passes run under bf16 autocast on GPU."""
    policy_src = str(resume_ckpt) if resume_ckpt and not args.lora else args.model
    model = models.load_causal_lm(policy_src, device=device, dtype=torch.float32)
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
    return model, ref_model


def build_judge(args, device) -> Judge:
    """Rule checkers, plus an LLM judge (endpoint or local model) for constraints without one."""
    judge_llm = None
    if args.judge_url:
        judge_llm = EndpointLLM(args.judge_url, model=args.judge_name)
    elif args.judge_model:
        judge_llm = LocalLLM(models.load_causal_lm(args.judge_model, device=device),
                             models.load_tokenizer(args.judge_model))
    return Judge(llm=judge_llm, max_constraints=args.max_constraints)


def load_relevance_model(args, tokenizer, device):
    """The discriminator: --discriminator, else the one built for this policy in the cache (built now if missing)."""
    disc_path = args.discriminator or ensure_discriminator(args.model, default_dir(args.model), device=device, log=log)
    try:
        disc, _ = discriminator.load_discriminator(disc_path, policy_tokenizer=tokenizer, device=device)
    except discriminator.DiscriminatorError as e:
        raise errors.UsageError(str(e)) from None
    log(f"discriminator: {disc_path}")
    return disc


def prepare(args, argv, parser) -> Run:
    """Check, load and restore everything; see the module docstring for the order."""
    args, out, device, resume_ckpt, trainer_state = settings(args, argv, parser)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_prompts, eval_prompts = load_prompts(args)
    use_disc = args.algo == "rtt" and args.relevance in ("discriminator", "random")
    try:
        tokenizer = models.load_tokenizer(args.model)
        if use_disc and args.discriminator:  # the vocabulary check needs only the tokenizer: before any weights
            discriminator.check_tokenizer(models.load_tokenizer(args.discriminator), tokenizer,
                                          where=f"the discriminator {args.discriminator}")
    except RuntimeError as e:  # ModelLoadError, DiscriminatorError: one clear line, no stack trace
        raise errors.UsageError(str(e)) from None

    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    model, ref_model = load_policy(args, device, resume_ckpt)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    judge = build_judge(args, device)
    disc = load_relevance_model(args, tokenizer, device) if use_disc else None
    if args.overwrite and resume_ckpt is None:  # every model loaded: only now may the old run go
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    total = args.steps * args.mini_batches                                  # optimizer steps of the whole run
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, round(0.04 * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_multiplier(i, warmup, total, args.decay))
    start_step = 0
    if trainer_state is not None:
        optimizer.load_state_dict(trainer_state["optimizer"])
        scheduler.load_state_dict(trainer_state["scheduler"])
        set_rng_state(trainer_state["rng"])
        start_step = trainer_state["step"]
        drop_metrics_after(out / "metrics.jsonl", start_step)   # rows of steps the checkpoint does not hold
        log(f"resumed from {resume_ckpt} at step {start_step}")
    return Run(args, out, device, amp, model, ref_model, tokenizer, judge, disc, train_prompts, eval_prompts, params,
               optimizer, scheduler, start_step)
