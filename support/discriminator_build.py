"""
ensure_discriminator: what the trainer calls when a policy has no trained discriminator yet.

It builds one offline, from nothing but the policy and the training prompts, in three logged steps: sample the
policy, make rule labels from the samples (labels/make_labels.py), train and evaluate on held-out prompts, save. With
the CPU setting we measured (CPU_DEFAULTS, README "Discriminator") this fits in well under 30 minutes on 2 cores.
"""
import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch

import data
import discriminator
from labels.make_labels import read_jsonl, reuse_samples, rule_labels, sample_responses, write_jsonl
from support import models
from support.discriminator_metrics import evaluate_rows, format_metrics, split_by_prompt


# The CPU setting measured for the embedded default (README, "Discriminator"): a higher lr than the spec's 9e-6 and
# only the top layers trained, so that labels + training fit in well under 30 minutes on 2 cores.
CPU_DEFAULTS = dict(n_prompts=400, n_samples=128, max_new_tokens=48, lr=4e-4, epochs=2.0, keep_layers=12,
                    train_layers=6, batch_size=8)


def default_dir(policy_name: str) -> Path:
    """Where train.py keeps (and, if missing, builds) the discriminator of a policy: $RTT_CACHE/discriminators/NAME."""
    return models.cache_dir() / "discriminators" / Path(policy_name).name.replace(":", "_")


def ensure_discriminator(policy_name: str, out_dir, *, backbone: str | None = None,
                         prompts_path="data/train.jsonl", n_prompts: int = CPU_DEFAULTS["n_prompts"],
                         n_samples: int = CPU_DEFAULTS["n_samples"],
                         max_new_tokens: int = CPU_DEFAULTS["max_new_tokens"], lr: float = CPU_DEFAULTS["lr"],
                         epochs: float = CPU_DEFAULTS["epochs"], keep_layers: int = CPU_DEFAULTS["keep_layers"],
                         train_layers: int = CPU_DEFAULTS["train_layers"], batch_size: int = CPU_DEFAULTS["batch_size"],
                         eval_frac: float = 0.15, seed: int = 42, device=None, log=print) -> Path:
    """Path of a trained discriminator for `policy_name`: `out_dir` if it already holds one, else build offline
    rule labels from policy samples on the training prompts, train, evaluate on held-out prompts, save, return it.

    n_prompts training prompts are labelled; the policy is sampled on the first n_samples of them and the others
    reuse those samples as their base text (`reuse_samples`). Everything it makes goes to out_dir (samples.jsonl,
    labels.jsonl, the model, rtt_discriminator.json with counts, metrics and timings); an interrupted run resumes
    from the samples / labels it finished.
    """
    out = Path(out_dir)
    if (out / "config.json").exists():
        try:
            cfg = json.loads((out / "config.json").read_text())
        except json.JSONDecodeError:
            cfg = {}
        if cfg.get("rtt_head_trained") is True:
            discriminator.check_tokenizer(models.load_tokenizer(str(out)), models.load_tokenizer(policy_name),
                                          where=f"the discriminator in {out}")
            log(f"[discriminator] using the trained discriminator in {out}")
            return out
    backbone = backbone or models.DEFAULT_DISCRIMINATOR_BACKBONE.get(policy_name, policy_name)
    device = torch.device(device) if device is not None else models.default_device()
    t_all = time.perf_counter()
    log(f"[discriminator] no trained discriminator in {out}: building one for policy {policy_name} "
        f"(backbone {backbone}) from offline rule-based labels")

    policy_tok = models.load_tokenizer(policy_name)
    disc_tok = models.load_tokenizer(backbone)
    discriminator.check_tokenizer(disc_tok, policy_tok, where=f"backbone {backbone}")

    out.mkdir(parents=True, exist_ok=True)
    prompts = data.load_rubric_jsonl(prompts_path)
    chosen = random.Random(seed).sample(prompts, min(n_prompts, len(prompts)))
    counts = {}
    rows, seconds = _label_rows(out, chosen, policy_name, policy_tok, n_samples, max_new_tokens, seed, device, counts,
                                log)

    train_rows, eval_rows = split_by_prompt(rows, eval_frac, seed)
    cfg = discriminator.TrainConfig(lr=lr, epochs=epochs, keep_layers=keep_layers, train_layers=train_layers,
                                    batch_size=batch_size, seed=seed)
    log(f"[discriminator] 3/3 training on {len(train_rows)} rows, evaluating on {len(eval_rows)} "
        "(split by prompt)")
    model = models.load_token_classifier(backbone, device=device)
    enc_counts = {}
    examples = discriminator.encode_rows(disc_tok, train_rows, cfg.max_len, enc_counts)
    history = discriminator.train_discriminator(model, disc_tok, examples, cfg, log=log)
    metrics = evaluate_rows(model, disc_tok, eval_rows) if eval_rows else {}
    if metrics:
        log(format_metrics(metrics))
    info = {"policy": policy_name, "backbone": backbone, "labels": str(out / "labels.jsonl"), "label_counts": counts,
            "train_rows": len(train_rows), "eval_rows": len(eval_rows), "config": asdict(cfg),
            "final_loss": history["loss"][-1] if history["loss"] else None, "metrics": metrics,
            "seconds": {**seconds, "train": history["seconds"], "total": time.perf_counter() - t_all}}
    discriminator.save_discriminator(model, disc_tok, out, info)
    log(f"[discriminator] saved to {out} in {info['seconds']['total'] / 60:.1f} min")
    return out


def _label_rows(out: Path, chosen: list, policy_name: str, policy_tok, n_samples: int, max_new_tokens: int,
                seed: int, device, counts: dict, log) -> tuple:
    """(rows, {"sample": s, "label": s}): steps 1/3 (policy samples) and 2/3 (rule labels) of ensure_discriminator,
    each skipped when out_dir holds its file from an interrupted run (samples.jsonl, labels.jsonl)."""
    t_sample = t_label = 0.0
    if (out / "labels.jsonl").exists():  # a previous, interrupted run: reuse what it finished
        rows = read_jsonl(out / "labels.jsonl")
        log(f"[discriminator] reusing {len(rows)} label rows from {out / 'labels.jsonl'}")
        return rows, {"sample": t_sample, "label": t_label}
    if (out / "samples.jsonl").exists():
        index = {p.id: i for i, p in enumerate(chosen)}
        samples = [(index[r["prompt_id"]], r["response"]) for r in read_jsonl(out / "samples.jsonl")
                   if r["prompt_id"] in index]
        log(f"[discriminator] reusing {len(samples)} policy samples from {out / 'samples.jsonl'}")
    else:
        n_samples = min(n_samples or len(chosen), len(chosen))
        log(f"[discriminator] 1/3 sampling the policy on {n_samples} of the {len(chosen)} training prompts "
            f"({max_new_tokens} new tokens each)")
        t0 = time.perf_counter()
        policy = models.load_causal_lm(policy_name, device=device)
        samples = sample_responses(policy, policy_tok, chosen[:n_samples], max_new_tokens=max_new_tokens, seed=seed)
        del policy
        t_sample = time.perf_counter() - t0
        write_jsonl([{"prompt_id": chosen[pi].id, "response": t} for pi, t in samples], out / "samples.jsonl")
    log("[discriminator] 2/3 repairing each sample to meet all its constraints, then breaking one at a time "
        "(every edit verified by the rule checkers)")
    t0 = time.perf_counter()
    rows = rule_labels(chosen, reuse_samples(samples, len(chosen)), policy_tok, counts)
    t_label = time.perf_counter() - t0
    write_jsonl(rows, out / "labels.jsonl")
    log(f"[discriminator] {len(rows)} label rows -> {out / 'labels.jsonl'}  ({json.dumps(counts)})")
    return rows, {"sample": t_sample, "label": t_label}
