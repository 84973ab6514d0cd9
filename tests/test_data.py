"""Tests for data.py (format, conversion of the three input formats, bad rows) and the bundled data sets."""
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

import data
from data import DataError, load_rubric_jsonl
from support import checkers

ROOT = Path(__file__).resolve().parent.parent
SHARED_IFEVAL = ROOT.parent / "shared" / "data" / "ifeval_input_data.jsonl"
sys.path.insert(0, str(ROOT / "data"))

NATIVE = {"id": "n1", "messages": [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Write a note about foxes without commas."}],
          "rubrics": [{"description": "In your entire response, refrain from the use of any commas.",
                       "checker": {"instruction_id": "punctuation:no_comma", "kwargs": {}}},
                      {"description": "The note says foxes are clever."}],
          "source": "test"}
IFEVAL = {"key": 7, "prompt": "Write a limerick about a cat. Answer with less than 50 words. No commas.",
          "instruction_id_list": ["length_constraints:number_words", "punctuation:no_comma"],
          "kwargs": [{"num_words": 50, "relation": "less than", "keywords": None}, {}]}
HIR = {"prompt": "Write a poem about rain. Include the word umbrella.",
       "rubrics": ["Include the keyword umbrella.", "The poem is about rain."],
       "source": "hir",
       "ground_truth": json.dumps({"instruction_id_list": ["keywords:existence"],
                                   "kwargs": [{"keywords": ["umbrella"]}]})}


def write(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_native_format_round_trip(tmp_path):
    [p] = load_rubric_jsonl(write(tmp_path, [NATIVE]))
    assert p.id == "n1" and p.source == "test" and len(p.rubrics) == 2
    assert p.instruction == "Write a note about foxes without commas."
    assert p.rubrics[0].checker == {"instruction_id": "punctuation:no_comma", "kwargs": {}}
    assert p.rubrics[1].checker is None
    out = tmp_path / "out.jsonl"
    data.save_rubric_jsonl([p], out)
    [q] = load_rubric_jsonl(out)
    assert q == p


def test_ifeval_rows_are_converted(tmp_path):
    [p] = load_rubric_jsonl(write(tmp_path, [IFEVAL]))
    assert p.id == "7" and p.messages == [{"role": "user", "content": IFEVAL["prompt"]}]
    assert [r.checker["instruction_id"] for r in p.rubrics] == IFEVAL["instruction_id_list"]
    assert p.rubrics[0].description == "Answer with less than 50 words."  # the registry's own text
    assert p.rubrics[1].description.startswith("In your entire response, refrain from the use of any commas")


def test_hir_rows_are_converted(tmp_path):
    paired = dict(HIR, rubrics=["Include the keyword umbrella."])          # as many strings as ids: paired
    rule = dict(HIR, ground_truth={"instruction_id_list": [], "kwargs": []},
                rubrics=["[rule]def evaluate(response):\n    return 'rain' in response"])
    a, b, c = load_rubric_jsonl(write(tmp_path, [paired, HIR, rule]))
    assert len(a.rubrics) == 1 and a.rubrics[0].description == "Include the keyword umbrella."
    assert a.rubrics[0].checker == {"instruction_id": "keywords:existence", "kwargs": {"keywords": ["umbrella"]}}
    # mismatched counts: one checker item (registry text) + the rubric strings as LLM items
    assert [r.checker is not None for r in b.rubrics] == [True, False, False]
    assert b.rubrics[0].description.startswith("Include keywords")
    assert c.rubrics[0].code.startswith("def evaluate") and c.rubrics[0].checker is None
    assert a.source == "hir" and a.id.startswith("d:")


@pytest.mark.parametrize("row,line_field", [
    ("{not json", "<json>"),
    ({"rubrics": [{"description": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, "rubrics"),
    ({"messages": [{"role": "user", "content": "x"}], "rubrics": []}, "rubrics"),
    ({"messages": [{"role": "robot", "content": "x"}], "rubrics": ["x"]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": "x"}], "rubrics": [{"checker": {"instruction_id":
                                                                                 "punctuation:no_comma"}}]},
     "rubrics[0].description"),
    ({"messages": [{"role": "user", "content": "x"}],
      "rubrics": [{"description": "d", "checker": {"instruction_id": "made:up", "kwargs": {}}}]},
     "rubrics[0].checker.instruction_id"),
    ({"messages": [{"role": "user", "content": "x"}],
      "rubrics": [{"description": "d", "checker": {"instruction_id": "punctuation:no_comma",
                                                    "kwargs": {"nope": 1}}}]},
     "rubrics[0].checker.kwargs.nope"),
    (dict(IFEVAL, kwargs=[{}]), "kwargs"),
    (dict(HIR, ground_truth="{oops"), "ground_truth"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, line_field):
    path = write(tmp_path, [NATIVE, row])
    with pytest.raises(DataError) as e:
        load_rubric_jsonl(path)
    assert e.value.line == 2 and e.value.field == line_field and e.value.file == str(path)
    assert f"{path}:2: field {line_field!r}" in str(e.value)


def _words_row(kwargs, iid="keywords:existence"):
    return {"messages": [{"role": "user", "content": "Write about my brother."}],
            "rubrics": [{"description": "d", "checker": {"instruction_id": iid, "kwargs": kwargs}}]}


@pytest.mark.parametrize("row,field,says", [
    # a string where a list is expected: the checker would look for the letters b, r, o, ...
    (_words_row({"keywords": "brother"}), "rubrics[0].checker.kwargs.keywords", "list of words"),
    # nothing given: the checker would draw two random keywords
    (_words_row({}), "rubrics[0].checker.kwargs.keywords", "keywords missing: the checker would make up"),
    (_words_row({"keywords": []}), "rubrics[0].checker.kwargs.keywords", "non-empty list"),
    (_words_row({"keywords": ["ok", 3]}), "rubrics[0].checker.kwargs.keywords", "list of words"),
    # a negative count: the checker would draw a random one
    (_words_row({"num_words": -5, "relation": "less than"}, "length_constraints:number_words"),
     "rubrics[0].checker.kwargs.num_words", "whole number >= 0"),
    (_words_row({"num_words": 5.5, "relation": "less than"}, "length_constraints:number_words"),
     "rubrics[0].checker.kwargs.num_words", "whole number"),
    (_words_row({"num_words": True, "relation": "less than"}, "length_constraints:number_words"),
     "rubrics[0].checker.kwargs.num_words", "whole number"),
    (_words_row({"num_words": "50", "relation": "less than"}, "length_constraints:number_words"),
     "rubrics[0].checker.kwargs.num_words", "whole number"),
    (_words_row({"num_words": 50}, "length_constraints:number_words"),
     "rubrics[0].checker.kwargs.relation", "relation missing"),
    (_words_row({"num_words": 50, "relation": "at most"}, "length_constraints:number_words"),
     "rubrics[0].checker.kwargs.relation", "'less than', 'at least'"),
    (_words_row({"letter": "#", "let_frequency": 2, "let_relation": "at least"}, "keywords:letter_frequency"),
     "rubrics[0].checker.kwargs.letter", "random value"),
    (_words_row({"letter": "ab", "let_frequency": 2, "let_relation": "at least"}, "keywords:letter_frequency"),
     "rubrics[0].checker.kwargs.letter", "one letter"),
    (_words_row({"min_words": 90, "max_words": 50}, "count:word_count_range"),
     "rubrics[0].checker.kwargs.min_words", "above max_words"),
    (_words_row({"word": "cabin", "N": 0}, "sentence:keyword"), "rubrics[0].checker.kwargs.N", ">= 1"),
    (_words_row({"reference_text": "a b c", "percentage": 120}, "ratio:overlap"),
     "rubrics[0].checker.kwargs.percentage", "0 to 100"),
    (_words_row({"language": "xx"}, "language:response_language"), "rubrics[0].checker.kwargs", "KeyError"),
    # IFEval-style rows name their own fields
    (dict(IFEVAL, kwargs=[{"num_words": -1, "relation": "less than"}, {}]), "kwargs[0].num_words", ">= 0"),
    (dict(IFEVAL, kwargs=[{"num_words": 50, "relation": "less than"}, {"x": 1}]), "kwargs[1].x", "takes no"),
    (dict(IFEVAL, instruction_id_list=["length_constraints:number_words", "made:up"]), "instruction_id_list[1]",
     "unknown instruction id"),
    (dict(HIR, ground_truth={"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": "umbrella"}]}),
     "ground_truth.kwargs[0].keywords", "list of words"),
])
def test_kwargs_that_would_change_the_verdict_are_refused(tmp_path, row, field, says):
    path = write(tmp_path, [NATIVE, row])
    with pytest.raises(DataError) as e:
        load_rubric_jsonl(path)
    assert e.value.line == 2 and e.value.field == field and says in e.value.message


def test_kwargs_the_official_data_uses_still_load(tmp_path):
    rows = [_words_row({"keywords": ["Brother", "boat"]}),                       # sorted by the checker: fine
            _words_row({"forbidden_words": ["a", "a"]}, "keywords:forbidden_words"),   # de-duplicated: fine
            _words_row({"num_bullets": 0}, "detectable_format:number_bullet_lists"),    # 0 is a count
            _words_row({"N": 2.0}, "count:numbers"),                               # IFBench writes counts as floats
            _words_row({"letter": "T", "let_frequency": 2, "let_relation": "at least"}, "keywords:letter_frequency"),
            # the benchmark's own quirk (IFEval key 1122: letter "#"), accepted in IFEval-format rows only
            {"key": 1122, "prompt": "p", "instruction_id_list": ["keywords:letter_frequency"],
             "kwargs": [{"letter": "#", "let_frequency": 4, "let_relation": "at least", "keywords": None}]}]
    for i, r in enumerate(rows):
        r["id"] = f"r{i}"
    assert len(load_rubric_jsonl(write(tmp_path, rows))) == 6


@pytest.mark.skipif(not SHARED_IFEVAL.exists(), reason="needs ../shared/data/ifeval_input_data.jsonl")
def test_all_541_ifeval_rows_load():
    prompts = load_rubric_jsonl(SHARED_IFEVAL, max_constraints=0)
    assert len(prompts) == 541 and sum(len(p.rubrics) for p in prompts) == 834


def test_a_bad_kwarg_no_longer_gives_a_wrong_verdict(tmp_path):
    """Before: `keywords: "brother"` was checked as the letters b, r, o, t, h, e, r, so this passed."""
    assert checkers.run_checker("keywords:existence", {"keywords": "brother"}, "My brother bought a boat.")
    with pytest.raises(DataError, match="list of words"):
        load_rubric_jsonl(write(tmp_path, [_words_row({"keywords": "brother"})]))


@pytest.mark.parametrize("content,field,says", [
    (b'{"id": "a", "messages": [{"role": "user", "content": "caf\xe9"}]}\n', "<text>", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", "<json>", "nested too deeply"),
    (b"[1, 2]\n", "<json>", "expected a JSON object"),
])
def test_unreadable_lines_name_the_line(tmp_path, content, field, says):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(NATIVE).encode() + b"\n\n" + content)
    with pytest.raises(DataError) as e:
        load_rubric_jsonl(path)
    assert (e.value.line, e.value.field) == (3, field) and says in e.value.message


def test_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(NATIVE).encode() + b"\n")
    assert load_rubric_jsonl(path)[0].id == "n1"


def test_unknown_id_goes_to_llm_when_one_is_configured(tmp_path):
    row = {"messages": [{"role": "user", "content": "x"}],
           "rubrics": [{"description": "d", "checker": {"instruction_id": "made:up", "kwargs": {}}}]}
    [p] = load_rubric_jsonl(write(tmp_path, [row]), llm_judge=True)
    assert p.rubrics[0].checker is None and p.rubrics[0].description == "d"


def test_constraint_cap_is_a_flag(tmp_path):
    row = {"messages": [{"role": "user", "content": "x"}], "rubrics": [f"criterion {i}" for i in range(21)]}
    path = write(tmp_path, [row])
    with pytest.raises(DataError, match="21 constraints, more than the cap of 20"):
        load_rubric_jsonl(path)
    assert len(load_rubric_jsonl(path, max_constraints=25)[0].rubrics) == 21
    assert len(load_rubric_jsonl(path, max_constraints=0)[0].rubrics) == 21


def test_duplicate_ids(tmp_path):
    with pytest.raises(DataError, match="duplicate id") as e:
        load_rubric_jsonl(write(tmp_path, [NATIVE, NATIVE]))
    assert e.value.field == "id"


# ---------------------------------------------------------------------------------------------------------------
# The bundled sets

CONTRACT_FAMILIES = """keywords:existence keywords:frequency keywords:forbidden_words keywords:letter_frequency
length_constraints:number_words length_constraints:number_sentences length_constraints:number_paragraphs
detectable_content:postscript detectable_content:number_placeholders detectable_format:number_bullet_lists
detectable_format:number_highlighted_sections detectable_format:title startend:end_checker startend:quotation
change_case:english_lowercase change_case:english_capital change_case:capital_word_frequency punctuation:no_comma
count:word_count_range count:keywords_multiple sentence:keyword count:numbers format:emoji""".split()


@pytest.fixture(scope="module")
def bundled():
    return (load_rubric_jsonl(ROOT / "data" / "train.jsonl"), load_rubric_jsonl(ROOT / "data" / "heldout.jsonl"))


def test_bundled_sets(bundled):
    train, held = bundled
    assert len(train) >= 2000 and 150 <= len(held) <= 300
    for split in (train, held):
        fams = Counter(r.checker["instruction_id"] for p in split for r in p.rubrics)
        assert set(fams) == set(CONTRACT_FAMILIES)  # every family, and nothing else
        assert all(1 <= len(p.rubrics) <= 4 for p in split)
        assert all(p.source == "rtt-synth-v1" and len(p.messages) == 1 for p in split)
    # held-out base tasks never appear in training (by id and by text)
    task_text = lambda p: p.instruction.split("\n\n")[0]  # noqa: E731
    assert not {p.meta["task"] for p in train} & {p.meta["task"] for p in held}
    assert not {task_text(p) for p in train} & {task_text(p) for p in held}
    assert len({p.meta["task"] for p in train}) >= 250
    for f in ("train.jsonl", "heldout.jsonl"):
        assert (ROOT / "data" / f).stat().st_size < 5_000_000


def test_bundled_constraints_are_compatible(bundled):
    import make_data
    for p in bundled[0] + bundled[1]:
        ids = [r.checker["instruction_id"] for r in p.rubrics]
        assert len(set(ids)) == len(ids), p.id
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                assert b not in checkers.declared_conflicts(a), (p.id, a, b)
                assert frozenset((a, b)) not in make_data.CLASHES, (p.id, a, b)
        assert make_data.kwargs_consistent([(r.checker["instruction_id"], r.checker["kwargs"]) for r in p.rubrics],
                                           p.instruction.split("\n\n")[0]), p.id
        for r in p.rubrics:  # the description is in the prompt the policy sees
            assert r.description in p.instruction


def test_bundled_kwargs_are_small_policy_sized(bundled):
    for p in bundled[0]:
        for r in p.rubrics:
            kw = r.checker["kwargs"]
            if "num_words" in kw:
                assert 50 <= kw["num_words"] <= 200
            if "num_bullets" in kw:
                assert 1 <= kw["num_bullets"] <= 3
            if "max_words" in kw:
                assert kw["max_words"] <= 250


def test_keyword_pool_has_no_substring_pairs():
    import make_data
    pool = make_data.KEYWORDS
    assert len(set(pool)) == len(pool)
    assert not [(a, b) for a in pool for b in pool if a != b and a in b]
    assert not [w for w in pool if set(w) & set(make_data.RARE_LETTERS)]


def test_make_data_is_deterministic():
    import make_data
    train, held = make_data.build()
    assert make_data.dumps(train) == (ROOT / "data" / "train.jsonl").read_text(encoding="utf-8")
    assert make_data.dumps(held) == (ROOT / "data" / "heldout.jsonl").read_text(encoding="utf-8")


def test_family():
    assert data.family("keywords:existence") == "keywords:existence" and data.family(None) == "llm"


def test_short_profile_fits_the_cpu_cap_and_is_deterministic():
    import make_data
    train, held = make_data.build("short")
    assert make_data.dumps(train) == (ROOT / "data" / "train-short.jsonl").read_text(encoding="utf-8")
    assert make_data.dumps(held) == (ROOT / "data" / "heldout-short.jsonl").read_text(encoding="utf-8")
    assert (len(train), len(held)) == (3000, 300)
    assert not {r["meta"]["task"] for r in train} & {r["meta"]["task"] for r in held}
    sys.path.insert(0, str(ROOT / "experiments"))
    import grid
    assert all(grid.short64(r) for r in train + held)                 # nothing that needs more than 64 tokens
    for r in train + held:
        for item in r["rubrics"]:
            iid, kw = item["checker"]["instruction_id"], item["checker"]["kwargs"]
            assert iid in make_data.SHORT_FAMILIES
            assert kw.get("num_words", 0) <= 40 and kw.get("num_bullets", 0) <= 2 and kw.get("N", 1) == 1
    ks = [len(r["rubrics"]) for r in held]
    assert min(ks) == 1 and max(ks) == 4 and ks.count(4) >= 50          # K = 4 prompts, where AON is sparse
    assert len(data.load_rubric_jsonl(ROOT / "data" / "heldout-short.jsonl")) == 300   # loads and validates
