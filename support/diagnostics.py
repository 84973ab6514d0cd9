"""
What the token advantages did in one RTT step: figures for metrics.jsonl, to see where the token term pushes.

Not part of the algorithm: train.py logs these so that a run can be diagnosed from its metrics alone (README, "Why
RTT lost the pilot"). Pure functions on the tensors of one step; no model, no I/O.

    eos_tok_adv          mean A_tok on the stop token, over responses that have one (eos_count of them; None if none)
    last4_tok_adv        mean A_tok over each response's last 4 real tokens (cut-off responses included)
    res_adv_abs          mean |A_res| per real token
    tok_term_abs         mean |lambda * A_tok| per real token (the token term as it enters A)
    floor_damped_rows    share of real (response, constraint) rows whose sigma is below the std floor but not 0:
                         rows the floor scales down (sigma / floor)
    eos_adv_by_family    per constraint family: mean normalised token reward r~ on the stop token (how each kind of
                         constraint pushes on stopping)

And one figure of the text itself, for every algorithm: `repetitive_share`, the share of responses that repeat one
word REPEAT_RUN or more times in a row ("* * * * ...", "P.S. P.S. ..."): degenerate text that the strict checkers
can still pass in part (a run of "[address]" has placeholders and no comma), the way RTT's policies failed on the
short split (README).
"""
import math

import torch

REPEAT_RUN = 8   # a response with one word this many times in a row is "repetitive"


def longest_word_run(text: str) -> tuple:
    """(length, word) of the longest run of one whitespace-separated word repeated back to back; (0, "") if empty.

    >>> longest_word_run("* *This is point 1*\\n* *This is point 2*"), longest_word_run("P.S. hi " + "* " * 9)
    ((1, '*'), (9, '*'))
    >>> longest_word_run("")
    (0, '')
    """
    words, best, run = text.split(), (0, ""), 0
    for i, word in enumerate(words):
        run = run + 1 if i and word == words[i - 1] else 1
        best = max(best, (run, word), key=lambda b: b[0])
    return best


def repeated_word(text: str) -> str:
    """The word `text` repeats REPEAT_RUN or more times in a row; "" where it repeats none that often."""
    run, word = longest_word_run(text)
    return word if run >= REPEAT_RUN else ""


def is_repetitive(text: str) -> bool:
    return bool(repeated_word(text))


def repetitive_share(texts: list) -> float:
    """Share of `texts` that repeat one word REPEAT_RUN or more times in a row; 0.0 for no texts.

    >>> repetitive_share(["fine text", "[address] " * 8, "[address] " * 7])
    0.3333333333333333
    """
    return sum(map(is_repetitive, texts)) / len(texts) if texts else 0.0


def token_advantage_stats(parts: dict, response_mask: torch.Tensor, stop_mask: torch.Tensor, scores: torch.Tensor,
                          families: list, weight: float, std_floor: float, token_mask=None) -> dict:
    """Figures of one step. parts: advantages.rtt_advantages' second output; shapes [P, G, ...].

    Args:
        parts: "response_adv" [P, G], "token_adv" [P, G, T], "token_rewards" [P, G, K, T], "normed" [P, G, K, T]
            (None under reference_quirks: then no per-family figures).
        response_mask: [P, G, T]; stop_mask: [P, G, T] True on the stop token (advantages.stop_token_mask).
        scores: [P, G, K] +1 / -1 / 0 padded slot.
        families: [P][K'] the constraint family of each real slot of each prompt (K' <= K).
        weight: lambda. std_floor: the floor the normalisation used. token_mask: [P, G, T] the tokens the
            normalisation saw, when not the response mask (eos="exclude": the stop token left out).

    Example (one response of 3 tokens ending in EOS, one constraint that fails and blames the first token):
        >>> import advantages as adv
        >>> s = torch.tensor([[[-1]]]); w = torch.tensor([[[[1., 0., 0.]]]]); m = torch.ones(1, 1, 3)
        >>> stop = torch.tensor([[[False, False, True]]])
        >>> _, parts = adv.rtt_advantages(s, w, m, stop_mask=stop)
        >>> stats = token_advantage_stats(parts, m, stop, s, [["punctuation:no_comma"]], 0.5, 0.01)
        >>> round(stats["eos_tok_adv"], 4), stats["eos_count"], stats["eos_adv_by_family"]
        (0.7071, 1, {'punctuation:no_comma': 0.7071})
    """
    M = response_mask != 0                                                  # [P, G, T]
    n_tok = M.sum().clamp(min=1)
    token_adv = parts["token_adv"]                                          # [P, G, T]
    stop = stop_mask & M                                                    # [P, G, T]
    first_stop = stop & (stop.cumsum(-1) == 1)                              # [P, G, T] the stop token itself
    out = {"eos_count": int(first_stop.sum()),
           "eos_tok_adv": float(token_adv[first_stop].mean()) if first_stop.any() else None,   # None: no EOS
           "res_adv_abs": float((parts["response_adv"].abs().unsqueeze(-1) * M).sum() / n_tok),
           "tok_term_abs": float((weight * token_adv.abs() * M).sum() / n_tok)}
    position_from_end = M.flip(-1).cumsum(-1).flip(-1)                     # [P, G, T] 1 on the last real token
    last4 = M & (position_from_end <= 4)                                    # [P, G, T]
    out["last4_tok_adv"] = float(token_adv[last4].mean()) if last4.any() else 0.0

    r = parts["token_rewards"]                                              # [P, G, K, T]
    seen = M if token_mask is None else token_mask != 0                     # [P, G, T] what the normalisation saw
    Mk = seen.unsqueeze(-2).expand_as(r)                                    # [P, G, K, T]
    n = Mk.sum(-1).clamp(min=1)                                             # [P, G, K]
    mu = (r * Mk).sum(-1) / n
    sigma = (((r - mu.unsqueeze(-1)) ** 2) * Mk).sum(-1).div(n).sqrt()    # [P, G, K]
    flat = r.masked_fill(~Mk, -math.inf).amax(-1) <= r.masked_fill(~Mk, math.inf).amin(-1)   # all equal: 0 anyway
    real = (scores != 0) & seen.any(-1, keepdim=True)                       # [P, G, K]
    damped = real & ~flat & (sigma < std_floor)
    out["floor_damped_rows"] = float(damped.sum() / real.sum().clamp(min=1))

    normed = parts.get("normed")
    by_family = {}
    if normed is not None and first_stop.any():
        at_eos = (normed * first_stop.unsqueeze(-2)).sum(-1)                # [P, G, K] r~ on the stop token
        has_eos = first_stop.any(-1)                                        # [P, G]
        for p, fams in enumerate(families):
            for k, fam in enumerate(fams):
                for g in range(scores.shape[1]):
                    if has_eos[p, g] and scores[p, g, k] != 0:
                        by_family.setdefault(fam, []).append(float(at_eos[p, g, k]))
    out["eos_adv_by_family"] = {f: round(sum(v) / len(v), 4) for f, v in sorted(by_family.items())}
    return out
