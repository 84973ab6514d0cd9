"""
The token-level relevance discriminator (spec §4): which tokens of a response matter for a given constraint.

A decoder LM with a one-logit head reads one (constraint, response) pair per forward pass and says, for every
response token, how relevant it is to the constraint: `w[i, k, t] = sigmoid(logit)` in [0, 1]. RTT multiplies the
judge's verdict by it to get the token-level reward cube `r[G, K, T] = s[G, K, 1] * w[G, K, T]`.

    python discriminator.py ensure --policy smollm2-135m --out runs/disc-smollm2  # labels + train + eval in one go
    python discriminator.py label --n-prompts 400 --n-samples 128 --out runs/disc/labels.jsonl   # offline rules
    python discriminator.py train --labels runs/disc/labels.jsonl --out runs/disc/model \
        --lr 4e-4 --keep-layers 12 --train-layers 6                       # the CPU setting; spec: --lr 9e-6
    python discriminator.py eval  --model runs/disc/model --labels runs/disc/labels.jsonl   # held-out prompts
    python discriminator.py show  --model runs/disc/model --criterion "Include keywords ['cabin'] in the response." \
        --text "We stayed in a small cabin by the lake."
    python discriminator.py label --source editor --editor-url http://127.0.0.1:8000/v1 --editor-name MODEL ...
    python discriminator.py label --source extract --editor-model Qwen2.5-1.5B ...     # greedy-extraction baseline

What follows the paper / reference code exactly:
- input = "Identify which tokens in the response are relevant to the criteria.\\n\\nCriteria: {criterion}\\n\\n
  Response:\\n\\n" (no chat template, no instruction) followed by the *policy's own response token ids*, appended as
  they are; outputs are read at response positions only (`build_inputs`, used by training and inference alike);
- one forward pass per (response, constraint) pair; head `hidden -> 1` with bias, init N(0, 1/(hidden+1));
- token BCE (mean over response tokens); Adam betas (0.9, 0.95), lr 9e-6, 2 epochs, 3 % warm-up, cosine to 0.1 lr,
  grad-clip 1.0 as defaults; token accuracy at 0.5 among the metrics.

Where we go beyond it (the paper released no labelling code, data or checkpoints):
- Labels come from three sources in ONE format (a JSONL row per (response, constraint): criterion, text, token ids,
  0/1 token labels, family, prompt id, source): (1) minimal modification by an editor LLM, as in the paper,
  (2) minimal modification by rules, offline (editors.py: repair the policy's sample so that it meets every
  constraint, then break one constraint at a time, every edit verified by the official checkers), (3) the paper's
  greedy-extraction baseline (an LLM quotes the relevant spans as JSON).
- The diff rule (which tokens an edit labels) is ours: `editors.edit_char_spans` + `token_labels` below. We label
  tokens of the ORIGINAL response (the one that meets every constraint): a token is 1 when its characters overlap a
  span the edit replaces or deletes; a pure insertion labels the token that contains the character right after the
  insertion point (the first token it alters), and an insertion at the very end labels the EOS token. Constraints
  that every token could break (no commas, all lowercase, word counts, ...) are labelled "whole": every token is 1
  (editors.py explains why). The rule-based source unites the spans of all verified minimal edits.
- CPU levers (flags; `train` defaults to the spec, `ensure` to the measured CPU setting): `--keep-layers N` keeps
  only the bottom N decoder layers of the backbone (a smaller discriminator: training AND RL-time inference get
  cheaper), `--train-layers N` trains only the top N of them (+ final norm + head), so backward stops there;
  length-grouped batches; micro-batches capped by `--micro-batch-tokens`; `--threads 1` on a shared CPU.
- `--lr` / `--epochs` are flags: the spec's 9e-6 x 2 epochs is far too little for a few hundred rule-built
  examples on a CPU; `ensure_discriminator` uses the CPU setting we measured (CPU_DEFAULTS, README).
"""
import argparse
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import editors
from support import errors
from support.errors import ProjectError

TEMPLATE = ("Identify which tokens in the response are relevant to the criteria.\n\n"
            "Criteria: {criterion}\n\nResponse:\n\n")


class DiscriminatorError(ProjectError, RuntimeError):
    """A discriminator that cannot be used as asked (wrong tokenizer, untrained head, ...); the message says why."""


# ---------------------------------------------------------------------------------------------------------------
# 1. Inputs: the template, tokenised once per criterion, then the response ids as they are

def prefix_ids(tokenizer, criterion: str) -> list:
    """Token ids of the template up to and including "Response:\\n\\n" (a BOS first if the tokenizer adds one)."""
    ids = tokenizer(TEMPLATE.format(criterion=criterion), add_special_tokens=False)["input_ids"]
    if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return list(ids)


def build_inputs(tokenizer, criterion: str, response_ids, prefix: list | None = None) -> tuple:
    """(input_ids, start): the template prefix for `criterion`, then `response_ids` unchanged (never re-tokenised).

    The response occupies input_ids[start:], so output position start + t belongs to response token t.
    Training and inference both build their sequences here, so the two cannot diverge. `prefix` = prefix_ids(...)
    when the caller has it already (one tokenisation per criterion, not per pair).
    """
    prefix = prefix_ids(tokenizer, criterion) if prefix is None else prefix
    response_ids = response_ids.tolist() if torch.is_tensor(response_ids) else list(response_ids)
    return prefix + response_ids, len(prefix)


def pad_id_of(tokenizer) -> int:
    for i in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if i is not None:
            return i
    return 0


def pad_right(seqs: list, pad_id: int) -> tuple:
    """Right-pad token lists: (input_ids [N, L], attention_mask [N, L]). Right padding keeps position ids 0..n-1 for
    every real token without passing them explicitly (left padding would shift them)."""
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def length_batches(lengths: list, batch_tokens: int) -> list:
    """Indices sorted by length, cut into batches of at most `batch_tokens` padded tokens (at least one each)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    return batches + ([cur] if cur else [])


def _check_ids(model, max_id: int) -> None:
    n = model.get_input_embeddings().num_embeddings
    if max_id >= n:
        raise DiscriminatorError(f"token id {max_id} is outside the discriminator's vocabulary ({n} embeddings): "
                                 "it does not share the policy's tokenizer")


def default_batch_tokens(model) -> int:
    """Padded tokens per inference batch: big on a GPU; small on a CPU, where we measured 2048 to be ~1.5x faster
    than 16384 (SmolLM2, 48 pairs of ~100 tokens: 8.2 s vs 12.2 s on 2 threads)."""
    return 16384 if next(model.parameters()).device.type == "cuda" else 2048


def score_pairs(model, tokenizer, pairs: list, batch_tokens: int | None = None, stats: dict | None = None) -> list:
    """Relevance of every response token for each (criterion, response_ids) pair: a list of float32 [n] tensors.

    All pairs are batched together, sorted by length (little padding), under inference_mode.
    """
    if not pairs:
        return []
    batch_tokens = batch_tokens or default_batch_tokens(model)
    t0 = time.perf_counter()
    cache = {}
    seqs = []
    for criterion, ids in pairs:
        if criterion not in cache:
            cache[criterion] = prefix_ids(tokenizer, criterion)
        seqs.append(build_inputs(tokenizer, criterion, ids, cache[criterion]))
    _check_ids(model, max(max(s) for s, _ in seqs))
    device = next(model.parameters()).device
    out = [None] * len(seqs)
    batches = length_batches([len(s) for s, _ in seqs], batch_tokens)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                input_ids, attn = pad_right([seqs[i][0] for i in batch], pad_id_of(tokenizer))  # [N, L]
                logits = model(input_ids=input_ids.to(device), attention_mask=attn.to(device)).logits  # [N, L, 1]
                probs = torch.sigmoid(logits[..., 0].float()).cpu()                                  # [N, L]
                for j, i in enumerate(batch):
                    ids, start = seqs[i]
                    out[i] = probs[j, start:len(ids)].clone()                                         # [n]
    finally:
        model.train(was_training)
    if stats is not None:
        stats.update(pairs=len(pairs), batches=len(batches), tokens=sum(len(s) for s, _ in seqs),
                     seconds=time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# 2. Inference at RL time: relevance [B, K, T] aligned with the rollout's response tokens

def relevance(model, tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor, criteria: list, K: int,
              batch_tokens: int | None = None, *, stats: dict | None = None) -> torch.Tensor:
    """w[b, k, t] in [0, 1]: relevance of response token t of row b to criterion k (spec §4).

    response_ids [B, T], response_mask [B, T] (1 on real tokens incl. the EOS): the rollout's tensors, as they are.
    criteria: B lists of criterion strings (row b's prompt's rubric descriptions), each at most K long.
    Returns float32 [B, K, T] on response_ids' device: 0 on padded constraint slots (k >= len(criteria[b])) and on
    positions where response_mask is 0. Only tokens where the mask is 1 are read, in order, so it works for right-
    and left-padded responses alike. `stats` (optional dict) receives pairs, batches, tokens, seconds.
    """
    B, T = response_ids.shape
    if len(criteria) != B:
        raise ValueError(f"criteria has {len(criteria)} rows, response_ids {B}")
    out = torch.zeros(B, K, T, dtype=torch.float32)                              # [B, K, T]
    ids_cpu, mask_cpu = response_ids.detach().cpu(), response_mask.detach().cpu().bool()
    pairs, where = [], []
    for b in range(B):
        if len(criteria[b]) > K:
            raise ValueError(f"row {b} has {len(criteria[b])} criteria, more than K={K}")
        pos = mask_cpu[b].nonzero(as_tuple=True)[0]                              # response positions, EOS included
        if len(pos) == 0:
            continue
        ids = ids_cpu[b, pos].tolist()
        for k, criterion in enumerate(criteria[b]):
            if criterion:
                pairs.append((criterion, ids))
                where.append((b, k, pos))
    for (b, k, pos), p in zip(where, score_pairs(model, tokenizer, pairs, batch_tokens, stats)):
        out[b, k, pos] = p
    return out.to(response_ids.device)


def check_tokenizer(disc_tokenizer, policy_tokenizer, where: str = "the discriminator") -> None:
    """Refuse a discriminator whose vocabulary differs from the policy's: it reads the policy's ids as they are."""
    from support import models
    if not models.same_vocabulary(disc_tokenizer, policy_tokenizer):
        raise DiscriminatorError(
            f"{where} does not share the policy's tokenizer ({len(disc_tokenizer)} vs {len(policy_tokenizer)} "
            "tokens, or the same size with different ids). It reads the policy's response token ids as they are "
            "(spec §4), so it must use the same vocabulary: pick a backbone of the policy's family (see "
            "models.DEFAULT_DISCRIMINATOR_BACKBONE) or train one with "
            "`python discriminator.py ensure --policy POLICY --out DIR`.")


def load_discriminator(path, policy_tokenizer=None, device=None, dtype=None, allow_untrained: bool = False):
    """(model, tokenizer) of a saved discriminator; checks the vocabulary against the policy's when given."""
    from support import models
    model = models.load_token_classifier(str(path), device=device, dtype=dtype).eval()
    tokenizer = models.load_tokenizer(str(path))
    if not allow_untrained and getattr(model.config, "rtt_head_trained", False) is not True:
        raise DiscriminatorError(f"{path} has no trained relevance head (config.rtt_head_trained is not set): "
                                 "train one with `python discriminator.py train` or `ensure`")
    if policy_tokenizer is not None:
        check_tokenizer(tokenizer, policy_tokenizer, where=f"the discriminator {path}")
    return model, tokenizer


# ---------------------------------------------------------------------------------------------------------------
# 3. Labels: character spans -> token labels, and the one record format

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
    """0/1 per token from character spans of the original text (see editors.edit_char_spans).

    (s, e) with e > s: every token whose characters overlap [s, e) is 1.
    (i, i), an insertion point: the token containing character i is 1 (the first token the insertion alters);
    if none does (a character no token covers), the first token starting after i.

    >>> token_labels([(0, 3), (3, 7), (7, 8)], [(4, 5)])
    [0, 1, 0]
    >>> token_labels([(0, 3), (3, 7), (7, 8)], [(7, 7)])
    [0, 0, 1]
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
    return ids, token_labels(offsets, editors.edit_char_spans(original, edited))


def make_record(tokenizer, text: str, *, criterion: str, family: str, prompt_id: str, source: str,
                spans: list | None = None, scope: str = editors.SPAN, **extra) -> dict:
    """One label row. scope "whole": every token (EOS included) is 1; else the tokens the spans select."""
    ids, offsets = tokenize_response(tokenizer, text)
    labels = [1] * len(ids) if scope == editors.WHOLE else token_labels(offsets, spans or [])
    return {"prompt_id": prompt_id, "family": family, "criterion": criterion, "source": source, "scope": scope,
            "text": text, "ids": ids, "labels": labels, **extra}


def write_jsonl(rows: list, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path) -> list:
    import data
    return [row for _, row in data.iter_jsonl(path)]


def _bump(counts: dict, key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def _keep_if_labelled(rows: list, counts: dict, row: dict) -> None:
    """Append a minimal-modification row, unless its edit labels no token at all; count which."""
    if sum(row["labels"]) == 0:
        _bump(counts, "no_labelled_token")
    else:
        rows.append(row)
        _bump(counts, "kept")


def _items(prompt) -> list:
    """(index in prompt.rubrics, instruction_id, kwargs) of the rubric items that have a rule checker."""
    return [(k, it.checker["instruction_id"], it.checker.get("kwargs") or {})
            for k, it in enumerate(prompt.rubrics) if it.checker]


# ---------------------------------------------------------------------------------------------------------------
# 4. The three label sources

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
    edit verified by the checkers) and label the union of the verified edits' spans (editors.py).

    samples: [(prompt index, policy text)] or [(prompt index, policy text, index of the prompt it was sampled for)]
    (see reuse_samples; rows record that prompt's id as `base_prompt_id`, and the train/eval split keeps rows that
    share a base sample on one side). counts: filled with what was kept and dropped, and why.
    """
    from tqdm import tqdm
    rows = []
    for pi, sample, *src in tqdm(samples, desc="rule labels", unit="response"):
        p = prompts[pi]
        base_id = prompts[src[0]].id if src else p.id
        items = _items(p)
        _bump(counts, "responses")
        _bump(counts, "items_without_checker", len(p.rubrics) - len(items))
        if not items:
            continue
        base = editors.clean_base(sample, max_words=max_words)
        if not base:
            _bump(counts, "empty_sample")
        check = editors.checker_for(p.instruction)
        text = editors.repair(base, [(i, kw) for _, i, kw in items], check)
        if text is None:
            _bump(counts, "repair_failed")
            continue
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 > max_tokens:
            _bump(counts, "too_long")
            continue
        _bump(counts, "repaired")
        for j, (k, iid, kw) in enumerate(items):
            res = editors.violating_edits(text, [(i, w) for _, i, w in items], j, check)
            if not res.edits:
                key = f"dropped[{iid}]: {res.reason}"
                _bump(counts, key)
                continue
            _keep_if_labelled(rows, counts, make_record(
                tokenizer, text, criterion=p.rubrics[k].description, family=iid, prompt_id=p.id, source="rule",
                spans=res.spans, scope=res.scope, edited=res.edits[0], n_edits=len(res.edits), base_prompt_id=base_id))
    return rows


EDIT_TEMPLATE = """\
Below is a response that meets every criterion in the list. Edit it as little as possible so that it no longer \
meets the criterion to break, while it still meets all the other criteria. Change only the characters or words you \
must; copy everything else exactly.

Criterion to break: {criterion}
Criteria to keep: {others}

Response:
{response}

Write only the edited response, with no explanation."""

WRITE_TEMPLATE = "{instruction}\n\nMake sure the response meets every requirement above."


def _strip_reply(reply: str) -> str:
    """An LLM's edited response without code fences or an "Edited response:" preamble."""
    text = reply.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    for lead in ("Edited response:", "Edited Response:", "Response:"):
        if text.startswith(lead):
            text = text[len(lead):]
    return text.strip()


def llm_edit_labels(llm, prompts: list, responses: list, tokenizer, counts: dict, write: bool = False) -> list:
    """Source 1, the paper's method: an editor LLM minimally edits a response that meets every constraint so that
    only constraint k is violated; the diff labels the tokens. With a rule checker, an edit is kept only if k flips
    and every other checked constraint keeps its verdict; items without one are kept unverified (`verified`).

    llm: anything with generate(list of chat-message lists) -> list[str] (judge.LocalLLM / judge.EndpointLLM).
    responses: [(prompt index, response text)]; write=True asks the LLM to write the response first.
    """
    if write:
        replies = llm.generate([[{"role": "user", "content": WRITE_TEMPLATE.format(
            instruction=prompts[pi].instruction)}] for pi, _ in responses])
        responses = [(pi, _strip_reply(r)) for (pi, _), r in zip(responses, replies)]
    jobs, convs = [], []
    for pi, text in responses:
        p = prompts[pi]
        check = editors.checker_for(p.instruction)
        items = _items(p)
        if not text.strip() or not all(check(i, kw, text) for _, i, kw in items):
            _bump(counts, "response_not_all_met")
            continue
        for k, item in enumerate(p.rubrics):
            others = "; ".join(r.description for j, r in enumerate(p.rubrics) if j != k) or "(none)"
            convs.append([{"role": "user", "content": EDIT_TEMPLATE.format(criterion=item.description,
                                                                         others=others, response=text)}])
            jobs.append((pi, text, k))
    replies = llm.generate(convs) if convs else []
    rows = []
    for (pi, text, k), reply in zip(jobs, replies):
        p, edited = prompts[pi], _strip_reply(reply)
        item = p.rubrics[k]
        if not edited or edited == text:
            _bump(counts, "dropped_unchanged")
            continue
        verified = False
        if item.checker:
            check = editors.checker_for(p.instruction)
            iid, kw = item.checker["instruction_id"], item.checker.get("kwargs") or {}
            if check(iid, kw, edited):
                _bump(counts, "dropped_not_violated")
                continue
            if not all(check(i, w, edited) for j, i, w in _items(p) if j != k):
                _bump(counts, "dropped_flips_other")
                continue
            verified = True
        iid = item.checker["instruction_id"] if item.checker else "llm"
        sc = editors.scope(iid, item.checker.get("kwargs") if item.checker else None)
        _keep_if_labelled(rows, counts, make_record(
            tokenizer, text, criterion=item.description, family=iid, prompt_id=p.id, source="editor_llm",
            spans=editors.edit_char_spans(text, edited), scope=sc, edited=edited, verified=verified))
    return rows


EXTRACT_TEMPLATE = """\
Identify which parts of the response are relevant to the criterion: the text that makes the response meet or fail it.

Criterion: {criterion}

Response:
{response}

Answer with JSON only, in this form:
{{"type": "all relevant" | "all irrelevant" | "partial relevant", "relevant texts": ["exact substring", ...]}}
For "partial relevant", copy each relevant text exactly as it appears in the response."""

EXTRACT_TYPES = ("all relevant", "all irrelevant", "partial relevant")


def parse_extraction(reply: str, response: str, counts: dict | None = None):
    """Greedy parse of a greedy-extraction reply: the JSON object from the first "{" to the last "}".

    Returns "all" | "none" | a list of character spans of `response` (every occurrence of every quote) | None
    (unusable). counts (optional) gets: malformed (no parsable JSON object), bad_type, quotes_kept,
    quotes_not_found (a quote that is not an exact substring), no_matching_quote (partial, but no quote found).

    >>> parse_extraction('Sure: {"type": "partial relevant", "relevant texts": ["cat"]}', "a cat")
    [(2, 5)]
    """
    counts = counts if counts is not None else {}
    s, e = reply.find("{"), reply.rfind("}")
    try:
        obj = json.loads(reply[s:e + 1]) if 0 <= s < e else None
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        _bump(counts, "malformed")
        return None
    kind = str(obj.get("type", "")).strip().lower()
    if kind not in EXTRACT_TYPES:
        _bump(counts, "bad_type")
        return None
    if kind == "all relevant":
        return "all"
    if kind == "all irrelevant":
        return "none"
    quotes = obj.get("relevant texts", obj.get("relevant_texts", []))
    spans = []
    for q in quotes if isinstance(quotes, list) else []:
        if not isinstance(q, str) or not q or q not in response:
            _bump(counts, "quotes_not_found")
            continue
        _bump(counts, "quotes_kept")
        start = response.find(q)
        while start >= 0:
            spans.append((start, start + len(q)))
            start = response.find(q, start + 1)
    if not spans:
        _bump(counts, "no_matching_quote")
        return None
    return sorted(set(spans))


def extraction_labels(llm, prompts: list, responses: list, tokenizer, counts: dict) -> list:
    """Source 3, the paper's greedy-extraction baseline: the LLM quotes the relevant spans of each response."""
    jobs, convs = [], []
    for pi, text in responses:
        for k, item in enumerate(prompts[pi].rubrics):
            convs.append([{"role": "user", "content": EXTRACT_TEMPLATE.format(criterion=item.description,
                                                                            response=text)}])
            jobs.append((pi, text, k))
    rows = []
    for (pi, text, k), reply in zip(jobs, llm.generate(convs) if convs else []):
        p, item = prompts[pi], prompts[pi].rubrics[k]
        parsed = parse_extraction(reply, text, counts)
        if parsed is None:
            continue
        iid = item.checker["instruction_id"] if item.checker else "llm"
        row = make_record(tokenizer, text, criterion=item.description, family=iid, prompt_id=p.id,
                          source="extraction", spans=[] if parsed in ("all", "none") else parsed,
                          scope=editors.WHOLE if parsed == "all" else editors.SPAN)
        rows.append(row)
        _bump(counts, "kept")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# 5. Training: token BCE on response tokens, split by prompt

@dataclass
class TrainConfig:
    """Defaults = the reference trainer (spec §4) unless said otherwise."""
    lr: float = 9e-6                 # peak learning rate (spec: 9e-6; ensure_discriminator uses a CPU setting)
    epochs: float = 2.0              # passes over the training labels (spec: 2)
    batch_size: int = 8              # sequences per optimizer step
    micro_batch_tokens: int = 2048   # padded tokens per forward/backward; gradients accumulate (memory lever)
    warmup: float = 0.03             # warm-up fraction of the steps (spec: 3 %)
    min_lr_ratio: float = 0.1        # cosine decays to this fraction of lr (spec: 0.1)
    beta1: float = 0.9               # Adam betas (spec: 0.9, 0.95)
    beta2: float = 0.95
    weight_decay: float = 0.0        # not given by the spec: plain Adam
    grad_clip: float = 1.0           # spec: 1.0
    max_len: int = 512               # longer inputs are cut at the end of the response (counted)
    train_layers: int = 0            # 0: train everything; N: only the top N decoder layers + norm + head [ours]
    keep_layers: int = 0             # 0: the whole backbone; N: only its bottom N decoder layers [ours]
    max_minutes: float = 0.0         # 0: no limit; else stop training after this many minutes (counted)
    seed: int = 42


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


def encode_rows(tokenizer, rows: list, max_len: int = 512, counts: dict | None = None) -> list:
    """Label rows -> training examples {"input_ids", "start", "labels"} through build_inputs."""
    out, cache = [], {}
    for r in rows:
        ids = r.get("ids") or tokenize_response(tokenizer, r["text"])[0]
        labels = r["labels"]
        if len(ids) != len(labels):
            raise ValueError(f"row of prompt {r.get('prompt_id')}: {len(ids)} ids but {len(labels)} labels")
        if r["criterion"] not in cache:
            cache[r["criterion"]] = prefix_ids(tokenizer, r["criterion"])
        input_ids, start = build_inputs(tokenizer, r["criterion"], ids, cache[r["criterion"]])
        if len(input_ids) > max_len:
            if counts is not None:
                _bump(counts, "truncated")
            input_ids = input_ids[:max_len]
            labels = labels[:max(0, max_len - start)]
        out.append({"input_ids": input_ids, "start": start, "labels": labels, "family": r.get("family", "?")})
    return out


def collate(examples: list, pad_id: int) -> tuple:
    """(input_ids [N, L], attention_mask [N, L], labels [N, L]) with label -1 off the response (ignored)."""
    input_ids, attn = pad_right([e["input_ids"] for e in examples], pad_id)
    labels = torch.full(input_ids.shape, -1.0)
    for i, e in enumerate(examples):
        labels[i, e["start"]:e["start"] + len(e["labels"])] = torch.tensor(e["labels"], dtype=torch.float)
    return input_ids, attn, labels


def token_bce(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy over response tokens only (labels >= 0); "mean" over those tokens, or "sum".

    logits, labels: [N, L]; labels -1 where there is no label (template, padding).
    """
    valid = labels >= 0                                                            # [N, L]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[valid].float(), labels[valid].float(), reduction="sum")
    return loss / valid.sum().clamp(min=1) if reduction == "mean" else loss


def lr_factor(step: int, total: int, warmup: float, min_ratio: float) -> float:
    """Linear warm-up over `warmup`*total steps, then cosine from 1 to min_ratio (spec §4)."""
    w = max(1, round(warmup * total))
    if step < w:
        return (step + 1) / w
    progress = min(1.0, (step - w) / max(1, total - w))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def grouped_batches(lengths: list, batch_size: int, rng: random.Random) -> list:
    """Shuffled batches of similar lengths (shuffle, sort within windows of 16 batches, cut, shuffle batches)."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    out, window = [], batch_size * 16
    for s in range(0, len(idx), window):
        chunk = sorted(idx[s:s + window], key=lambda i: lengths[i])
        out += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def keep_bottom_layers(model, n: int):
    """A smaller discriminator: keep only the bottom `n` decoder layers of the backbone (0 = keep all) [ours].

    The final norm and the head stay. Training and RL-time inference both get ~L/n times cheaper; the saved config
    says n layers, so the folder reloads as it was trained.
    """
    layers = model.base_model.layers
    if 0 < n < len(layers):
        model.base_model.layers = torch.nn.ModuleList(list(layers)[:n])
        model.config.num_hidden_layers = n
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = list(model.config.layer_types)[:n]
    return model


def freeze_bottom(model, train_layers: int) -> int:
    """Train only the top `train_layers` decoder layers (+ final norm + head): embeddings and the layers below are
    frozen, so backward stops at the first trainable layer. Returns the number of trainable parameters."""
    if train_layers > 0:
        layers = model.base_model.layers
        for p in model.parameters():
            p.requires_grad_(False)
        for module in list(layers[max(0, len(layers) - train_layers):]) + [model.base_model.norm]:
            for p in module.parameters():
                p.requires_grad_(True)
        head = model.score if hasattr(model, "score") else model.classifier
        for p in head.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_discriminator(model, tokenizer, examples: list, cfg: TrainConfig, log=print) -> dict:
    """Fine-tune `model` (a token classifier with one logit) on encoded examples; returns the history."""
    from tqdm import tqdm
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    keep_bottom_layers(model, cfg.keep_layers)
    device = next(model.parameters()).device
    n_train = freeze_bottom(model, cfg.train_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    lengths = [len(e["input_ids"]) for e in examples]
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg.warmup, cfg.min_lr_ratio))
    pad = pad_id_of(tokenizer)
    log(f"[discriminator] training {n_train / 1e6:.1f}M of {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
        f"parameters on {len(examples)} examples: {total} steps of {cfg.batch_size}, lr {cfg.lr:g}")
    model.train()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    history = {"loss": [], "lr": [], "stopped_early": False}
    t0, step = time.perf_counter(), 0
    bar = tqdm(total=total, desc="training discriminator", unit="step")
    while step < total:
        for batch in grouped_batches(lengths, cfg.batch_size, rng):
            if step >= total:
                break
            if cfg.max_minutes and time.perf_counter() - t0 > 60 * cfg.max_minutes:
                history["stopped_early"] = True
                step = total
                break
            n_tok = sum(len(examples[i]["labels"]) for i in batch)
            loss_sum = 0.0
            for micro in length_batches([lengths[i] for i in batch], cfg.micro_batch_tokens):
                ids, attn, labels = collate([examples[batch[j]] for j in micro], pad)
                logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits[..., 0]  # [N, L]
                loss = token_bce(logits, labels.to(device), reduction="sum") / max(n_tok, 1)
                loss.backward()
                loss_sum += loss.item()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            history["loss"].append(loss_sum)
            history["lr"].append(sched.get_last_lr()[0])
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.4f}", lr=f"{history['lr'][-1]:.2e}")
    bar.close()
    model.eval()
    history["seconds"] = time.perf_counter() - t0
    history["steps"] = len(history["loss"])
    return history


def save_discriminator(model, tokenizer, out_dir, info: dict | None = None) -> Path:
    """save_pretrained + tokenizer, with config.rtt_head_trained = True so models.load_token_classifier keeps the
    head; `info` (labels, config, metrics, timings) goes to rtt_discriminator.json next to the weights."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for p in model.parameters():
        p.requires_grad_(True)
    model.config.rtt_head_trained = True
    model.config.rtt_template = TEMPLATE
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if info is not None:
        (out / "rtt_discriminator.json").write_text(json.dumps(info, indent=2, default=str))
    return out


# ---------------------------------------------------------------------------------------------------------------
# 6. Metrics (pure functions) and evaluation per family

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
        groups["ALL span"] = [i for i, s in enumerate(scopes) if s == editors.SPAN]
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
    return [p.numpy() for p in score_pairs(model, tokenizer, pairs, batch_tokens)]


def evaluate_rows(model, tokenizer, rows: list, batch_tokens: int | None = None) -> dict:
    probs = predict_rows(model, tokenizer, rows, batch_tokens)
    return metrics_by_family(probs, [r["labels"] for r in rows], [r["family"] for r in rows],
                             [r.get("scope", editors.SPAN) for r in rows])


def format_metrics(metrics: dict) -> str:
    """A plain-text table, one line per family."""
    lines = [f"{'family':46s} {'rows':>5s} {'tokens':>7s} {'pos%':>6s} {'acc':>6s} {'prec':>6s} {'rec':>6s} "
             f"{'F1':>6s} {'AUROC':>6s}"]
    for name, m in metrics.items():
        au = "  -   " if math.isnan(m["auroc"]) else f"{m['auroc']:6.3f}"
        lines.append(f"{name:46s} {m['rows']:5d} {m['tokens']:7d} {100 * m['positives'] / max(m['tokens'], 1):6.1f} "
                     f"{m['accuracy']:6.3f} {m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f} {au}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# 7. ensure_discriminator: what the trainer calls when no discriminator exists

# The CPU setting measured for the embedded default (README, "Discriminator"): a higher lr than the spec's 9e-6 and
# only the top layers trained, so that labels + training fit in well under 30 minutes on 2 cores.
CPU_DEFAULTS = dict(n_prompts=400, n_samples=128, max_new_tokens=48, lr=4e-4, epochs=2.0, keep_layers=12,
                    train_layers=6, batch_size=8)


def default_dir(policy_name: str) -> Path:
    """Where train.py keeps (and, if missing, builds) the discriminator of a policy: $RTT_CACHE/discriminators/NAME."""
    from support import models
    return models.cache_dir() / "discriminators" / Path(policy_name).name.replace(":", "_")


def ensure_discriminator(policy_name: str, out_dir, *, backbone: str | None = None,
                         prompts_path="data/train.jsonl", n_prompts: int = CPU_DEFAULTS["n_prompts"],
                         n_samples: int = CPU_DEFAULTS["n_samples"],
                         max_new_tokens: int = CPU_DEFAULTS["max_new_tokens"], lr: float = CPU_DEFAULTS["lr"],
                         epochs: float = CPU_DEFAULTS["epochs"], keep_layers: int = CPU_DEFAULTS["keep_layers"],
                         train_layers: int = CPU_DEFAULTS["train_layers"], batch_size: int = CPU_DEFAULTS["batch_size"],
                         eval_frac: float = 0.15, seed: int = 42, device=None, log=print) -> Path:
    """Path of a trained discriminator for `policy_name`: `out_dir` if it already holds one, else build offline
    rule labels from policy samples on the training prompts, train, evaluate on held-out prompts, save, return it.

    n_prompts training prompts are labelled; the policy is sampled on the first n_samples of them and the others
    reuse those samples as their base text (`reuse_samples`). Everything it makes goes to out_dir (samples.jsonl,
    labels.jsonl, the model, rtt_discriminator.json with counts, metrics and timings); an interrupted run resumes
    from the samples / labels it finished.
    """
    import data
    from support import models
    out = Path(out_dir)
    if (out / "config.json").exists():
        try:
            cfg = json.loads((out / "config.json").read_text())
        except json.JSONDecodeError:
            cfg = {}
        if cfg.get("rtt_head_trained") is True:
            check_tokenizer(models.load_tokenizer(str(out)), models.load_tokenizer(policy_name),
                            where=f"the discriminator in {out}")
            log(f"[discriminator] using the trained discriminator in {out}")
            return out
    backbone = backbone or models.DEFAULT_DISCRIMINATOR_BACKBONE.get(policy_name, policy_name)
    device = torch.device(device) if device is not None else models.default_device()
    t_all = time.perf_counter()
    log(f"[discriminator] no trained discriminator in {out}: building one for policy {policy_name} "
        f"(backbone {backbone}) from offline rule-based labels")

    policy_tok = models.load_tokenizer(policy_name)
    disc_tok = models.load_tokenizer(backbone)
    check_tokenizer(disc_tok, policy_tok, where=f"backbone {backbone}")

    out.mkdir(parents=True, exist_ok=True)
    prompts = data.load_rubric_jsonl(prompts_path)
    chosen = random.Random(seed).sample(prompts, min(n_prompts, len(prompts)))
    t_sample = t_label = 0.0
    counts = {}
    if (out / "labels.jsonl").exists():  # a previous, interrupted run: reuse what it finished
        rows = read_jsonl(out / "labels.jsonl")
        log(f"[discriminator] reusing {len(rows)} label rows from {out / 'labels.jsonl'}")
    else:
        if (out / "samples.jsonl").exists():
            index = {p.id: i for i, p in enumerate(chosen)}
            samples = [(index[r["prompt_id"]], r["response"]) for r in read_jsonl(out / "samples.jsonl")
                       if r["prompt_id"] in index]
            log(f"[discriminator] reusing {len(samples)} policy samples from {out / 'samples.jsonl'}")
        else:
            n_samples = min(n_samples or len(chosen), len(chosen))
            log(f"[discriminator] 1/3 sampling the policy on {n_samples} of the {len(chosen)} training prompts "
                f"({max_new_tokens} new tokens each)")
            t0 = time.perf_counter()
            policy = models.load_causal_lm(policy_name, device=device)
            samples = sample_responses(policy, policy_tok, chosen[:n_samples], max_new_tokens=max_new_tokens,
                                       seed=seed)
            del policy
            t_sample = time.perf_counter() - t0
            write_jsonl([{"prompt_id": chosen[pi].id, "response": t} for pi, t in samples], out / "samples.jsonl")
        log("[discriminator] 2/3 repairing each sample to meet all its constraints, then breaking one at a time "
            "(every edit verified by the rule checkers)")
        t0 = time.perf_counter()
        rows = rule_labels(chosen, reuse_samples(samples, len(chosen)), policy_tok, counts)
        t_label = time.perf_counter() - t0
        write_jsonl(rows, out / "labels.jsonl")
        log(f"[discriminator] {len(rows)} label rows -> {out / 'labels.jsonl'}  ({json.dumps(counts)})")

    train_rows, eval_rows = split_by_prompt(rows, eval_frac, seed)
    cfg = TrainConfig(lr=lr, epochs=epochs, keep_layers=keep_layers, train_layers=train_layers,
                      batch_size=batch_size, seed=seed)
    log(f"[discriminator] 3/3 training on {len(train_rows)} rows, evaluating on {len(eval_rows)} "
        "(split by prompt)")
    model = models.load_token_classifier(backbone, device=device)
    enc_counts = {}
    history = train_discriminator(model, disc_tok, encode_rows(disc_tok, train_rows, cfg.max_len, enc_counts), cfg,
                                  log=log)
    metrics = evaluate_rows(model, disc_tok, eval_rows) if eval_rows else {}
    if metrics:
        log(format_metrics(metrics))
    info = {"policy": policy_name, "backbone": backbone, "labels": str(out / "labels.jsonl"), "label_counts": counts,
            "train_rows": len(train_rows), "eval_rows": len(eval_rows), "config": asdict(cfg),
            "final_loss": history["loss"][-1] if history["loss"] else None, "metrics": metrics,
            "seconds": {"sample": t_sample, "label": t_label, "train": history["seconds"],
                        "total": time.perf_counter() - t_all}}
    save_discriminator(model, disc_tok, out, info)
    log(f"[discriminator] saved to {out} in {info['seconds']['total'] / 60:.1f} min")
    return out


# ---------------------------------------------------------------------------------------------------------------
# 8. show: a response with each token shaded by its relevance (ANSI 24-bit background colours)

def shade(tokens: list, probs: list, color: bool = True) -> str:
    """Tokens on a background from dark (0) to bright red (1); without colour, "token[0.87]" for p >= 0.5."""
    out = []
    for tok, p in zip(tokens, probs):
        if color:
            r, g, b = int(40 + 215 * p), int(40 + 40 * (1 - p)), 40
            out.append(f"\x1b[48;2;{r};{g};{b}m\x1b[97m{tok}\x1b[0m")
        else:
            out.append(f"{tok}[{p:.2f}]" if p >= 0.5 else tok)
    return "".join(out)


def _token_strings(tokenizer, ids: list) -> list:
    """Each token's text (decoding one id at a time; a byte split inside a character shows as '?')."""
    return [tokenizer.decode([i]).replace("\ufffd", "?") or tokenizer.convert_ids_to_tokens(i) for i in ids]


# ---------------------------------------------------------------------------------------------------------------
# 9. CLI

def _llm_from_args(args):
    import judge
    if args.editor_url:
        return judge.EndpointLLM(args.editor_url, args.editor_name, max_tokens=args.editor_max_tokens)
    if args.editor_model:
        return judge.LocalLLM(args.editor_model, max_new_tokens=args.editor_max_tokens)
    raise errors.UsageError("--source editor/extract needs an editor LLM, pass --editor-model NAME or --editor-url URL")


def read_label_rows(path) -> list:
    """The rows of a label file, each checked for what train / eval / show read (DataError: file, line, field)."""
    import data
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
    import data
    rows = []
    for lineno, r in data.iter_jsonl(path):
        for key in ("prompt_id", "response"):
            if not isinstance(r.get(key), str):
                raise data.DataError(path, lineno, key, "expected a string (rows are {prompt_id, response})")
        rows.append(r)
    return rows


def cmd_label(args):
    import data
    from support import models
    prompts = data.load_rubric_jsonl(args.prompts)
    tok = models.load_tokenizer(args.policy)
    if args.responses:  # earlier samples (the .samples.jsonl a previous run wrote, or any responses)
        by_id = {p.id: p for p in prompts}
        given = [r for r in read_response_rows(args.responses) if r["prompt_id"] in by_id]
        given = given[:args.n_prompts * args.samples_per_prompt]
        chosen = list({r["prompt_id"]: by_id[r["prompt_id"]] for r in given}.values())
        index = {p.id: i for i, p in enumerate(chosen)}
        samples = [(index[r["prompt_id"]], r["response"]) for r in given]
    else:
        chosen = random.Random(args.seed).sample(prompts, min(args.n_prompts, len(prompts)))
        policy = models.load_causal_lm(args.policy, device=args.device)
        t0 = time.perf_counter()
        n_samples = min(args.n_samples or len(chosen), len(chosen))
        samples = sample_responses(policy, tok, chosen[:n_samples], args.samples_per_prompt, args.max_new_tokens,
                                   seed=args.seed)
        path = Path(args.out).with_suffix(".samples.jsonl")
        write_jsonl([{"prompt_id": chosen[pi].id, "response": t} for pi, t in samples], path)
        print(f"{len(samples)} policy samples in {time.perf_counter() - t0:.0f} s -> {path} (reuse: --responses)")
        samples = reuse_samples(samples, len(chosen))
    counts, t0 = {}, time.perf_counter()
    if args.source == "rule":
        rows = rule_labels(chosen, samples, tok, counts, max_words=args.max_words)
    else:
        llm = _llm_from_args(args)
        samples = [(pi, text) for pi, text, *_ in samples]
        if args.source == "editor":
            if not args.editor_writes:  # the rule repair gives responses that meet every constraint
                fixed = []
                for pi, text in samples:
                    items = [(i, kw) for _, i, kw in _items(chosen[pi])]
                    r = editors.repair(editors.clean_base(text, args.max_words), items,
                                       editors.checker_for(chosen[pi].instruction))
                    if r is not None:
                        fixed.append((pi, r))
                samples = fixed
            rows = llm_edit_labels(llm, chosen, samples, tok, counts, write=args.editor_writes)
        else:
            rows = extraction_labels(llm, chosen, samples, tok, counts)
    write_jsonl(rows, args.out)
    fam = {}
    for r in rows:
        fam[r["family"]] = fam.get(r["family"], 0) + 1
    print(f"{len(rows)} label rows -> {args.out} in {time.perf_counter() - t0:.0f} s")
    print("counts:", json.dumps(counts, indent=1))
    print("rows per family:", json.dumps(dict(sorted(fam.items())), indent=1))


def _train_config(args) -> TrainConfig:
    return TrainConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                       micro_batch_tokens=args.micro_batch_tokens, warmup=args.warmup, min_lr_ratio=args.min_lr_ratio,
                       beta1=args.beta1, beta2=args.beta2, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                       max_len=args.max_len, train_layers=args.train_layers, keep_layers=args.keep_layers,
                       max_minutes=args.max_minutes,
                       seed=args.seed)


def cmd_train(args):
    from support import models
    backbone = args.backbone or models.DEFAULT_DISCRIMINATOR_BACKBONE.get(args.policy, args.policy)
    tok = models.load_tokenizer(backbone)
    check_tokenizer(tok, models.load_tokenizer(args.policy), where=f"backbone {backbone}")
    rows = read_label_rows(args.labels)
    train_rows, eval_rows = split_by_prompt(rows, args.eval_frac, args.seed)
    print(f"{len(rows)} rows: {len(train_rows)} train / {len(eval_rows)} eval, split by prompt")
    cfg = _train_config(args)
    model = models.load_token_classifier(backbone, device=args.device)
    counts = {}
    history = train_discriminator(model, tok, encode_rows(tok, train_rows, cfg.max_len, counts), cfg)
    first = float(np.mean(history["loss"][:5])) if history["loss"] else float("nan")
    last = float(np.mean(history["loss"][-5:])) if history["loss"] else float("nan")
    print(f"trained {history['steps']} steps in {history['seconds']:.0f} s; loss {first:.4f} -> {last:.4f}")
    metrics = evaluate_rows(model, tok, eval_rows) if eval_rows else {}
    if metrics:
        print(format_metrics(metrics))
    save_discriminator(model, tok, args.out, {"backbone": backbone, "policy": args.policy, "labels": args.labels,
                                              "config": asdict(cfg), "encode_counts": counts,
                                              "train_rows": len(train_rows), "eval_rows": len(eval_rows),
                                              "loss_first5": first, "loss_last5": last, "metrics": metrics,
                                              "train_seconds": history["seconds"],
                                              "stopped_early": history["stopped_early"]})
    print(f"saved to {args.out}")


def cmd_eval(args):
    model, tok = load_discriminator(args.model, device=args.device)
    rows = read_label_rows(args.labels)
    if args.split != "all":
        rows = split_by_prompt(rows, args.eval_frac, args.seed)[0 if args.split == "train" else 1]
    t0 = time.perf_counter()
    metrics = evaluate_rows(model, tok, rows, args.batch_tokens or None)
    print(f"{len(rows)} rows ({args.split} split) scored in {time.perf_counter() - t0:.1f} s")
    print(format_metrics(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))


def cmd_show(args):
    model, tok = load_discriminator(args.model, device=args.device, allow_untrained=args.allow_untrained)
    if args.labels:
        rows = read_label_rows(args.labels)
        if not -len(rows) <= args.index < len(rows):
            raise errors.UsageError(f"--index {args.index} is past the {len(rows)} rows of {args.labels}, "
                                    "pass a smaller --index")
        row = rows[args.index]
        criterion, ids, gold = row["criterion"], row.get("ids") or tokenize_response(tok, row["text"])[0], row["labels"]
    else:
        if not (args.criterion and args.text is not None):
            raise errors.UsageError("show needs a text to shade, pass --criterion and --text, or --labels FILE "
                                    "--index I")
        criterion, ids, gold = args.criterion, tokenize_response(tok, args.text)[0], None
    probs = score_pairs(model, tok, [(criterion, ids)])[0].tolist()
    strings = _token_strings(tok, ids)
    color = not args.no_color and sys.stdout.isatty() or args.color
    print(f"Criterion: {criterion}")
    print(shade(strings, probs, color))
    if gold is not None:
        print("\nlabels:")
        print(shade(strings, [float(g) for g in gold], color))
    print(f"\n{len(ids)} tokens, {sum(p >= 0.5 for p in probs)} at relevance >= 0.5 (dark = 0, red = 1)")


def main(argv=None):
    ap = argparse.ArgumentParser(description="RTT token-level relevance discriminator (spec §4): "
                                             "label | train | eval | show | ensure")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--seed", type=int, default=42, help="seed of prompt choice, sampling, split and training")
        p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
        p.add_argument("--threads", type=errors.non_negative_int, default=0,
                       help="torch CPU threads (0: torch's default). On a CPU shared with other jobs, 1 thread per "
                            "process is often several times faster than oversubscribed threads")

    p = sub.add_parser("label", help="build token labels (one JSONL row per response x constraint)")
    common(p)
    p.add_argument("--policy", default="smollm2-135m", help="policy whose samples are labelled (its tokenizer too)")
    p.add_argument("--prompts", default="data/train.jsonl", help="rubric prompts (data.py format)")
    p.add_argument("--n-prompts", type=int, default=300, help="prompts drawn from --prompts")
    p.add_argument("--samples-per-prompt", type=int, default=1, help="policy samples per prompt")
    p.add_argument("--n-samples", type=int, default=0,
                   help="sample the policy on only this many of the prompts; the others reuse those samples "
                        "(0: sample every prompt)")
    p.add_argument("--max-new-tokens", type=errors.positive_int, default=48, help="length of each policy sample")
    p.add_argument("--max-words", type=int, default=60, help="words of the sample kept as the base of a response")
    p.add_argument("--responses", default=None, help="JSONL {prompt_id, response} to use instead of sampling")
    p.add_argument("--source", choices=["rule", "editor", "extract"], default="rule",
                   help="rule: offline minimal modification (editors.py); editor: the paper's minimal modification "
                        "by an editor LLM; extract: the paper's greedy-extraction baseline")
    p.add_argument("--editor-model", default=None, help="local editor/extractor LLM (alias, folder or hub id)")
    p.add_argument("--editor-url", default=None, help="OpenAI-compatible endpoint of the editor LLM (.../v1)")
    p.add_argument("--editor-name", default="default", help="model name the endpoint expects")
    p.add_argument("--editor-max-tokens", type=int, default=512, help="new tokens per editor reply")
    p.add_argument("--editor-writes", action="store_true",
                   help="the editor LLM writes the all-constraints-met response (paper); default: rule repair")
    p.add_argument("--out", default="runs/disc/labels.jsonl", help="label JSONL to write (samples go next to it)")
    p.set_defaults(fn=cmd_label)

    p = sub.add_parser("train", help="fine-tune a backbone + one-logit head with token BCE")
    common(p)
    d = TrainConfig()
    p.add_argument("--labels", required=True, help="label JSONL from `label`")
    p.add_argument("--policy", default="smollm2-135m", help="the policy whose tokenizer the discriminator must share")
    p.add_argument("--backbone", default=None, help="discriminator backbone (default: the policy's, models.py)")
    p.add_argument("--out", required=True, help="folder for save_pretrained")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (spec §4: 9e-6)")
    p.add_argument("--epochs", type=float, default=d.epochs, help="epochs (spec §4: 2)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per optimizer step")
    p.add_argument("--micro-batch-tokens", type=int, default=d.micro_batch_tokens,
                   help="padded tokens per forward/backward (memory lever; gradients accumulate)")
    p.add_argument("--warmup", type=float, default=d.warmup, help="warm-up fraction (spec §4: 0.03)")
    p.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help="cosine floor / lr (spec §4: 0.1)")
    p.add_argument("--beta1", type=float, default=d.beta1, help="Adam beta1 (spec §4: 0.9)")
    p.add_argument("--beta2", type=float, default=d.beta2, help="Adam beta2 (spec §4: 0.95)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay (spec: none)")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="gradient-norm clip (spec §4: 1.0)")
    p.add_argument("--max-len", type=int, default=d.max_len, help="max template + response tokens")
    p.add_argument("--train-layers", type=int, default=d.train_layers,
                   help="train only the top N decoder layers + head (0 = all; CPU lever, ours)")
    p.add_argument("--keep-layers", type=int, default=d.keep_layers,
                   help="keep only the bottom N decoder layers of the backbone (0 = all; smaller, faster; ours)")
    p.add_argument("--max-minutes", type=float, default=d.max_minutes, help="stop training after this long (0: off)")
    p.add_argument("--eval-frac", type=float, default=0.15, help="fraction of PROMPTS held out for evaluation")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="token accuracy / precision / recall / F1 at 0.5 / AUROC, per family")
    common(p)
    p.add_argument("--model", required=True, help="a folder saved by `train`")
    p.add_argument("--labels", required=True, help="label JSONL from `label` (the one the model was trained on)")
    p.add_argument("--split", choices=["eval", "train", "all"], default="eval",
                   help="which side of the by-prompt split (same --eval-frac / --seed as train)")
    p.add_argument("--eval-frac", type=float, default=0.15, help="fraction of prompts held out (as in train)")
    p.add_argument("--batch-tokens", type=int, default=0, help="padded tokens per inference batch (0: 2048 on CPU, "
                   "16384 on GPU)")
    p.add_argument("--json", default=None, help="also write the metrics here")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("show", help="print a response with each token shaded by its relevance to a criterion")
    common(p)
    p.add_argument("--model", required=True, help="a folder saved by `train`")
    p.add_argument("--criterion", default=None, help="the constraint text (as in a rubric)")
    p.add_argument("--text", default=None, help="the response text")
    p.add_argument("--labels", default=None, help="or show row --index of a label file, with its labels")
    p.add_argument("--index", type=int, default=0, help="which row of --labels to show (0 = the first)")
    p.add_argument("--color", action="store_true", help="force ANSI colours")
    p.add_argument("--no-color", action="store_true", help="mark tokens with p >= 0.5 as token[p] instead")
    p.add_argument("--allow-untrained", action="store_true", help="accept a backbone without a trained head")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("ensure", help="label + train + eval in one go (what train.py calls), unless --out has one")
    common(p)
    p.add_argument("--policy", default="smollm2-135m", help="the policy whose tokenizer the discriminator shares")
    p.add_argument("--out", required=True, help="folder of the discriminator (kept as is if it holds one)")
    p.add_argument("--backbone", default=None, help="discriminator backbone (default: the policy's, models.py)")
    p.add_argument("--prompts", default="data/train.jsonl", help="rubric prompts to label (data.py format)")
    p.add_argument("--n-prompts", type=int, default=CPU_DEFAULTS["n_prompts"], help="training prompts to label")
    p.add_argument("--n-samples", type=int, default=CPU_DEFAULTS["n_samples"],
                   help="prompts the policy is sampled on (the other prompts reuse these samples)")
    p.add_argument("--max-new-tokens", type=errors.positive_int, default=CPU_DEFAULTS["max_new_tokens"],
                   help="policy sample length")
    p.add_argument("--lr", type=float, default=CPU_DEFAULTS["lr"], help="peak lr (CPU setting; spec: 9e-6)")
    p.add_argument("--epochs", type=float, default=CPU_DEFAULTS["epochs"], help="epochs (spec: 2)")
    p.add_argument("--keep-layers", type=int, default=CPU_DEFAULTS["keep_layers"],
                   help="bottom backbone layers kept (0 = all)")
    p.add_argument("--train-layers", type=int, default=CPU_DEFAULTS["train_layers"], help="top layers trained")
    p.set_defaults(fn=lambda a: ensure_discriminator(
        a.policy, a.out, backbone=a.backbone, prompts_path=a.prompts, n_prompts=a.n_prompts, n_samples=a.n_samples,
        max_new_tokens=a.max_new_tokens, lr=a.lr, epochs=a.epochs, keep_layers=a.keep_layers,
        train_layers=a.train_layers, seed=a.seed, device=a.device))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.fn(args)


if __name__ == "__main__":
    errors.main_boundary(main)
