"""
Make the small example data the two notebooks read, with the project's own code: rollout -> judge -> discriminator.

    .venv/bin/python notebooks/make_examples.py --threads 1          # the default discriminator (ensure_discriminator)
    .venv/bin/python notebooks/make_examples.py --threads 1 --discriminator runs/disc/m_k12_t6   # what made the
                                                                     # committed files (argv and timings in their meta)
    .venv/bin/python notebooks/run_notebooks.py                      # then: re-execute, save outputs, export PNGs

What it does, on the embedded default policy (SmolLM2-135M-Instruct, CPU):
  1. picks `--prompts-per-k` prompts for every number of constraints K = 1..4 from data/heldout.jsonl (held-out
     prompts: the discriminator was trained on samples for data/train.jsonl), seeded;
  2. samples G responses per prompt with `rollout.generate_rollout` (the paper's sampling: T 0.99, top-p 0.99,
     top-k 100; responses cut at `--max-new-tokens`, far below the paper's 4096 so that it runs on a CPU);
  3. scores every (response, constraint) with `judge.Judge().score` (the bundled rubrics all have rule checkers, so
     no LLM judge is involved);
  4. computes the relevance cube w [G, K, T] with `discriminator.relevance` and the trained discriminator of the
     embedded model (`support/discriminator_build.ensure_discriminator`, built first if missing: many CPU minutes).

It writes two files (both committed, < 1 MB together):
  notebooks/data/groups.pt           every group: ids, mask, verdicts s [G, K] (int8), relevance w [G, K, T] (fp16)
  notebooks/data/token_example.json  one group with 2-4 constraints, readable: token strings, verdicts, relevance,
                                     plus the response the notebook shades (`chosen`)
The notebooks only read these files (no model, no GPU), so they run in seconds.

Steps 2-3 (the slow part) are cached in $RTT_CACHE/notebooks/ under a key of the settings, so that re-running with
another discriminator (`--discriminator PATH`) only redoes step 4; `--fresh` ignores the cache.

On a CPU shared with other jobs, `--threads 1` is much faster than PyTorch's default (two threads spinning against
other processes made a decoding step ~10x slower here).
"""
import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import data  # noqa: E402
from support import models  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "data"
KS = (1, 2, 3, 4)  # the bundled data has 1 to 4 constraints per prompt


# ----------------------------------------------------------------------------------------------------------------
# helpers

def log(msg: str) -> None:
    print(f"[make_examples] {msg}", file=sys.stderr, flush=True)


def token_strings(tokenizer, ids: list) -> list:
    """Each token's text, decoding one id at a time; the EOS shows as <eos>, a byte split inside a character as '?'."""
    out = []
    for i in ids:
        if i == tokenizer.eos_token_id:
            out.append("<eos>")
        else:
            out.append(tokenizer.decode([i]).replace("\ufffd", "?"))
    return out


def pick_prompts(prompts: list, per_k: int, seed: int) -> dict:
    """{K: [prompt, ...]}: `per_k` prompts with exactly K constraints each, seeded, in file order."""
    rng = random.Random(seed)
    chosen = {}
    for K in KS:
        pool = [p for p in prompts if len(p.rubrics) == K]
        chosen[K] = sorted(rng.sample(pool, min(per_k, len(pool))), key=lambda p: p.id)
    return chosen


def pick_example(groups: list) -> tuple:
    """(group index, response index) for the token example: a group with 2-4 constraints whose verdicts vary most.

    Group score: whether the AON reward varies (so that the response-level advantage is not 0 and both levels of
    the signal can be seen), then the number of constraints whose verdict differs between responses, then 3
    constraints preferred (fits a page). Response: one that met some constraints and failed others, preferably
    finished with an EOS, and short enough to read (at least 24 tokens).
    """
    def group_key(j):
        s = groups[j]["scores"].float()                                          # [G, K]
        varying = int(((s.amax(0) > 0) & (s.amin(0) < 0)).sum())                 # constraints with mixed verdicts
        aon = (s > 0).all(1)
        return (int(aon.any() and not aon.all()), varying, -abs(groups[j]["K"] - 3), -j)

    j = max((j for j, g in enumerate(groups) if 2 <= g["K"] <= 4), key=group_key)
    g = groups[j]
    s = g["scores"].float()
    n = g["response_mask"].sum(1)                                                # [G]

    def response_key(i):
        mixed = int((s[i] > 0).any() and (s[i] < 0).any())
        return (mixed, int(not g["truncated"][i]), int(n[i] >= 24), -int(n[i]), -i)

    return j, max(range(s.shape[0]), key=response_key)


# ----------------------------------------------------------------------------------------------------------------
# steps 1-3: rollout + judge (cached)

def rollouts_and_verdicts(args) -> tuple:
    import judge
    import rollout

    prompts = data.load_rubric_jsonl(ROOT / args.data)
    by_k = pick_prompts(prompts, args.prompts_per_k, args.seed)
    settings = dict(data=args.data, per_k=args.prompts_per_k, G=args.group_size, max_new_tokens=args.max_new_tokens,
                    seed=args.seed, model=args.model, ids={K: [p.id for p in ps] for K, ps in by_k.items()})
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    cache = models.cache_dir() / "notebooks" / f"rollouts-{key}.pt"
    if cache.exists() and not args.fresh:
        log(f"steps 1-3: using cached rollouts and verdicts {cache}")
        return torch.load(cache, weights_only=True)

    tokenizer = models.load_tokenizer(args.model)
    model = models.load_causal_lm(args.model, device="cpu")
    scorer = judge.Judge()
    groups, timing = [], {"generate_s": 0.0, "judge_s": 0.0, "new_tokens": 0}
    for K in KS:
        ps = by_k[K]
        log(f"steps 1-3, K={K}: sampling {len(ps)} prompts x G={args.group_size}, {args.max_new_tokens} new tokens")
        r = rollout.generate_rollout(model, tokenizer, [p.messages for p in ps], args.group_size,
                                     args.max_new_tokens, seed=args.seed + K)
        t0 = time.perf_counter()
        scores, _ = scorer.score(ps, r.texts, r.prompt_index)                    # [B, K] int8
        timing["judge_s"] += time.perf_counter() - t0
        timing["generate_s"] += r.seconds
        timing["new_tokens"] += r.new_tokens
        log(f"  {r.new_tokens} tokens in {r.seconds:.0f} s ({r.tokens_per_second:.1f} tokens/s)")
        G = args.group_size
        for p_i in range(r.num_prompts):
            rows = slice(p_i * G, (p_i + 1) * G)                                 # row b = p*G + g
            mask = r.response_mask[rows].bool()                                  # [G, T]
            T = int(mask.sum(1).max())
            prompt = ps[r.prompt_index[p_i * G]]
            groups.append(dict(
                prompt_id=prompt.id, instruction=prompt.instruction, K=K,
                criteria=[item.description for item in prompt.rubrics],
                families=[data.item_family(item) for item in prompt.rubrics],
                response_ids=r.response_ids[rows, :T].to(torch.int32).cpu(),      # [G, T]
                response_mask=mask[:, :T].cpu(),                                 # [G, T]
                scores=scores[rows].clone(),                                     # [G, K] +1 met / -1 not met
                truncated=r.truncated[rows].clone(),                             # [G]
                texts=r.texts[rows]))
    out = {"groups": groups, "settings": settings, "timing": timing}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


# ----------------------------------------------------------------------------------------------------------------
# step 4: relevance with the trained discriminator of the embedded model

def add_relevance(groups: list, args) -> dict:
    import discriminator
    from support import discriminator_build
    path = args.discriminator
    if path is None:   # the one train.py uses for this policy, built if missing (slow)
        path = discriminator_build.ensure_discriminator(args.model, discriminator_build.default_dir(args.model))
    policy_tok = models.load_tokenizer(args.model)
    model, tok = discriminator.load_discriminator(path, policy_tokenizer=policy_tok, device="cpu")
    t0 = time.perf_counter()
    for j, g in enumerate(groups):
        G, T = g["response_ids"].shape
        w = discriminator.relevance(model, tok, g["response_ids"].long(), g["response_mask"].long(),
                                    [g["criteria"]] * G, g["K"])                 # [G, K, T]
        g["relevance"] = w
        log(f"step 4: relevance for group {j + 1}/{len(groups)} (K={g['K']}, T={T})")
    info = {"layers": model.config.num_hidden_layers}
    card = Path(path) / "rtt_discriminator.json"                                 # what discriminator.py saved
    if card.exists():
        card = json.loads(card.read_text())
        info.update({k: card.get(k) for k in ("backbone", "labels", "train_rows", "eval_rows")})
        info["held_out_token_metrics"] = {k: round(v, 4) for k, v in (card.get("metrics", {}).get("ALL") or {}).items()
                                          if isinstance(v, float)}
    try:
        shown = str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        shown = str(path)
    return {"path": shown, "relevance_s": time.perf_counter() - t0, "info": info}


# ----------------------------------------------------------------------------------------------------------------
# writing

def save(groups: list, meta: dict, example: tuple, tokenizer) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    slim = [dict(prompt_id=g["prompt_id"], K=g["K"], families=g["families"], criteria=g["criteria"],
                 response_ids=g["response_ids"], response_mask=g["response_mask"], scores=g["scores"],
                 relevance=g["relevance"].to(torch.float16), truncated=g["truncated"]) for g in groups]
    torch.save({"meta": meta, "groups": slim}, OUT_DIR / "groups.pt")

    j, chosen = example
    g = groups[j]
    n = g["response_mask"].sum(1).tolist()                                      # real tokens per response
    ids = [g["response_ids"][i, :n[i]].tolist() for i in range(len(n))]
    ex = {"meta": {**meta, "group_index_in_groups_pt": j},
          "prompt_id": g["prompt_id"], "instruction": g["instruction"], "criteria": g["criteria"],
          "families": g["families"], "chosen": chosen,
          "texts": g["texts"], "truncated": g["truncated"].tolist(),
          "scores": g["scores"].tolist(),                                       # [G][K]
          "response_ids": ids,                                                  # [G][n_i]
          "tokens": [token_strings(tokenizer, x) for x in ids],                 # [G][n_i]
          "relevance": [[[round(float(v), 4) for v in g["relevance"][i, k, :n[i]]] for k in range(g["K"])]
                        for i in range(len(n))]}                                # [G][K][n_i]
    (OUT_DIR / "token_example.json").write_text(json.dumps(ex, ensure_ascii=False, indent=1))
    for f in ("groups.pt", "token_example.json"):
        log(f"wrote {OUT_DIR / f} ({(OUT_DIR / f).stat().st_size / 1024:.0f} KiB)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--model", default=models.DEFAULT_MODEL, help="policy that samples the responses")
    ap.add_argument("--discriminator", default=None,
                    help="discriminator folder (default: discriminator_build.ensure_discriminator(--model))")
    ap.add_argument("--data", default="data/heldout.jsonl", help="prompts with rubrics, relative to the repo")
    ap.add_argument("--prompts-per-k", type=int, default=8, help="groups per number of constraints K = 1..4")
    ap.add_argument("--group-size", type=int, default=8, help="G, responses per prompt (paper: 8)")
    ap.add_argument("--max-new-tokens", type=int, default=96, help="response length cap (paper: 4096)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is best on a shared CPU)")
    ap.add_argument("--fresh", action="store_true", help="ignore the cached rollouts and verdicts")
    ap.add_argument("--rollouts-only", action="store_true", help="stop after steps 1-3 (fills the cache)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    rv = rollouts_and_verdicts(args)
    groups = rv["groups"]
    if args.rollouts_only:
        log(f"steps 1-3 done in {time.perf_counter() - t0:.0f} s; run again without --rollouts-only for step 4")
        return
    disc = add_relevance(groups, args)
    example = pick_example(groups)
    meta = {"made_by": "notebooks/make_examples.py", "argv": sys.argv[1:], **rv["settings"],
            "timing": {**{k: round(v, 1) for k, v in rv["timing"].items()},
                       "relevance_s": round(disc["relevance_s"], 1)},
            "discriminator": {"path": disc["path"], **disc["info"]}}
    meta.pop("ids", None)
    save(groups, meta, example, models.load_tokenizer(args.model))
    log(f"done in {time.perf_counter() - t0:.0f} s (generation {rv['timing']['generate_s']:.0f} s, "
        f"judge {rv['timing']['judge_s']:.1f} s, relevance {disc['relevance_s']:.0f} s)")


if __name__ == "__main__":
    main()
