"""
Label rows: a response's token labels for one constraint, in the one format every label source writes.

A row is one (response, constraint) pair: the criterion text, the response text and its token ids as the policy
emits them (EOS included), one 0/1 label per token, the constraint family, the prompt id and the source.

The diff rule (which tokens an edit labels) is ours, the paper leaves it open: `rule_edits.edit_char_spans` gives the
character spans of the ORIGINAL response that a minimal edit changes, `token_labels` maps them to tokens. A token is
1 when its characters overlap a span the edit replaces or deletes; a pure insertion labels the token that contains
the character right after the insertion point, and an insertion at the very end labels the EOS token:

    "the red cats." -> "the big cats."       the | red | cats | . | EOS   ->   0 1 0 0 0
    "the red cats." -> "the red cats.!"                                   ->   0 0 0 0 1

Constraints that every token could break (no commas, all lowercase, word counts, ...) are labelled "whole": every
token is 1 (rule_edits.py explains why).

The offline source (`rule_labels`, the default): repair a policy sample so that it meets every constraint of its
prompt, break one constraint at a time with the rule editors (every edit verified by the official checkers), and
label the union of the verified edits' spans. The LLM sources are in llm_labels.py.
"""
import json
from pathlib import Path

import data
from labels import rule_edits


# ---------------------------------------------------------------------------------------------------------------
# 1. Character spans -> token labels, and the one record format

def tokenize_response(tokenizer, text: str, eos: bool = True) -> tuple:
    """(ids, offsets) of a response as the policy would emit it: no special tokens, then the EOS (offset
    (len, len+1): the position "after the last character"), as the rollout's response mask includes it."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if eos:
        ids.append(tokenizer.eos_token_id)
        offsets.append((len(text), len(text) + 1))
    return ids, offsets


def token_labels(offsets: list, spans: list) -> list:
    """0/1 per token from character spans of the original text (see rule_edits.edit_char_spans).

    (s, e) with e > s: every token whose characters overlap [s, e) is 1.
    (i, i), an insertion point: the token containing character i is 1 (the first token the insertion alters);
    if none does (a character no token covers), the first token starting after i.
    """
    labels = [0] * len(offsets)
    for s, e in spans:
        if e > s:
            for t, (ts, te) in enumerate(offsets):
                if ts < e and s < te:
                    labels[t] = 1
        else:
            hit = [t for t, (ts, te) in enumerate(offsets) if ts <= s < te]
            if not hit:
                hit = [t for t, (ts, _) in enumerate(offsets) if ts >= s][:1] or [len(offsets) - 1]
            for t in hit:
                labels[t] = 1
    return labels


def diff_token_labels(tokenizer, original: str, edited: str, eos: bool = True) -> tuple:
    """(ids, labels) of `original` for one minimal edit: the single diff rule of every label source."""
    ids, offsets = tokenize_response(tokenizer, original, eos)
    return ids, token_labels(offsets, rule_edits.edit_char_spans(original, edited))


def make_record(tokenizer, text: str, *, criterion: str, family: str, prompt_id: str, source: str,
                spans: list | None = None, scope: str = rule_edits.SPAN, **extra) -> dict:
    """One label row. scope "whole": every token (EOS included) is 1; else the tokens the spans select."""
    ids, offsets = tokenize_response(tokenizer, text)
    labels = [1] * len(ids) if scope == rule_edits.WHOLE else token_labels(offsets, spans or [])
    return {"prompt_id": prompt_id, "family": family, "criterion": criterion, "source": source, "scope": scope,
            "text": text, "ids": ids, "labels": labels, **extra}


def bump(counts: dict, key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def keep_if_labelled(rows: list, counts: dict, row: dict) -> None:
    """Append a minimal-modification row, unless its edit labels no token at all; count which."""
    if sum(row["labels"]) == 0:
        bump(counts, "no_labelled_token")
    else:
        rows.append(row)
        bump(counts, "kept")


def checked_items(prompt) -> list:
    """(index in prompt.rubrics, instruction_id, kwargs) of the rubric items that have a rule checker."""
    return [(k, it.checker["instruction_id"], it.checker.get("kwargs") or {})
            for k, it in enumerate(prompt.rubrics) if it.checker]


# ---------------------------------------------------------------------------------------------------------------
# 2. Label files: JSONL, one row per line, checked on reading

def write_jsonl(rows: list, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path) -> list:
    return [row for _, row in data.iter_jsonl(path)]


def read_label_rows(path) -> list:
    """The rows of a label file, each checked for what train / eval / show read (DataError: file, line, field)."""
    rows = []
    for lineno, r in data.iter_jsonl(path):
        ids, labels = r.get("ids"), r.get("labels")
        checks = [("prompt_id", isinstance(r.get("prompt_id"), str), "a string"),
                  ("criterion", isinstance(r.get("criterion"), str) and r["criterion"].strip(), "a non-empty string"),
                  ("family", isinstance(r.get("family"), str), "a string"),
                  ("labels", isinstance(labels, list) and labels and all(v in (0, 1) for v in labels),
                   "a non-empty list of 0 / 1 per token"),
                  ("ids", ids is None or isinstance(ids, list) and all(type(i) is int for i in ids),
                   "a list of token ids"),
                  ("text", ids is not None or isinstance(r.get("text"), str), "the response (text, or its ids)"),
                  ("labels", ids is None or len(ids) == len(labels), f"one label per token id ({len(ids or [])})")]
        for key, ok, expected in checks:
            if not ok:
                raise data.DataError(path, lineno, key, f"expected {expected} (a row written by `label`)")
        rows.append(r)
    return rows


def read_response_rows(path) -> list:
    """{prompt_id, response} rows (label --responses); DataError names the file, line and field."""
    rows = []
    for lineno, r in data.iter_jsonl(path):
        for key in ("prompt_id", "response"):
            if not isinstance(r.get(key), str):
                raise data.DataError(path, lineno, key, "expected a string (rows are {prompt_id, response})")
        rows.append(r)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# 3. The offline source: policy samples, repaired, then broken one constraint at a time

def sample_responses(model, tokenizer, prompts: list, samples_per_prompt: int = 1, max_new_tokens: int = 64,
                     batch_prompts: int = 16, seed: int = 0, temperature: float = 0.99) -> list:
    """Policy samples [(prompt index, text)] for the prompts (rollout.generate_rollout, spec §8 sampling)."""
    from tqdm import tqdm
    import rollout
    out = []
    for s in tqdm(range(0, len(prompts), batch_prompts), desc="sampling the policy", unit="batch"):
        chunk = prompts[s:s + batch_prompts]
        ro = rollout.generate_rollout(model, tokenizer, [p.messages for p in chunk], group_size=samples_per_prompt,
                                      max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.99, top_k=100,
                                      max_prompt_tokens=1024, seed=seed + s)
        out += [(s + pi, text) for pi, text in zip(ro.prompt_index, ro.texts)]
    return out


def reuse_samples(samples: list, n_prompts: int) -> list:
    """Give every prompt index in range(n_prompts) that has no sample one of the existing samples (round-robin).

    Sampling is the slow part on a CPU, and the discriminator never sees the prompt, only the criterion and the
    response: a policy sample for one training prompt is as good a base for another prompt's constraints.
    Returns (prompt index, text, index of the prompt the sample was drawn for) triples.

        reuse_samples([(0, "a"), (1, "b")], 3)  ->  [(0, "a", 0), (1, "b", 1), (2, "a", 0)]
    """
    if not samples:
        return []
    have = {s[0] for s in samples}
    missing = [pi for pi in range(n_prompts) if pi not in have]
    return [(pi, t, pi) for pi, t, *_ in samples] + \
        [(pi, samples[j % len(samples)][1], samples[j % len(samples)][0]) for j, pi in enumerate(missing)]


def rule_labels(prompts: list, samples: list, tokenizer, counts: dict, max_words: int = 60,
                max_tokens: int = 256) -> list:
    """Source 2, offline: repair each sample so it meets every constraint, break one constraint at a time (every
    edit verified by the checkers) and label the union of the verified edits' spans (rule_edits.py).

    samples: [(prompt index, policy text)] or [(prompt index, policy text, index of the prompt it was sampled for)]
    (see reuse_samples; rows record that prompt's id as `base_prompt_id`, and the train/eval split keeps rows that
    share a base sample on one side). counts: filled with what was kept and dropped, and why.
    """
    from tqdm import tqdm
    rows = []
    for pi, sample, *src in tqdm(samples, desc="rule labels", unit="response"):
        p = prompts[pi]
        base_id = prompts[src[0]].id if src else p.id
        items = checked_items(p)
        bump(counts, "responses")
        bump(counts, "items_without_checker", len(p.rubrics) - len(items))
        if not items:
            continue
        base = rule_edits.clean_base(sample, max_words=max_words)
        if not base:
            bump(counts, "empty_sample")
        check = rule_edits.checker_for(p.instruction)
        text = rule_edits.repair(base, [(i, kw) for _, i, kw in items], check)
        if text is None:
            bump(counts, "repair_failed")
            continue
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 > max_tokens:
            bump(counts, "too_long")
            continue
        bump(counts, "repaired")
        for j, (k, iid, kw) in enumerate(items):
            res = rule_edits.violating_edits(text, [(i, w) for _, i, w in items], j, check)
            if not res.edits:
                key = f"dropped[{iid}]: {res.reason}"
                bump(counts, key)
                continue
            keep_if_labelled(rows, counts, make_record(
                tokenizer, text, criterion=p.rubrics[k].description, family=iid, prompt_id=p.id, source="rule",
                spans=res.spans, scope=res.scope, edited=res.edits[0], n_edits=len(res.edits), base_prompt_id=base_id))
    return rows
