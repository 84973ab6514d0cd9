"""
Rollout: sample G responses for each of P prompts with Hugging Face `generate` (step 1 of the RTT loop).

All prompts of a step go through one `generate` call (left padding, so every row's last prompt token sits at the
same column and new tokens are appended after it). The result is flat, prompt-major:

    row b = p * G + g          (p: prompt, g: response within its group);  B = P * G
    response_ids   [B, T]      right-padded with the pad id
    response_mask  [B, T]      1 on real response tokens, INCLUDING the EOS that ended the response

Why the EOS matters: the model must learn to stop, so the EOS token gets an advantage like any other token. Many
tokenizers (SmolLM2, Qwen) use the same id for pad and EOS; finding "the first EOS after the prompt" rather than
"every token != pad" is what keeps it in the mask.

Sampling defaults follow the released configs (spec §8): temperature 0.99, top-p 0.99, top-k 100.

    python rollout.py --prompt "Write a haiku about the sea. Do not use any commas." -n 4
"""
import argparse
import time
from dataclasses import dataclass, field

import torch

from support import errors, models


@dataclass
class Rollout:
    prompt_ids: torch.Tensor      # [B, Tp] left-padded prompt tokens (chat template applied)
    prompt_mask: torch.Tensor     # [B, Tp] 1 on real prompt tokens
    response_ids: torch.Tensor    # [B, T] sampled tokens, right-padded with pad id
    response_mask: torch.Tensor   # [B, T] 1 on response tokens incl. the final EOS
    texts: list                   # B decoded responses (special tokens removed)
    prompt_index: list            # B indices into the list of prompts given to generate_rollout
    truncated: torch.Tensor       # [B] bool: hit max_new_tokens without an EOS
    group_size: int               # G
    skipped: list = field(default_factory=list)  # prompt indices skipped because the prompt was too long
    new_tokens: int = 0           # real response tokens generated (sum of response_mask)
    seconds: float = 0.0          # wall time of generation

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)

    @property
    def num_prompts(self) -> int:  # P: prompts that were actually sampled (skipped ones excluded)
        return len(self.prompt_index) // max(self.group_size, 1)


def eos_ids(model, tokenizer) -> list:
    """Every id that ends a response: the tokenizer's EOS plus any the generation config lists (Qwen has two)."""
    ids = {tokenizer.eos_token_id}
    cfg = getattr(model, "generation_config", None)
    extra = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(extra)
    return sorted(i for i in ids if i is not None)


def response_mask_from_ids(response_ids: torch.Tensor, stop_ids: list) -> tuple:
    """Mask every token up to and including the first stop token; rows with none are truncated.

    Example (stop id 2, also the pad id):
        response_ids  [[5, 7, 2, 2, 2],      mask [[1, 1, 1, 0, 0],     truncated [False,
                       [5, 6, 7, 8, 9]]            [1, 1, 1, 1, 1]]                True]
    """
    is_stop = torch.isin(response_ids, torch.tensor(stop_ids, device=response_ids.device))  # [B, T]
    seen_before = (is_stop.long().cumsum(dim=1) - is_stop.long()) > 0                       # a stop strictly earlier
    mask = (~seen_before).long()                                                             # [B, T]
    truncated = ~is_stop.any(dim=1)                                                          # [B]
    return mask, truncated


def encode_prompts(tokenizer, messages_list: list, max_prompt_tokens: int) -> tuple:
    """Chat template + tokenise each prompt; returns (kept token lists, kept indices, skipped indices)."""
    kept, kept_index, skipped = [], [], []
    for i, messages in enumerate(messages_list):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # some transformers versions return a BatchEncoding
            ids = ids["input_ids"]
        if len(ids) > max_prompt_tokens:
            skipped.append(i)
            continue
        kept.append(list(ids))
        kept_index.append(i)
    return kept, kept_index, skipped


@torch.inference_mode()
def generate_rollout(model, tokenizer, messages_list: list, group_size: int = 8, max_new_tokens: int = 256,
                     temperature: float = 0.99, top_p: float = 0.99, top_k: int = 100,
                     max_prompt_tokens: int = 2048, seed: int | None = None) -> Rollout:
    """Sample `group_size` responses for every prompt (a list of chat-message lists) in one batched `generate`.

    temperature 0 means greedy decoding (used by evaluation; with G > 1 all responses of a group are equal).
    """
    pad_id = models.pad_id_of(tokenizer)
    kept, kept_index, skipped = encode_prompts(tokenizer, messages_list, max_prompt_tokens)
    device = next(model.parameters()).device
    if not kept:
        empty = torch.zeros(0, 0, dtype=torch.long, device=device)
        return Rollout(empty, empty, empty, empty, [], [], torch.zeros(0, dtype=torch.bool), group_size, skipped)

    # Left-pad the P prompts, then repeat each G times (prompt-major: row p*G + g).
    Tp = max(len(ids) for ids in kept)
    prompt_ids = torch.full((len(kept), Tp), pad_id, dtype=torch.long)            # [P, Tp]
    prompt_mask = torch.zeros((len(kept), Tp), dtype=torch.long)                  # [P, Tp]
    for p, ids in enumerate(kept):
        prompt_ids[p, Tp - len(ids):] = torch.tensor(ids)
        prompt_mask[p, Tp - len(ids):] = 1
    prompt_ids = prompt_ids.repeat_interleave(group_size, dim=0).to(device)      # [B, Tp]
    prompt_mask = prompt_mask.repeat_interleave(group_size, dim=0).to(device)    # [B, Tp]

    stop_ids = eos_ids(model, tokenizer)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k) if temperature > 0 \
        else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    if seed is not None:
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
                         pad_token_id=pad_id, eos_token_id=stop_ids, **sampling)  # [B, Tp + T]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    model.train(was_training)

    response_ids = out[:, Tp:]                                                    # [B, T]
    response_mask, truncated = response_mask_from_ids(response_ids, stop_ids)     # [B, T], [B]
    response_ids = response_ids.masked_fill(response_mask == 0, pad_id)           # clean padding after the EOS
    texts = tokenizer.batch_decode([row[m.bool()] for row, m in zip(response_ids, response_mask)],
                                   skip_special_tokens=True)
    return Rollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids,
                   response_mask=response_mask, texts=texts,
                   prompt_index=[i for i in kept_index for _ in range(group_size)],
                   truncated=truncated.cpu(), group_size=group_size, skipped=skipped,
                   new_tokens=int(response_mask.sum()), seconds=seconds)


def add_sampling_args(parser: argparse.ArgumentParser, max_new_tokens: int | None = 256,
                      max_new_tokens_help: str = "small default for CPU") -> None:
    """Sampling flags shared by rollout.py and train.py (spec §8 defaults)."""
    parser.add_argument("--temperature", type=errors.non_negative_float, default=0.99,
                        help="sampling temperature (paper: 0.99; 0 = greedy)")
    parser.add_argument("--top-p", type=errors.probability, default=0.99, help="nucleus sampling top-p (paper: 0.99)")
    parser.add_argument("--top-k", type=errors.non_negative_int, default=100, help="top-k sampling (paper: 100; 0 = off)")
    parser.add_argument("--max-new-tokens", type=errors.positive_int, default=max_new_tokens,
                        help=f"response length limit in tokens (paper: 4096; {max_new_tokens_help})")
    parser.add_argument("--max-prompt-tokens", type=errors.positive_int, default=2048,
                        help="prompts longer than this are skipped and counted (paper: 2048)")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Sample G responses to one prompt (the rollout step of RTT).")
    parser.add_argument("--model", default=models.DEFAULT_MODEL,
                        help=f"alias ({', '.join(models.ALIASES)}), hub id, local folder or .gguf file")
    parser.add_argument("--prompt", required=True, help="the user message")
    parser.add_argument("-n", "--group-size", type=errors.positive_int, default=4,
                        help="responses to sample (G; paper: 8)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_sampling_args(parser)
    args = parser.parse_args(argv)
    tokenizer = models.load_tokenizer(args.model)  # models.ModelLoadError: one line, from errors.main_boundary
    model = models.load_causal_lm(args.model)
    r = generate_rollout(model, tokenizer, [[{"role": "user", "content": args.prompt}]], args.group_size,
                         args.max_new_tokens, args.temperature, args.top_p, args.top_k, args.max_prompt_tokens,
                         seed=args.seed)
    if r.skipped:
        raise errors.UsageError(f"the prompt is longer than --max-prompt-tokens {args.max_prompt_tokens}, "
                                "shorten it or raise the limit")
    for g, text in enumerate(r.texts):
        n = int(r.response_mask[g].sum())
        print(f"--- response {g + 1}/{len(r.texts)} ({n} tokens{', truncated' if r.truncated[g] else ''})")
        print(text)
    print(f"--- {r.new_tokens} new tokens in {r.seconds:.1f} s = {r.tokens_per_second:.0f} tokens/s")


if __name__ == "__main__":
    errors.main_boundary(main)
