"""
Tiny models built in code, so tests need no hub and run in seconds.

    tok = tiny_tokenizer()                 # byte-level BPE (vocab ~400) with a ChatML template, eos = pad = <|im_end|>
    lm = tiny_causal_lm(tok)               # 2-layer Qwen2, random weights
    disc = tiny_token_classifier(tok)      # same backbone with a one-logit-per-token head
    path = tiny_model_dir(tmp_path)        # both saved as a folder usable as --model PATH
"""
from functools import lru_cache
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "Write a short email to your manager about the project deadline.",
    "The quick brown fox jumps over the lazy dog. Include the word robot at least twice.",
    "Answer in under 100 words. Your response should contain 3 paragraphs separated by ***.",
    "P.S. Thanks for reading! My answer is yes. Highlight at least 2 sections with markdown, i.e. *highlighted*.",
    "Identify which tokens in the response are relevant to the criteria.\n\nCriteria: \n\nResponse:\n\n",
    "system user assistant hello world poem story list summary advice code comment explanation",
    "0123456789 ,.;:!?'\"()[]{}<>-_*#@/\\|+=%&$ \n\t",
]


@lru_cache(maxsize=None)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(_CORPUS * 20, trainer=trainer)
    return tk.to_str()


def tiny_tokenizer():
    """A real fast tokenizer (byte-level BPE: any text round-trips) with SmolLM's conventions: pad == eos."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
                                  bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
                                  unk_token="<|endoftext|>", padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _config(tokenizer, **kw):
    from transformers import Qwen2Config
    return Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, **kw)


def tiny_causal_lm(tokenizer, seed: int = 0):
    from transformers import Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(_config(tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


def tiny_token_classifier(tokenizer, seed: int = 0):
    from transformers import Qwen2ForTokenClassification
    torch.manual_seed(seed)
    return Qwen2ForTokenClassification(_config(tokenizer, num_labels=1)).eval()


def tiny_model_dir(root: Path, seed: int = 0) -> Path:
    """Save a tiny policy + tokenizer as a folder that every script accepts as --model PATH."""
    path = Path(root) / "tiny-policy"
    if not (path / "config.json").exists():
        tok = tiny_tokenizer()
        tiny_causal_lm(tok, seed).save_pretrained(path)
        tok.save_pretrained(path)
    return path
