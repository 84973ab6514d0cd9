"""Offline rule editors (labels/rule_edits.py): the repair meets every constraint, each editor breaks exactly its own one.

Every verdict comes from the official checkers through support.checkers.run_checker.
"""
import pytest

from labels import rule_edits

BASE = rule_edits.clean_base(
    "Dear neighbour, I hope you are well. I wanted to talk about the fence between our gardens. It has become old "
    "and some boards are broken. I think we could share the cost of a new one. Please let me know what you think.")

# One typical kwargs set per family (values as in data/train.jsonl).
KWARGS = {
    "keywords:existence": {"keywords": ["cabin", "river"]},
    "keywords:frequency": {"keyword": "walnut", "frequency": 3, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["great", "like", "basically"]},
    "keywords:letter_frequency": {"letter": "r", "let_frequency": 5, "let_relation": "at least"},
    "length_constraints:number_words": {"num_words": 80, "relation": "at least"},
    "length_constraints:number_sentences": {"num_sentences": 4, "relation": "at least"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 3},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "detectable_content:number_placeholders": {"num_placeholders": 2},
    "detectable_format:number_bullet_lists": {"num_bullets": 3},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:title": {},
    "startend:end_checker": {"end_phrase": "Is there anything else I can help with?"},
    "startend:quotation": {},
    "change_case:english_lowercase": {},
    "change_case:english_capital": {},
    "change_case:capital_word_frequency": {"capital_frequency": 3, "capital_relation": "at least"},
    "punctuation:no_comma": {},
    "count:word_count_range": {"min_words": 60, "max_words": 110},
    "count:keywords_multiple": {"keyword1": "promise", "keyword2": "bridge", "keyword3": "shadow",
                                "keyword4": "engine", "keyword5": "ocean"},
    "sentence:keyword": {"word": "window", "N": 2},
    "count:numbers": {"N": 3},
    "format:emoji": {},
}
# The "less than" variants are whole-response constraints with their own editors.
LESS_THAN = {
    "keywords:frequency": {"keyword": "walnut", "frequency": 2, "relation": "less than"},
    "keywords:letter_frequency": {"letter": "z", "let_frequency": 3, "let_relation": "less than"},
    "length_constraints:number_words": {"num_words": 120, "relation": "less than"},
    "length_constraints:number_sentences": {"num_sentences": 8, "relation": "less than"},
    "change_case:capital_word_frequency": {"capital_frequency": 4, "capital_relation": "less than"},
}
# A partner constraint that is compatible with the family (data/make_data.py CLASHES), to check "only this one flips".
PARTNER = {"keywords:existence": ("punctuation:no_comma", {})}
DEFAULT_PARTNER = ("keywords:existence", {"keywords": ["lantern"]})


@pytest.fixture(scope="module")
def check():
    pytest.importorskip("judge")
    return rule_edits.checker_for("")


def _cases():
    for fam in rule_edits.FAMILIES:
        yield fam, KWARGS[fam]
        if fam in LESS_THAN:
            yield fam, LESS_THAN[fam]


@pytest.mark.parametrize("fam,kw", list(_cases()), ids=lambda x: x if isinstance(x, str) else str(x)[:40])
def test_each_editor_flips_exactly_its_constraint(check, fam, kw):
    items = [(fam, kw), PARTNER.get(fam, DEFAULT_PARTNER)]
    text = rule_edits.repair(BASE, items, check)
    assert text is not None, f"repair failed for {fam}"
    assert all(check(i, k, text) for i, k in items)
    res = rule_edits.violating_edits(text, items, 0, check)
    assert res.edits, f"{fam}: no verified edit ({res.reason})"
    for edited in res.edits:
        assert not check(fam, kw, edited)                 # the constraint is now violated ...
        assert check(*items[1], edited)                    # ... and the other one still holds
    assert res.scope == rule_edits.scope(fam, kw)
    if res.scope == rule_edits.SPAN:
        assert res.spans and all(0 <= s <= e <= len(text) for s, e in res.spans)


def test_every_family_has_an_editor_and_a_repair(check):
    assert sorted(rule_edits.EDITORS) == sorted(rule_edits.FAMILIES)
    assert set(rule_edits.REPAIR_ORDER) == set(rule_edits.FAMILIES)


def test_whole_scope_decisions():
    assert rule_edits.scope("punctuation:no_comma", {}) == rule_edits.WHOLE
    assert rule_edits.scope("change_case:english_lowercase", {}) == rule_edits.WHOLE
    assert rule_edits.scope("count:word_count_range", {"min_words": 1, "max_words": 9}) == rule_edits.WHOLE
    assert rule_edits.scope("keywords:frequency", LESS_THAN["keywords:frequency"]) == rule_edits.WHOLE
    assert rule_edits.scope("keywords:frequency", KWARGS["keywords:frequency"]) == rule_edits.SPAN
    assert rule_edits.scope("detectable_content:postscript", KWARGS["detectable_content:postscript"]) == rule_edits.SPAN


def test_span_labels_cover_every_equivalent_carrier(check):
    """Exactly 3 bullets: removing any one is a minimal edit, so all three markers are labelled."""
    items = [("detectable_format:number_bullet_lists", {"num_bullets": 3})]
    text = rule_edits.repair(BASE, items, check)
    res = rule_edits.violating_edits(text, items, 0, check)
    assert len(res.edits) == 3
    assert [text[s:e] for s, e in res.spans] == ["*", "*", "*"]


def test_keyword_spans_are_the_keyword_occurrences(check):
    items = [("keywords:existence", {"keywords": ["cabin"]})]
    text = rule_edits.repair(BASE + ["We slept in a cabin.", "The cabin was warm."], items, check)
    res = rule_edits.violating_edits(text, items, 0, check)
    assert [text[s:e].lower() for s, e in res.spans] == ["cabin", "cabin"]


# ---- the character diff ----------------------------------------------------------------------------------------

def test_edit_char_spans_substitution_deletion_insertion():
    assert rule_edits.edit_char_spans("the red cat", "the big cat") == [(4, 7)]           # substitution: the word
    assert rule_edits.edit_char_spans("the cabin.", "the thing.") == [(4, 9)]             # not letter by letter
    assert rule_edits.edit_char_spans("P.S. Thanks", "Thanks") == [(0, 4)]                # deletion, space trimmed
    assert rule_edits.edit_char_spans("a b", "a, b") == [(1, 1)]                          # insertion point
    assert rule_edits.edit_char_spans("the end.", "the end.!") == [(8, 8)]                # insertion at the end
    assert rule_edits.edit_char_spans("same", "same") == []


def test_clean_base_strips_markup_and_keeps_sentences():
    out = rule_edits.clean_base("# Plan\n- buy 3 apples, pears\n\n**Then** cook them slowly. Ok.", max_words=60)
    assert out == ["Plan buy apples pears Then cook them slowly."]
    assert all("," not in s and not any(c.isdigit() for c in s) for s in out)
    assert rule_edits.clean_base("") == []


def test_bundled_prompts_repair_rate(check):
    """On real prompts of data/train.jsonl most samples can be repaired and every kept edit is verified."""
    data = pytest.importorskip("data")
    prompts = data.load_rubric_jsonl("data/train.jsonl")[:40]
    repaired = 0
    for p in prompts:
        items = [(r.checker["instruction_id"], r.checker["kwargs"]) for r in p.rubrics if r.checker]
        text = rule_edits.repair(BASE, items, check)
        if text is None:
            continue
        repaired += 1
        for k in range(len(items)):
            for edited in rule_edits.violating_edits(text, items, k, check, max_edits=2).edits:
                verdicts = [check(i, kw, edited) for i, kw in items]
                assert verdicts == [j != k for j in range(len(items))]
    assert repaired >= 36


@pytest.mark.parametrize("fam,kw", [("keywords:forbidden_words", KWARGS["keywords:forbidden_words"]),
                                    ("keywords:letter_frequency", LESS_THAN["keywords:letter_frequency"]),
                                    ("keywords:frequency", LESS_THAN["keywords:frequency"])])
def test_whole_scope_edits_keep_an_all_capitals_response_in_capitals(check, fam, kw):
    items = [(fam, kw), ("change_case:english_capital", {})]
    text = rule_edits.repair(BASE, items, check)
    res = rule_edits.violating_edits(text, items, 0, check)
    assert res.edits and all(check("change_case:english_capital", {}, e) for e in res.edits)
