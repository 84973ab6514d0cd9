"""
The discriminator's command line: `python discriminator.py label | train | eval | show | ensure` (discriminator.py
calls `main` here; flags and outputs are documented by --help and in the README, "Discriminator").

    python discriminator.py ensure --policy smollm2-135m --out runs/disc-smollm2  # labels + train + eval in one go
    python discriminator.py label --n-prompts 400 --n-samples 128 --out runs/disc/labels.jsonl   # offline rules
    python discriminator.py train --labels runs/disc/labels.jsonl --out runs/disc/model \\
        --lr 4e-4 --keep-layers 12 --train-layers 6                       # the CPU setting; spec: --lr 9e-6
    python discriminator.py eval  --model runs/disc/model --labels runs/disc/labels.jsonl   # held-out prompts
    python discriminator.py show  --model runs/disc/model --criterion "Include keywords ['cabin'] in the response." \\
        --text "We stayed in a small cabin by the lake."
    python discriminator.py label --source editor --editor-url http://127.0.0.1:8000/v1 --editor-name MODEL ...
    python discriminator.py label --source extract --editor-model Qwen2.5-1.5B ...     # greedy-extraction baseline

`train` defaults to the spec's hyper-parameters, `ensure` to the CPU setting we measured (CPU_DEFAULTS, README):
the spec's 9e-6 x 2 epochs is far too little for a few hundred rule-built examples on a CPU. `--threads 1` helps on a
shared CPU.
"""
import argparse
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import data
import discriminator
from labels import rule_edits
from labels.llm_labels import extraction_labels, llm_edit_labels
from labels.make_labels import (checked_items, read_label_rows, read_response_rows, reuse_samples, rule_labels,
                                sample_responses, tokenize_response, write_jsonl)
from support import errors, models
from support.discriminator_build import CPU_DEFAULTS, ensure_discriminator
from support.discriminator_metrics import evaluate_rows, format_metrics, split_by_prompt
from support.llm import EndpointLLM, LocalLLM


# ---------------------------------------------------------------------------------------------------------------
# show: a response with each token shaded by its relevance (ANSI 24-bit background colours)

def shade(tokens: list, probs: list, color: bool = True) -> str:
    """Tokens on a background from dark (0) to bright red (1); without colour, "token[0.87]" for p >= 0.5."""
    out = []
    for tok, p in zip(tokens, probs):
        if color:
            r, g, b = int(40 + 215 * p), int(40 + 40 * (1 - p)), 40
            out.append(f"\x1b[48;2;{r};{g};{b}m\x1b[97m{tok}\x1b[0m")
        else:
            out.append(f"{tok}[{p:.2f}]" if p >= 0.5 else tok)
    return "".join(out)


def _token_strings(tokenizer, ids: list) -> list:
    """Each token's text (decoding one id at a time; a byte split inside a character shows as '?')."""
    return [tokenizer.decode([i]).replace("\ufffd", "?") or tokenizer.convert_ids_to_tokens(i) for i in ids]


# ---------------------------------------------------------------------------------------------------------------
# The subcommands

def _llm_from_args(args):
    if args.editor_url:
        return EndpointLLM(args.editor_url, args.editor_name, max_tokens=args.editor_max_tokens)
    if args.editor_model:
        return LocalLLM(args.editor_model, max_new_tokens=args.editor_max_tokens)
    raise errors.UsageError("--source editor/extract needs an editor LLM, pass --editor-model NAME or --editor-url URL")


def cmd_label(args):
    prompts = data.load_rubric_jsonl(args.prompts)
    tok = models.load_tokenizer(args.policy)
    if args.responses:  # earlier samples (the .samples.jsonl a previous run wrote, or any responses)
        by_id = {p.id: p for p in prompts}
        given = [r for r in read_response_rows(args.responses) if r["prompt_id"] in by_id]
        given = given[:args.n_prompts * args.samples_per_prompt]
        chosen = list({r["prompt_id"]: by_id[r["prompt_id"]] for r in given}.values())
        index = {p.id: i for i, p in enumerate(chosen)}
        samples = [(index[r["prompt_id"]], r["response"]) for r in given]
    else:
        chosen = random.Random(args.seed).sample(prompts, min(args.n_prompts, len(prompts)))
        policy = models.load_causal_lm(args.policy, device=args.device)
        t0 = time.perf_counter()
        n_samples = min(args.n_samples or len(chosen), len(chosen))
        samples = sample_responses(policy, tok, chosen[:n_samples], args.samples_per_prompt, args.max_new_tokens,
                                   seed=args.seed)
        path = Path(args.out).with_suffix(".samples.jsonl")
        write_jsonl([{"prompt_id": chosen[pi].id, "response": t} for pi, t in samples], path)
        print(f"{len(samples)} policy samples in {time.perf_counter() - t0:.0f} s -> {path} (reuse: --responses)")
        samples = reuse_samples(samples, len(chosen))
    counts, t0 = {}, time.perf_counter()
    if args.source == "rule":
        rows = rule_labels(chosen, samples, tok, counts, max_words=args.max_words)
    else:
        llm = _llm_from_args(args)
        samples = [(pi, text) for pi, text, *_ in samples]
        if args.source == "editor":
            if not args.editor_writes:  # the rule repair gives responses that meet every constraint
                fixed = []
                for pi, text in samples:
                    items = [(i, kw) for _, i, kw in checked_items(chosen[pi])]
                    r = rule_edits.repair(rule_edits.clean_base(text, args.max_words), items,
                                       rule_edits.checker_for(chosen[pi].instruction))
                    if r is not None:
                        fixed.append((pi, r))
                samples = fixed
            rows = llm_edit_labels(llm, chosen, samples, tok, counts, write=args.editor_writes)
        else:
            rows = extraction_labels(llm, chosen, samples, tok, counts)
    write_jsonl(rows, args.out)
    fam = {}
    for r in rows:
        fam[r["family"]] = fam.get(r["family"], 0) + 1
    print(f"{len(rows)} label rows -> {args.out} in {time.perf_counter() - t0:.0f} s")
    print("counts:", json.dumps(counts, indent=1))
    print("rows per family:", json.dumps(dict(sorted(fam.items())), indent=1))


def _train_config(args) -> discriminator.TrainConfig:
    return discriminator.TrainConfig(
        lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, micro_batch_tokens=args.micro_batch_tokens,
        warmup=args.warmup, min_lr_ratio=args.min_lr_ratio, beta1=args.beta1, beta2=args.beta2,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, max_len=args.max_len, train_layers=args.train_layers,
        keep_layers=args.keep_layers, max_minutes=args.max_minutes, seed=args.seed)


def cmd_train(args):
    backbone = args.backbone or models.DEFAULT_DISCRIMINATOR_BACKBONE.get(args.policy, args.policy)
    tok = models.load_tokenizer(backbone)
    discriminator.check_tokenizer(tok, models.load_tokenizer(args.policy), where=f"backbone {backbone}")
    rows = read_label_rows(args.labels)
    train_rows, eval_rows = split_by_prompt(rows, args.eval_frac, args.seed)
    print(f"{len(rows)} rows: {len(train_rows)} train / {len(eval_rows)} eval, split by prompt")
    cfg = _train_config(args)
    torch.manual_seed(args.seed)   # the new head is drawn here: the same --seed gives the same discriminator
    model = models.load_token_classifier(backbone, device=args.device)
    counts = {}
    examples = discriminator.encode_rows(tok, train_rows, cfg.max_len, counts)
    history = discriminator.train_discriminator(model, tok, examples, cfg)
    first = float(np.mean(history["loss"][:5])) if history["loss"] else float("nan")
    last = float(np.mean(history["loss"][-5:])) if history["loss"] else float("nan")
    print(f"trained {history['steps']} steps in {history['seconds']:.0f} s; loss {first:.4f} -> {last:.4f}")
    metrics = evaluate_rows(model, tok, eval_rows) if eval_rows else {}
    if metrics:
        print(format_metrics(metrics))
    discriminator.save_discriminator(model, tok, args.out, {
        "backbone": backbone, "policy": args.policy, "labels": args.labels, "config": asdict(cfg),
        "encode_counts": counts, "train_rows": len(train_rows), "eval_rows": len(eval_rows), "loss_first5": first,
        "loss_last5": last, "metrics": metrics, "train_seconds": history["seconds"],
        "stopped_early": history["stopped_early"]})
    print(f"saved to {args.out}")


def cmd_eval(args):
    model, tok = discriminator.load_discriminator(args.model, device=args.device)
    rows = read_label_rows(args.labels)
    if args.split != "all":
        rows = split_by_prompt(rows, args.eval_frac, args.seed)[0 if args.split == "train" else 1]
    t0 = time.perf_counter()
    metrics = evaluate_rows(model, tok, rows, args.batch_tokens or None)
    print(f"{len(rows)} rows ({args.split} split) scored in {time.perf_counter() - t0:.1f} s")
    print(format_metrics(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))


def cmd_show(args):
    model, tok = discriminator.load_discriminator(args.model, device=args.device, allow_untrained=args.allow_untrained)
    if args.labels:
        rows = read_label_rows(args.labels)
        if not -len(rows) <= args.index < len(rows):
            raise errors.UsageError(f"--index {args.index} is past the {len(rows)} rows of {args.labels}, "
                                    "pass a smaller --index")
        row = rows[args.index]
        criterion, ids, gold = row["criterion"], row.get("ids") or tokenize_response(tok, row["text"])[0], row["labels"]
    else:
        if not (args.criterion and args.text is not None):
            raise errors.UsageError("show needs a text to shade, pass --criterion and --text, or --labels FILE "
                                    "--index I")
        criterion, ids, gold = args.criterion, tokenize_response(tok, args.text)[0], None
    probs = discriminator.score_pairs(model, tok, [(criterion, ids)])[0].tolist()
    strings = _token_strings(tok, ids)
    color = not args.no_color and sys.stdout.isatty() or args.color
    print(f"Criterion: {criterion}")
    print(shade(strings, probs, color))
    if gold is not None:
        print("\nlabels:")
        print(shade(strings, [float(g) for g in gold], color))
    print(f"\n{len(ids)} tokens, {sum(p >= 0.5 for p in probs)} at relevance >= 0.5 (dark = 0, red = 1)")


def main(argv=None):
    ap = argparse.ArgumentParser(description="RTT token-level relevance discriminator (spec §4): "
                                             "label | train | eval | show | ensure")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--seed", type=int, default=42, help="seed of prompt choice, sampling, split and training")
        p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
        p.add_argument("--threads", type=errors.non_negative_int, default=0,
                       help="torch CPU threads (0: torch's default). On a CPU shared with other jobs, 1 thread per "
                            "process is often several times faster than oversubscribed threads")

    p = sub.add_parser("label", help="build token labels (one JSONL row per response x constraint)")
    common(p)
    p.add_argument("--policy", default="smollm2-135m", help="policy whose samples are labelled (its tokenizer too)")
    p.add_argument("--prompts", default="data/train.jsonl", help="rubric prompts (data.py format)")
    p.add_argument("--n-prompts", type=int, default=300, help="prompts drawn from --prompts")
    p.add_argument("--samples-per-prompt", type=int, default=1, help="policy samples per prompt")
    p.add_argument("--n-samples", type=int, default=0,
                   help="sample the policy on only this many of the prompts; the others reuse those samples "
                        "(0: sample every prompt)")
    p.add_argument("--max-new-tokens", type=errors.positive_int, default=48, help="length of each policy sample")
    p.add_argument("--max-words", type=int, default=60, help="words of the sample kept as the base of a response")
    p.add_argument("--responses", default=None, help="JSONL {prompt_id, response} to use instead of sampling")
    p.add_argument("--source", choices=["rule", "editor", "extract"], default="rule",
                   help="rule: offline minimal modification (rule_edits.py); editor: the paper's minimal modification "
                        "by an editor LLM; extract: the paper's greedy-extraction baseline")
    p.add_argument("--editor-model", default=None, help="local editor/extractor LLM (alias, folder or hub id)")
    p.add_argument("--editor-url", default=None, help="OpenAI-compatible endpoint of the editor LLM (.../v1)")
    p.add_argument("--editor-name", default="default", help="model name the endpoint expects")
    p.add_argument("--editor-max-tokens", type=int, default=512, help="new tokens per editor reply")
    p.add_argument("--editor-writes", action="store_true",
                   help="the editor LLM writes the all-constraints-met response (paper); default: rule repair")
    p.add_argument("--out", default="runs/disc/labels.jsonl", help="label JSONL to write (samples go next to it)")
    p.set_defaults(fn=cmd_label)

    p = sub.add_parser("train", help="fine-tune a backbone + one-logit head with token BCE")
    common(p)
    d = discriminator.TrainConfig()
    p.add_argument("--labels", required=True, help="label JSONL from `label`")
    p.add_argument("--policy", default="smollm2-135m", help="the policy whose tokenizer the discriminator must share")
    p.add_argument("--backbone", default=None, help="discriminator backbone (default: the policy's, support/models.py)")
    p.add_argument("--out", required=True, help="folder for save_pretrained")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (spec §4: 9e-6)")
    p.add_argument("--epochs", type=float, default=d.epochs, help="epochs (spec §4: 2)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per optimizer step")
    p.add_argument("--micro-batch-tokens", type=int, default=d.micro_batch_tokens,
                   help="padded tokens per forward/backward (memory lever; gradients accumulate)")
    p.add_argument("--warmup", type=float, default=d.warmup, help="warm-up fraction (spec §4: 0.03)")
    p.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help="cosine floor / lr (spec §4: 0.1)")
    p.add_argument("--beta1", type=float, default=d.beta1, help="Adam beta1 (spec §4: 0.9)")
    p.add_argument("--beta2", type=float, default=d.beta2, help="Adam beta2 (spec §4: 0.95)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay (spec: none)")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="gradient-norm clip (spec §4: 1.0)")
    p.add_argument("--max-len", type=int, default=d.max_len, help="max template + response tokens")
    p.add_argument("--train-layers", type=int, default=d.train_layers,
                   help="train only the top N decoder layers + head (0 = all; CPU lever, ours)")
    p.add_argument("--keep-layers", type=int, default=d.keep_layers,
                   help="keep only the bottom N decoder layers of the backbone (0 = all; smaller, faster; ours)")
    p.add_argument("--max-minutes", type=float, default=d.max_minutes, help="stop training after this long (0: off)")
    p.add_argument("--eval-frac", type=float, default=0.15, help="fraction of PROMPTS held out for evaluation")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="token accuracy / precision / recall / F1 at 0.5 / AUROC, per family")
    common(p)
    p.add_argument("--model", required=True, help="a folder saved by `train`")
    p.add_argument("--labels", required=True, help="label JSONL from `label` (the one the model was trained on)")
    p.add_argument("--split", choices=["eval", "train", "all"], default="eval",
                   help="which side of the by-prompt split (same --eval-frac / --seed as train)")
    p.add_argument("--eval-frac", type=float, default=0.15, help="fraction of prompts held out (as in train)")
    p.add_argument("--batch-tokens", type=int, default=0, help="padded tokens per inference batch (0: 2048 on CPU, "
                   "16384 on GPU)")
    p.add_argument("--json", default=None, help="also write the metrics here")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("show", help="print a response with each token shaded by its relevance to a criterion")
    common(p)
    p.add_argument("--model", required=True, help="a folder saved by `train`")
    p.add_argument("--criterion", default=None, help="the constraint text (as in a rubric)")
    p.add_argument("--text", default=None, help="the response text")
    p.add_argument("--labels", default=None, help="or show row --index of a label file, with its labels")
    p.add_argument("--index", type=int, default=0, help="which row of --labels to show (0 = the first)")
    p.add_argument("--color", action="store_true", help="force ANSI colours")
    p.add_argument("--no-color", action="store_true", help="mark tokens with p >= 0.5 as token[p] instead")
    p.add_argument("--allow-untrained", action="store_true", help="accept a backbone without a trained head")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("ensure", help="label + train + eval in one go (what train.py calls), unless --out has one")
    common(p)
    p.add_argument("--policy", default="smollm2-135m", help="the policy whose tokenizer the discriminator shares")
    p.add_argument("--out", required=True, help="folder of the discriminator (kept as is if it holds one)")
    p.add_argument("--backbone", default=None, help="discriminator backbone (default: the policy's, support/models.py)")
    p.add_argument("--prompts", default="data/train.jsonl", help="rubric prompts to label (data.py format)")
    p.add_argument("--n-prompts", type=int, default=CPU_DEFAULTS["n_prompts"], help="training prompts to label")
    p.add_argument("--n-samples", type=int, default=CPU_DEFAULTS["n_samples"],
                   help="prompts the policy is sampled on (the other prompts reuse these samples)")
    p.add_argument("--max-new-tokens", type=errors.positive_int, default=CPU_DEFAULTS["max_new_tokens"],
                   help="policy sample length")
    p.add_argument("--lr", type=float, default=CPU_DEFAULTS["lr"], help="peak lr (CPU setting; spec: 9e-6)")
    p.add_argument("--epochs", type=float, default=CPU_DEFAULTS["epochs"], help="epochs (spec: 2)")
    p.add_argument("--keep-layers", type=int, default=CPU_DEFAULTS["keep_layers"],
                   help="bottom backbone layers kept (0 = all)")
    p.add_argument("--train-layers", type=int, default=CPU_DEFAULTS["train_layers"], help="top layers trained")
    p.set_defaults(fn=lambda a: ensure_discriminator(
        a.policy, a.out, backbone=a.backbone, prompts_path=a.prompts, n_prompts=a.n_prompts, n_samples=a.n_samples,
        max_new_tokens=a.max_new_tokens, lr=a.lr, epochs=a.epochs, keep_layers=a.keep_layers,
        train_layers=a.train_layers, seed=a.seed, device=a.device))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.fn(args)
