"""
Measurement: how many (response, constraint) relevance rows are constant up to noise, and what the token
normalisation makes of them with and without the std floor (advantages.TOKEN_STD_FLOOR).

    python experiments/relevance_std.py                         # the embedded policy's discriminator and samples
    python experiments/relevance_std.py --discriminator DIR --samples DIR/samples.jsonl --limit 128

It reads the policy's own sampled responses (the discriminator build keeps them in samples.jsonl: one
{"prompt_id", "response"} per line) and their prompts' rubrics, rates every (response, constraint) pair with the
trained discriminator, and prints, per band of the row's std sigma over its tokens: the share of rows, their mean
relevance, and the mean |r~| per token that intra-sample normalisation gives them, with the floor and without it
(std_floor=0, the formula as printed). A near-constant row should give ~0: its tokens do not differ in relevance.
The verdict s is taken as +1: |r~| does not depend on its sign. Also written as JSON with --out.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import advantages as adv  # noqa: E402
import data  # noqa: E402
import discriminator  # noqa: E402
from labels.make_labels import tokenize_response  # noqa: E402
from support import discriminator_build, models  # noqa: E402

BANDS = [(0.0, 1e-3), (1e-3, 1e-2), (1e-2, 0.1), (0.1, float("inf"))]   # sigma bands; the floor is 1e-2


def rate(disc, tok, responses: list, criteria: list) -> tuple:
    """Relevance w [B, K, T] of every (response, criterion) pair, and the response mask [B, T]."""
    ids = [tokenize_response(tok, r)[0] for r in responses]
    response_ids, mask = discriminator.pad_right(ids, models.pad_id_of(tok))   # [B, T], [B, T]
    return discriminator.relevance(disc, tok, response_ids, mask, criteria, max(map(len, criteria))), mask


def summarise(w: torch.Tensor, mask: torch.Tensor, criteria: list, floor: float) -> list:
    """One dict per sigma band: rows, share, mean relevance, mean |r~| per token with the floor and without."""
    real = torch.tensor([[k < len(c) for k in range(w.shape[1])] for c in criteria])   # [B, K]
    M = mask.bool().unsqueeze(1)                                                       # [B, 1, T]
    n = mask.sum(-1, keepdim=True)                                                     # [B, 1]
    mu, sigma = (x[..., 0] for x in adv.masked_mean_std(w, M, (-1,)))                  # [B, K], [B, K]
    per_row = {}
    for name, f in (("floored", floor), ("literal", 0.0)):
        r = adv.intra_sample_token_norm(w.unsqueeze(0), mask.unsqueeze(0), std_floor=f)[0]   # [B, K, T]
        per_row[name] = (r.abs() * M).sum(-1) / n                                      # [B, K] mean |r~| per token
    out = []
    for lo, hi in BANDS:
        sel = real & (sigma >= lo) & (sigma < hi)                                      # [B, K]
        k = int(sel.sum())
        out.append({"sigma_from": lo, "sigma_to": hi, "rows": k, "share": k / max(1, int(real.sum())),
                    "mean_relevance": float(mu[sel].mean()) if k else None,
                    "abs_r_floored": float(per_row["floored"][sel].mean()) if k else None,
                    "abs_r_literal": float(per_row["literal"][sel].mean()) if k else None})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    ap.add_argument("--policy", default=models.DEFAULT_MODEL, help="policy whose cached discriminator to read")
    ap.add_argument("--discriminator", default=None,
                    help="trained discriminator folder (default: the one train.py builds for --policy)")
    ap.add_argument("--samples", default=None, help="policy responses, JSONL (default: DISCRIMINATOR/samples.jsonl)")
    ap.add_argument("--prompts", default="data/train.jsonl", help="rubric prompts the samples' prompt_id refer to")
    ap.add_argument("--limit", type=int, default=64, help="responses to rate")
    ap.add_argument("--floor", type=float, default=adv.TOKEN_STD_FLOOR, help="std floor to compare with 0")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    disc_dir = Path(args.discriminator or discriminator_build.default_dir(args.policy))
    samples = Path(args.samples or disc_dir / "samples.jsonl")
    try:
        prompts = {p.id: p for p in data.load_rubric_jsonl(ROOT / args.prompts)}   # an absolute path stays as is
        rows = []
        for lineno, row in data.iter_jsonl(samples):
            if len(rows) == args.limit:
                break
            if row.get("prompt_id") not in prompts or not isinstance(row.get("response"), str):
                raise SystemExit(f"error: {samples}:{lineno}: needs a string 'response' and a 'prompt_id' of "
                                 f"{args.prompts} (got prompt_id {row.get('prompt_id')!r})")
            rows.append(row)
        disc, tok = discriminator.load_discriminator(disc_dir)
    except (data.DataError, OSError, RuntimeError) as e:
        raise SystemExit(f"error: {e}")
    if not rows:
        raise SystemExit(f"error: {samples} holds no responses")
    criteria = [[item.description for item in prompts[r["prompt_id"]].rubrics] for r in rows]
    with torch.no_grad():
        w, mask = rate(disc, tok, [r["response"] for r in rows], criteria)
    table = summarise(w, mask, criteria, args.floor)
    print(f"{len(rows)} responses of {samples}, {sum(map(len, criteria))} (response, constraint) rows, "
          f"discriminator {disc_dir}")
    print(f"| row std sigma | rows | share | mean relevance | mean abs r~ per token, floor {args.floor} | "
          "... floor 0 (as printed) |")
    print("|---|---:|---:|---:|---:|---:|")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for b in table:
        print(f"| {b['sigma_from']:g} to {b['sigma_to']:g} | {b['rows']} | {100 * b['share']:.1f} % | "
              f"{fmt(b['mean_relevance'])} | {fmt(b['abs_r_floored'])} | {fmt(b['abs_r_literal'])} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"samples": str(samples), "responses": len(rows), "bands": table},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
