"""
Measurement: where RTT's token advantage lands on the base policy's own samples: on the tokens the discriminator marks
relevant to some constraint, or on the others. Intra-sample normalisation subtracts each (response, constraint) row's
mean, so a failed constraint (s = -1) gives its irrelevant tokens a small *positive* advantage and a met one a small
negative one; when most constraints fail, the tokens that matter to none of them are pushed up.

    python experiments/token_credit.py --data runs/diagnosis/data/train-short64.jsonl --prompts 32 --threads 1 \\
        --out results/diagnosis/token_credit.json

It samples G responses for a seeded choice of prompts (the training sampler, --max-new-tokens), judges them, rates
every (response, constraint) with the trained discriminator, computes A_tok exactly as train.py does for RTT (intra,
std floor, EOS as rated), and prints, per value of (constraints failed - constraints met) in a response: responses,
mean A_tok on "irrelevant" tokens (relevance below --threshold for every constraint), on relevant tokens, on EOS.

With --by-token N it also asks *which tokens* each token term pushes up: for the paper's credit (every token), ours
(relevant tokens only) and ours with random relevance (train.py --relevance random), the N vocabulary tokens with the
highest mean A_tok over their occurrences in the samples (at least --min-count of them). A token whose every
occurrence is pushed up, in any context, is one a policy can learn to repeat.

    python experiments/token_credit.py --data data/train-short.jsonl --prompts 24 --by-token 8 --threads 1 \\
        --out results/short/token_credit.json
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import advantages as adv  # noqa: E402
import discriminator  # noqa: E402
from data import load_rubric_jsonl  # noqa: E402
from judge import Judge  # noqa: E402
from rollout import generate_rollout  # noqa: E402
from support import discriminator_build, models  # noqa: E402


def credit_by_balance(scores, relevance, mask, stop, threshold: float) -> dict:
    """Mean A_tok on irrelevant / relevant / stop tokens, per (failed - met) of a response.

    scores [B, K] (+1 / -1 / 0 padded), relevance [B, K, T], mask and stop [B, T] (bool). Returns
    {balance: {"responses", "irrelevant", "relevant", "eos"}} (means over tokens; None where there are none).
    """
    normed = adv.intra_sample_token_norm(adv.token_rewards(scores, relevance), mask)     # [B, K, T]
    a_tok = adv.token_advantages(normed, scores)                                          # [B, T]
    real = scores != 0                                                                    # [B, K]
    relevant = ((relevance >= threshold) & real[..., None]).any(1) & mask                 # [B, T]
    irrelevant = ~relevant & mask & ~stop                                                 # [B, T]
    balance = ((scores < 0) & real).sum(-1) - ((scores > 0) & real).sum(-1)               # [B]
    sums = defaultdict(lambda: defaultdict(float))
    for b in range(scores.shape[0]):
        cell = sums[int(balance[b])]
        cell["responses"] += 1
        for name, where in (("irrelevant", irrelevant[b]), ("relevant", relevant[b] & ~stop[b]),
                            ("eos", stop[b] & mask[b])):
            cell[name + "_sum"] += float(a_tok[b][where].sum())
            cell[name + "_n"] += int(where.sum())
    return {k: {"responses": int(c["responses"]),
                **{n: (c[n + "_sum"] / c[n + "_n"] if c[n + "_n"] else None) for n in ("irrelevant", "relevant", "eos")},
                **{n + "_tokens": int(c[n + "_n"]) for n in ("irrelevant", "relevant", "eos")}}
            for k, c in sorted(sums.items())}


def credit_by_token(token_ids: torch.Tensor, token_adv: torch.Tensor, min_count: int = 5) -> list:
    """[(token id, occurrences, mean A_tok)] of every token id seen at least min_count times, highest mean first.

    token_ids and token_adv: [N], the real response tokens of all samples and their A_tok, flattened.

        >>> credit_by_token(torch.tensor([7, 7, 3, 3, 3, 9]), torch.tensor([0.5, 0.3, -0.1, 0.1, -0.3, 2.0]), 2)
        [(7, 2, 0.4), (3, 3, -0.1)]
    """
    ids = token_ids.long()                                                                # [N]
    counts = torch.bincount(ids)                                                          # [V]
    sums = torch.zeros(counts.shape[0], dtype=torch.float64).index_add_(0, ids, token_adv.double())   # [V]
    seen = (counts >= min_count).nonzero().flatten().tolist()
    return sorted(((i, int(counts[i]), round(float(sums[i] / counts[i]), 6)) for i in seen), key=lambda r: -r[2])


# token terms compared by --by-token: (name, relevance, credit), as train.py's --relevance and --token-credit
TOKEN_TERMS = (("paper credit (every token)", "discriminator", "all"),
               ("relevant tokens only (train.py)", "discriminator", "relevant"),
               ("relevant only, random relevance", "random", "relevant"))


def token_terms(scores, relevance, mask, stop, group_size: int, generator) -> list:
    """A_tok [B, T] of each of TOKEN_TERMS for one batch, as train.py computes it (AON, intra, std floor, EOS as
    rated). scores [B, K], relevance [B, K, T], mask and stop [B, T]; rows are groups of group_size responses."""
    B, K, T = relevance.shape
    P, G = B // group_size, group_size
    out = []
    for _, source, credit in TOKEN_TERMS:
        w = relevance.view(P, G, K, T)
        if source == "random":
            w = adv.random_relevance(w, mask.view(P, G, T), generator)                   # [P, G, K, T]
        _, parts = adv.rtt_advantages(scores.view(P, G, K), w, mask.view(P, G, T), stop_mask=stop.view(P, G, T),
                                      credit=credit)
        out.append(parts["token_adv"].reshape(B, T))                                      # [B, T]
    return out


def right_pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """x with its last dimension padded with zeros (False) up to n."""
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    ap.add_argument("--model", default=models.DEFAULT_MODEL, help="policy (alias, folder or .gguf)")
    ap.add_argument("--discriminator", default=None, help="discriminator folder (default: the one train.py builds)")
    ap.add_argument("--data", default="data/train-short.jsonl", help="rubric prompts (JSONL)")
    ap.add_argument("--prompts", type=int, default=32, help="prompts (a seeded choice)")
    ap.add_argument("--group-size", type=int, default=8, help="responses per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="response length cap")
    ap.add_argument("--threshold", type=float, default=0.5, help="relevance from which a token counts as relevant")
    ap.add_argument("--by-token", type=int, default=0,
                    help="also list, per token term, the N tokens with the highest mean A_tok (0: no)")
    ap.add_argument("--min-count", type=int, default=10, help="--by-token: occurrences a token needs to be listed")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt choice and the sampler")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = load_rubric_jsonl(args.data)
    chosen = np.random.default_rng(args.seed).permutation(len(prompts))[:args.prompts]
    prompts = [prompts[i] for i in sorted(chosen)]
    tokenizer, policy = models.load_tokenizer(args.model), models.load_causal_lm(args.model, device="cpu").eval()
    disc_dir = args.discriminator or discriminator_build.default_dir(args.model)
    disc, _ = discriminator.load_discriminator(disc_dir, policy_tokenizer=tokenizer, device="cpu")
    rows, by_term = [], [[] for _ in TOKEN_TERMS]                       # by_term: per token term, (ids, A_tok)
    generator = torch.Generator().manual_seed(args.seed)
    for i in range(0, len(prompts), 4):                                  # 4 prompts x G responses per batch
        batch = prompts[i:i + 4]
        rollout = generate_rollout(policy, tokenizer, [p.messages for p in batch], args.group_size,
                                   args.max_new_tokens, seed=args.seed + i)
        kept = [batch[j] for j in sorted(set(rollout.prompt_index))]
        index = [b // args.group_size for b in range(len(rollout.texts))]
        scores, _ = Judge().score(kept, rollout.texts, index)                              # [B, K]
        criteria = [[item.description for item in kept[j].rubrics] for j in index]
        with torch.no_grad():
            w = discriminator.relevance(disc, tokenizer, rollout.response_ids, rollout.response_mask, criteria,
                                        scores.shape[1])                                    # [B, K, T]
        stop = adv.stop_token_mask(rollout.response_ids, rollout.response_mask, tokenizer.all_special_ids)
        rows.append((scores.float(), w.float(), rollout.response_mask.bool(), stop.bool()))
        if args.by_token:
            real = rollout.response_mask.bool()                                             # [B, T]
            for term, a_tok in zip(by_term, token_terms(*rows[-1], args.group_size, generator)):
                term.append((rollout.response_ids[real], a_tok[real]))
        print(f"[token_credit] {min(i + 4, len(prompts))}/{len(prompts)} prompts", flush=True)
    K = max(s.shape[1] for s, *_ in rows)
    T = max(m.shape[1] for _, _, m, _ in rows)
    scores = torch.cat([right_pad(s, K) for s, *_ in rows])                                        # [B, K]
    relevance = torch.cat([right_pad(right_pad(w, T).transpose(1, 2), K).transpose(1, 2) for _, w, *_ in rows])
    mask = torch.cat([right_pad(m, T) for _, _, m, _ in rows])                                     # [B, T]
    stop = torch.cat([right_pad(s, T) for *_, s in rows])                                          # [B, T]
    table = credit_by_balance(scores, relevance, mask, stop, args.threshold)
    print(f"{scores.shape[0]} responses to {len(prompts)} prompts of {args.data}, {args.max_new_tokens} new tokens; "
          f"mean A_tok (intra, as train.py computes it) per token kind:")
    print("| failed - met | responses | irrelevant tokens | relevant tokens | EOS |")
    print("|---:|---:|---:|---:|---:|")
    fmt = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
    for balance, c in table.items():
        print(f"| {balance:+d} | {c['responses']} | {fmt(c['irrelevant'])} | {fmt(c['relevant'])} | {fmt(c['eos'])} |")
    by_token = {}
    for (name, *_), term in zip(TOKEN_TERMS, by_term if args.by_token else []):
        ranked = credit_by_token(torch.cat([ids for ids, _ in term]), torch.cat([a for _, a in term]), args.min_count)
        by_token[name] = [{"token": tokenizer.decode([i]), "occurrences": n, "mean_a_tok": m} for i, n, m in ranked]
        shown = ", ".join(f"`{r['token']!r}` {r['mean_a_tok']:+.3f} ({r['occurrences']})"
                          for r in by_token[name][:args.by_token])
        print(f"highest mean A_tok, {name} (token, mean, occurrences >= {args.min_count}): {shown}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"settings": vars(args), "by_balance": table,
                                              **({"by_token": by_token} if by_token else {})}, indent=1) + "\n")


if __name__ == "__main__":
    main()
