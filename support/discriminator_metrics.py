"""
How a trained discriminator is evaluated: rows held out by prompt, then token metrics per constraint family.

Token accuracy at 0.5 follows the paper (spec §4); precision, recall, F1 and AUROC are reported next to it, per family
and over all rows ("ALL"), and over the rows whose label is a span ("ALL span": not the whole response).
"""
import hashlib
import math

import numpy as np

import discriminator
from labels import rule_edits
from labels.make_labels import tokenize_response


def split_by_prompt(rows: list, eval_frac: float = 0.15, seed: int = 42) -> tuple:
    """(train, eval): every row of a prompt goes to the same side, decided by a hash of (seed, prompt id).

    Rows built on the same policy sample (`base_prompt_id`, see reuse_samples) also stay together, so no response
    text is seen in training and evaluation both.
    """
    def is_eval(r):
        key = r.get("base_prompt_id") or r["prompt_id"]
        h = int(hashlib.md5(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
        return h % 10000 < eval_frac * 10000
    train = [r for r in rows if not is_eval(r)]
    return train, [r for r in rows if is_eval(r)]


# ---------------------------------------------------------------------------------------------------------------
# Metrics (pure functions) and evaluation per family

def auroc(scores, labels) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties count 1/2
    (Mann-Whitney U with average ranks). NaN when only one class is present.

    >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0          # 1-based average rank of each distinct score
    ranks = avg_rank[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def token_metrics(probs, labels, threshold: float = 0.5) -> dict:
    """Token accuracy, precision, recall, F1 (prediction = prob >= threshold) and AUROC over flat token lists.

    With no predicted positive, precision is 1 if there is nothing to find else 0; with no positive label, recall
    is 1; F1 = 2TP / (2TP + FP + FN), and 1 when that is 0/0.

    >>> m = token_metrics([0.9, 0.2, 0.6, 0.1], [1, 0, 0, 1])
    >>> (m["accuracy"], m["precision"], m["recall"], m["f1"], m["auroc"])
    (0.5, 0.5, 0.5, 0.5, 0.5)
    """
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    pred = p >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    n = tp + fp + fn + tn
    return {
        "tokens": n, "positives": tp + fn,
        "accuracy": (tp + tn) / n if n else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else (1.0 if tp + fn == 0 else 0.0),
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0,
        "auroc": auroc(p, y),
    }


def metrics_by_family(probs: list, labels: list, families: list, scopes: list | None = None,
                      threshold: float = 0.5) -> dict:
    """token_metrics per family, plus "ALL" (every token of every row) and "ALL span" (rows whose scope is span)."""
    groups = {}
    for i, f in enumerate(families):
        groups.setdefault(f, []).append(i)
    groups = dict(sorted(groups.items()))
    groups["ALL"] = list(range(len(families)))
    if scopes is not None:
        groups["ALL span"] = [i for i, s in enumerate(scopes) if s == rule_edits.SPAN]
    out = {}
    for name, idx in groups.items():
        if not idx:
            continue
        m = token_metrics(np.concatenate([np.asarray(probs[i], dtype=np.float64) for i in idx]),
                          np.concatenate([np.asarray(labels[i]) for i in idx]), threshold)
        m["rows"] = len(idx)
        out[name] = m
    return out


def predict_rows(model, tokenizer, rows: list, batch_tokens: int | None = None) -> list:
    """Relevance for each label row's tokens (same inputs as training, through score_pairs)."""
    pairs = [(r["criterion"], r.get("ids") or tokenize_response(tokenizer, r["text"])[0]) for r in rows]
    return [p.numpy() for p in discriminator.score_pairs(model, tokenizer, pairs, batch_tokens)]


def evaluate_rows(model, tokenizer, rows: list, batch_tokens: int | None = None) -> dict:
    """metrics_by_family of the discriminator's relevance on label rows."""
    probs = predict_rows(model, tokenizer, rows, batch_tokens)
    return metrics_by_family(probs, [r["labels"] for r in rows], [r["family"] for r in rows],
                             [r.get("scope", rule_edits.SPAN) for r in rows])


def format_metrics(metrics: dict) -> str:
    """A plain-text table, one line per family."""
    lines = [f"{'family':46s} {'rows':>5s} {'tokens':>7s} {'pos%':>6s} {'acc':>6s} {'prec':>6s} {'rec':>6s} "
             f"{'F1':>6s} {'AUROC':>6s}"]
    for name, m in metrics.items():
        au = "  -   " if math.isnan(m["auroc"]) else f"{m['auroc']:6.3f}"
        lines.append(f"{name:46s} {m['rows']:5d} {m['tokens']:7d} {100 * m['positives'] / max(m['tokens'], 1):6.1f} "
                     f"{m['accuracy']:6.3f} {m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f} {au}")
    return "\n".join(lines)
