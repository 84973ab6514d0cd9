"""
The paper's label sources that need an LLM (spec §4): minimal modification by an editor LLM, and the greedy-extraction
baseline. Both write the rows of make_labels.py.

- Minimal modification (`llm_edit_labels`): the LLM edits a response that meets every constraint as little as
  possible so that only constraint k is violated; the diff labels the tokens (make_labels.token_labels). With a rule
  checker an edit is kept only when k flips and every other checked constraint keeps its verdict.
- Greedy extraction (`extraction_labels`): the LLM quotes the spans of the response that are relevant to k, as JSON;
  every occurrence of every exact quote is labelled.

`llm` is anything with generate(list of chat-message lists) -> list[str] (support.llm.LocalLLM / EndpointLLM), so
tests pass a scripted fake.
"""
import json

from data import family
from labels import rule_edits
from labels.make_labels import bump, checked_items, keep_if_labelled, make_record


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

    llm: anything with generate(list of chat-message lists) -> list[str] (support.llm.LocalLLM / EndpointLLM).
    responses: [(prompt index, response text)]; write=True asks the LLM to write the response first.
    """
    if write:
        replies = llm.generate([[{"role": "user", "content": WRITE_TEMPLATE.format(
            instruction=prompts[pi].instruction)}] for pi, _ in responses])
        responses = [(pi, _strip_reply(r)) for (pi, _), r in zip(responses, replies)]
    jobs, convs = [], []
    for pi, text in responses:
        p = prompts[pi]
        check = rule_edits.checker_for(p.instruction)
        items = checked_items(p)
        if not text.strip() or not all(check(i, kw, text) for _, i, kw in items):
            bump(counts, "response_not_all_met")
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
            bump(counts, "dropped_unchanged")
            continue
        verified = False
        if item.checker:
            check = rule_edits.checker_for(p.instruction)
            iid, kw = item.checker["instruction_id"], item.checker.get("kwargs") or {}
            if check(iid, kw, edited):
                bump(counts, "dropped_not_violated")
                continue
            if not all(check(i, w, edited) for j, i, w in checked_items(p) if j != k):
                bump(counts, "dropped_flips_other")
                continue
            verified = True
        iid = family(item.checker and item.checker["instruction_id"])
        sc = rule_edits.scope(iid, item.checker.get("kwargs") if item.checker else None)
        keep_if_labelled(rows, counts, make_record(
            tokenizer, text, criterion=item.description, family=iid, prompt_id=p.id, source="editor_llm",
            spans=rule_edits.edit_char_spans(text, edited), scope=sc, edited=edited, verified=verified))
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
        bump(counts, "malformed")
        return None
    kind = str(obj.get("type", "")).strip().lower()
    if kind not in EXTRACT_TYPES:
        bump(counts, "bad_type")
        return None
    if kind == "all relevant":
        return "all"
    if kind == "all irrelevant":
        return "none"
    quotes = obj.get("relevant texts", obj.get("relevant_texts", []))
    spans = []
    for q in quotes if isinstance(quotes, list) else []:
        if not isinstance(q, str) or not q or q not in response:
            bump(counts, "quotes_not_found")
            continue
        bump(counts, "quotes_kept")
        start = response.find(q)
        while start >= 0:
            spans.append((start, start + len(q)))
            start = response.find(q, start + 1)
    if not spans:
        bump(counts, "no_matching_quote")
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
        iid = family(item.checker and item.checker["instruction_id"])
        row = make_record(tokenizer, text, criterion=item.description, family=iid, prompt_id=p.id,
                          source="extraction", spans=[] if parsed in ("all", "none") else parsed,
                          scope=rule_edits.WHOLE if parsed == "all" else rule_edits.SPAN)
        rows.append(row)
        bump(counts, "kept")
    return rows
