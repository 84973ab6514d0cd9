"""
Prompts with rubrics: the JSONL format, its loader, and conversion of two foreign formats.

One JSON object per line (the format of data/train.jsonl and data/heldout.jsonl):

    {"id": "train-00042",
     "messages": [{"role": "user", "content": "Write a short email to a neighbour ... Answer with less than 120 words."}],
     "rubrics": [
        {"description": "Answer with less than 120 words.",
         "checker": {"instruction_id": "length_constraints:number_words",
                     "kwargs": {"relation": "less than", "num_words": 120}}},
        {"description": "The email is polite and mentions the broken fence."}
     ],
     "source": "rtt-synth-v1"}

- `messages`: the chat turns given to the policy (OpenAI chat format); the last user message is "the instruction"
  that the LLM judge sees.
- `rubrics`: K items (K <= 20 by default, `max_constraints`). `description` is what the discriminator and the LLM
  judge read. `checker` (optional) names a rule checker of the IFEval / IFBench registries; items without one go to
  the LLM judge. `code` (optional) holds Python source defining `evaluate(response: str) -> bool` (VerIF-style rule
  functions); it is never run unless the judge is given `allow_rule_code=True`, see judge.py.

Also read, and converted on load (`load_rubric_jsonl` tells them apart by their keys):
- IFEval-style rows: `{"key", "prompt", "instruction_id_list", "kwargs"}` (kwargs: one dict per id). Each id
  becomes a rubric item whose description is the registry's own text for those kwargs.
- RTT / HiR-style rows: `{"prompt" | "messages", "rubrics": [str, ...], "source", "ground_truth": {"instruction_id_list",
  "kwargs"}}` (ground_truth may be a JSON string). When there are as many rubric strings as ids they are paired by
  position (the string is the description, the id/kwargs the checker); otherwise every id becomes a checker item
  with the registry's description and every rubric string not equal to one of those becomes an LLM-judged item.
  A rubric string starting with "[rule]" is a VerIF-style rule function: the rest is its Python source.

Bad rows raise `DataError` naming the file, the line and the field; so do checker kwargs that would make the
official checker judge another constraint than the one stated (`validate_kwargs`, below).
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

from support.checkers import CheckerError, build_watching_random, checker_arg_names, describe, has_checker
from support.errors import ProjectError

MAX_CONSTRAINTS = 20  # the reference caps K at 20 (spec §7); `max_constraints` changes it, <= 0 means no cap
ROLES = {"system", "user", "assistant"}


class DataError(ProjectError, ValueError):
    """A bad row: `file`, `line` (1-based) and `field` say where, `message` what is wrong with it."""

    def __init__(self, file, line, field, message):
        self.file, self.line, self.field, self.message = str(file), line, field, message
        super().__init__(f"{file}:{line}: field {field!r}: {message}")


def iter_jsonl(path):
    """(line number, JSON object) for each non-blank line of a JSONL file; DataError names the line otherwise
    (malformed JSON, not UTF-8, nested too deeply for Python's parser, not an object).
    Every JSONL reader of the project goes through here (data, judge, discriminator, evaluate)."""
    with open(path, "rb") as f:  # bytes, decoded line by line: a decoding error then has its exact line number
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a byte-order mark is tolerated
            except UnicodeDecodeError as e:
                raise DataError(path, lineno, "<text>", f"not UTF-8 text (byte {raw[e.start]:#04x} at column "
                                                        f"{e.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, lineno, "<json>", f"malformed JSON: {e}") from None
            except RecursionError:
                raise DataError(path, lineno, "<json>", "JSON nested too deeply to read") from None
            if not isinstance(row, dict):
                raise DataError(path, lineno, "<json>", f"expected a JSON object, got {type(row).__name__}")
            yield lineno, row


@dataclass
class RubricItem:
    description: str            # natural-language constraint: what the discriminator and the LLM judge read
    checker: dict | None = None  # {"instruction_id": str, "kwargs": dict} for an IFEval/IFBench rule checker
    code: str | None = None     # Python source defining evaluate(response) -> bool (run only on explicit opt-in)

    def to_json(self) -> dict:
        out = {"description": self.description}
        if self.checker is not None:
            out["checker"] = self.checker
        if self.code is not None:
            out["code"] = self.code
        return out


@dataclass
class RubricPrompt:
    id: str
    messages: list[dict]
    rubrics: list[RubricItem]
    source: str = ""
    meta: dict = field(default_factory=dict)  # anything else the generator wants to keep (e.g. base task id)

    @property
    def instruction(self) -> str:
        """Text of the last user message (what the LLM judge is shown as the input)."""
        for m in reversed(self.messages):
            if m["role"] == "user":
                return m["content"]
        return ""

    def to_json(self) -> dict:
        out = {"id": self.id, "messages": self.messages, "rubrics": [r.to_json() for r in self.rubrics],
               "source": self.source}
        if self.meta:
            out["meta"] = self.meta
        return out


def family(instruction_id: str | None) -> str:
    """The constraint family used in reports and tables: the instruction id itself; "llm" for items without one."""
    return instruction_id if instruction_id else "llm"


def item_family(item: RubricItem) -> str:
    if item.checker is not None:
        return family(item.checker["instruction_id"])
    return "rule_code" if item.code is not None else "llm"


# ---------------------------------------------------------------------------------------------------------------
# Loading

def load_rubric_jsonl(path, max_constraints: int = MAX_CONSTRAINTS, llm_judge: bool = False,
                      check_kwargs: bool = True) -> list[RubricPrompt]:
    """Read a JSONL file of prompts with rubrics (any of the three formats) into RubricPrompts.

    max_constraints: a row with more rubric items is an error (<= 0: no cap).
    llm_judge: whether an LLM judge will be available. Without one, an unknown instruction id is an error; with one,
      the item keeps its description, loses its checker and goes to the LLM judge.
    check_kwargs: check every checker's kwargs against what its instruction expects (`validate_kwargs`: a misspelt
      key, a string for a list, a negative count, an argument the checker would make up at random).
    """
    path = Path(path)
    out, seen = [], set()
    for lineno, row in iter_jsonl(path):
        p = parse_row(row, path, lineno, max_constraints, llm_judge, check_kwargs)
        if p.id in seen:
            raise DataError(path, lineno, "id", f"duplicate id {p.id!r}")
        seen.add(p.id)
        out.append(p)
    return out


def row_format(row: dict) -> str:
    """"ifeval", "hir" or "rtt" (ours), from the keys of a row."""
    if "instruction_id_list" in row:
        return "ifeval"
    if "ground_truth" in row:
        return "hir"
    return "rtt"


def parse_row(row: dict, file="<row>", line=0, max_constraints=MAX_CONSTRAINTS, llm_judge=False,
              check_kwargs=True) -> RubricPrompt:
    """One row (already JSON-decoded) of any of the three formats -> RubricPrompt; DataError if it is bad."""
    def err(fld, msg):
        return DataError(file, line, fld, msg)

    fmt = row_format(row)
    messages = _messages(row, err)
    if fmt == "ifeval":
        items = _checker_items(row.get("instruction_id_list"), row.get("kwargs"), "instruction_id_list",
                               "kwargs", err)
        source = row.get("source", "ifeval-style")
        pid = row.get("key", row.get("id"))
    elif fmt == "hir":
        gt = row["ground_truth"]
        if isinstance(gt, str):
            try:
                gt = json.loads(gt)
            except json.JSONDecodeError as e:
                raise err("ground_truth", f"not valid JSON: {e}") from None
        if not isinstance(gt, dict):
            raise err("ground_truth", "expected an object with instruction_id_list and kwargs")
        checkers = _checker_items(gt.get("instruction_id_list", []), gt.get("kwargs"),
                                  "ground_truth.instruction_id_list", "ground_truth.kwargs", err)
        texts = row.get("rubrics", [])
        if not isinstance(texts, list):
            raise err("rubrics", "expected a list")
        texts = [_rubric_text(t, f"rubrics[{k}]", err) for k, t in enumerate(texts)]
        if len(texts) == len(checkers):
            items = [_from_text(t) if t.startswith("[rule]") else RubricItem(t, c.checker)
                     for t, c in zip(texts, checkers)]
        else:
            known = _registry_descriptions(checkers, messages)
            items = checkers + [_from_text(t) for t in texts if t not in known]
        source = row.get("source", "hir-style")
        pid = row.get("id", row.get("key"))
    else:
        if "rubrics" not in row:
            raise err("rubrics", "missing (a list of {description, checker?} items)")
        if not isinstance(row["rubrics"], list):
            raise err("rubrics", "expected a list")
        items = [_item(r, f"rubrics[{k}]", err) for k, r in enumerate(row["rubrics"])]
        source = row.get("source", "")
        pid = row.get("id")

    if not items:
        raise err("rubrics", "no constraints: a prompt needs at least one rubric item")
    if max_constraints and max_constraints > 0 and len(items) > max_constraints:
        raise err("rubrics", f"{len(items)} constraints, more than the cap of {max_constraints} "
                             f"(max_constraints / --max-constraints)")
    _check_items(items, messages, err, llm_judge, check_kwargs, fmt)
    pid = str(pid) if pid is not None else f"{Path(str(file)).stem}:{line}"
    meta = row.get("meta", {}) if isinstance(row.get("meta", {}), dict) else {}
    return RubricPrompt(id=pid, messages=messages, rubrics=items, source=str(source), meta=meta)


def _messages(row, err) -> list[dict]:
    if "messages" in row:
        msgs = row["messages"]
        fld = "messages"
    elif "prompt" in row:
        msgs = row["prompt"]
        fld = "prompt"
        if isinstance(msgs, str):
            msgs = [{"role": "user", "content": msgs}]
    else:
        raise err("messages", "missing (need `messages`, a list of chat turns, or `prompt`, a string)")
    if not isinstance(msgs, list) or not msgs:
        raise err(fld, "expected a non-empty list of {role, content} turns or a string")
    for k, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise err(f"{fld}[{k}]", f"expected {{role: one of {sorted(ROLES)}, content: str}}, got {m!r:.120}")
    if not any(m["role"] == "user" for m in msgs):
        raise err(fld, "no user turn")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _checker_items(ids, kwargs_list, ids_field, kwargs_field, err) -> list[RubricItem]:
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise err(ids_field, "expected a list of instruction id strings")
    if kwargs_list is None:
        kwargs_list = [{} for _ in ids]
    if not isinstance(kwargs_list, list) or len(kwargs_list) != len(ids):
        raise err(kwargs_field, f"expected a list of {len(ids)} dicts (one per instruction id)")
    items = []
    for k, (iid, kw) in enumerate(zip(ids, kwargs_list)):
        kw = {} if kw is None else kw
        if not isinstance(kw, dict):
            raise err(f"{kwargs_field}[{k}]", "expected a dict")
        items.append(RubricItem(description="", checker={"instruction_id": iid, "kwargs": kw}))
    return items  # descriptions filled in by _check_items (they need the registry)


def _registry_descriptions(checkers, messages) -> set[str]:
    """Registry texts of the known ids among `checkers` (to drop rubric strings that merely repeat them)."""
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    out = set()
    for c in checkers:
        try:
            out.add(describe(c.checker["instruction_id"], c.checker["kwargs"], prompt).strip())
        except CheckerError:
            pass  # unknown id or bad kwargs: reported by _check_items with its field
    return out


def _rubric_text(t, fld, err) -> str:
    if isinstance(t, dict):  # tolerate {"description": ...} / {"rubric": ...} / {"criterion": ...}
        for key in ("description", "rubric", "criterion", "text"):
            if isinstance(t.get(key), str):
                t = t[key]
                break
    if not isinstance(t, str) or not t.strip():
        raise err(fld, "expected a non-empty string")
    return t.strip()


def _from_text(t: str) -> RubricItem:
    if t.startswith("[rule]"):
        src = t[len("[rule]"):].strip()
        return RubricItem(description=src, code=src)
    return RubricItem(description=t)


def _item(r, fld, err) -> RubricItem:
    if isinstance(r, str):
        r = {"description": r}
    if not isinstance(r, dict):
        raise err(fld, "expected an object {description, checker?, code?}")
    desc = r.get("description")
    if not isinstance(desc, str) or not desc.strip():
        raise err(f"{fld}.description", "missing or empty (every constraint needs a natural-language description)")
    checker = r.get("checker")
    if checker is not None:
        if not isinstance(checker, dict) or not isinstance(checker.get("instruction_id"), str):
            raise err(f"{fld}.checker", "expected {instruction_id: str, kwargs: dict}")
        kw = checker.get("kwargs") or {}
        if not isinstance(kw, dict):
            raise err(f"{fld}.checker.kwargs", "expected a dict")
        checker = {"instruction_id": checker["instruction_id"], "kwargs": kw}
    code = r.get("code")
    if code is not None and (not isinstance(code, str) or not code.strip()):
        raise err(f"{fld}.code", "expected Python source defining evaluate(response) -> bool")
    return RubricItem(description=desc.strip(), checker=checker, code=code)


def _check_items(items, messages, err, llm_judge, check_kwargs, fmt="rtt"):
    """Unknown ids, bad kwargs (validate_kwargs), missing descriptions (filled from the registry)."""
    if not any(it.checker for it in items):
        return
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    for k, it in enumerate(items):
        if it.checker is None:
            continue
        # where item k's checker came from in the row (checker items come first in the converted formats)
        id_field, kwargs_field = {"ifeval": (f"instruction_id_list[{k}]", f"kwargs[{k}]"),
                                  "hir": (f"ground_truth.instruction_id_list[{k}]", f"ground_truth.kwargs[{k}]")
                                  }.get(fmt, (f"rubrics[{k}].checker.instruction_id", f"rubrics[{k}].checker.kwargs"))
        iid = it.checker["instruction_id"]
        if not has_checker(iid):
            if not llm_judge:
                raise err(id_field, f"unknown instruction id {iid!r} and no LLM judge configured "
                                    "(pass an LLM judge, or use an IFEval / IFBench id)")
            if not it.description:
                raise err(f"rubrics[{k}].description", f"unknown instruction id {iid!r} and no description "
                                                       "for the LLM judge to read")
            it.checker = None
            continue
        if check_kwargs:
            try:
                text = validate_kwargs(iid, it.checker["kwargs"], prompt, benchmark_quirks=fmt == "ifeval")
            except KwargsError as e:
                raise err(f"{kwargs_field}.{e.key}" if e.key else kwargs_field, str(e)) from None
        elif not it.description:
            try:
                text = describe(iid, it.checker["kwargs"], prompt)
            except CheckerError as e:
                raise err(kwargs_field, str(e)) from None
        if not it.description:
            it.description = text


# ---------------------------------------------------------------------------------------------------------------
# Checker kwargs: what each instruction expects
#
# The official checkers do not refuse bad kwargs, they work around them, and the verdict is then about another
# constraint than the one the data states: `keywords: "brother"` (a string) is read letter by letter, so "My brother
# bought a boat." passes; a missing keyword list, a negative count (`num_words: -5`) or a missing relation is
# replaced by a RANDOM value. So every kwarg is checked against its kind below, and the checker is then built once
# while watching `random` (build_watching_random, support/checkers.py): if it drew anything, an argument was missing
# or out of range. None values are dropped first, as the official scorer does (hub copies of IFEval fill every key
# with None).

KWARG_KINDS = {
    **dict.fromkeys(["num_words", "num_sentences", "num_paragraphs", "num_bullets", "num_highlights",
                     "num_placeholders", "num_sections", "frequency", "let_frequency", "capital_frequency", "N",
                     "small_n", "min_words", "max_words", "n_start", "n_end"], "count"),   # whole number >= 0
    **dict.fromkeys(["nth_paragraph", "n", "m"], "position"),                               # whole number >= 1
    **dict.fromkeys(["relation", "let_relation", "capital_relation"], "relation"),          # "less than" / "at least"
    **dict.fromkeys(["keywords", "forbidden_words"], "words"),                              # non-empty list of str
    **dict.fromkeys(["keyword", "keyword1", "keyword2", "keyword3", "keyword4", "keyword5", "word", "first_word",
                     "end_phrase", "postscript_marker", "section_spliter", "sep", "options", "prompt_to_repeat",
                     "reference_text", "language"], "text"),                                # non-empty str
    "letter": "letter",                                                                     # one character
    "percentage": "percent",                                                                # 0 to 100
}
KWARG_KINDS_BY_ID = {("sentence:keyword", "N"): "position"}  # "the N-th sentence": N = 0 would read the last one
RELATIONS = ("less than", "at least")
# Values the benchmarks' own rows leave to chance, accepted in IFEval-format rows only (the official scores were made
# that way; our run_checker seeds `random`, so the draw is the same every run): IFEval keys 1122 and 1129 ask for
# the letter "#" / "!" (not a-z: upstream draws a letter), IFBench's repeat:repeat_span has `n_start: 0` (falsy:
# upstream draws a start).
BENCHMARK_QUIRKS = {("keywords:letter_frequency", "letter"), ("repeat:repeat_span", "n_start")}


class KwargsError(ValueError):
    """Bad kwargs for one checker; `key` names the argument (None: the kwargs as a whole)."""

    def __init__(self, key, message):
        self.key = key
        super().__init__(message)


def _kind_error(kind: str, value) -> str | None:
    """Why `value` is not of `kind` (None when it is)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    whole = is_number and float(value).is_integer()  # IFBench's own file writes counts as floats (2.0)
    if kind == "count" and not (whole and value >= 0):
        return f"expected a whole number >= 0, got {value!r}"
    if kind == "position" and not (whole and value >= 1):
        return f"expected a whole number >= 1 (a 1-based position), got {value!r}"
    if kind == "relation" and value not in RELATIONS:
        return f"expected one of {list(RELATIONS)}, got {value!r}"
    if kind == "words" and not (isinstance(value, list) and value
                                and all(isinstance(w, str) and w.strip() for w in value)):
        return f"expected a non-empty list of words (strings), got {value!r:.80}"
    if kind == "text" and not (isinstance(value, str) and value.strip()):
        return f"expected a non-empty string, got {value!r:.80}"
    if kind == "letter" and not (isinstance(value, str) and len(value) == 1):
        return f"expected one letter, got {value!r:.80}"
    if kind == "percent" and not (is_number and 0 <= value <= 100):
        return f"expected a number from 0 to 100, got {value!r}"
    return None


def validate_kwargs(instruction_id: str, kwargs: dict, prompt: str = "", benchmark_quirks: bool = False) -> str:
    """Check one checker's kwargs against what its instruction expects; returns the registry's description.

    Raises KwargsError naming the argument: a key the checker does not take, a value of the wrong kind (a string
    for a list, a negative or fractional count, an unknown relation), min_words > max_words, n_start >= n_end, or
    an argument the checker would draw at random (missing or out of its range). CheckerError (support/checkers.py):
    unknown id.
    benchmark_quirks: accept BENCHMARK_QUIRKS (IFEval-format rows).
    """
    given = {k: v for k, v in kwargs.items() if v is not None}
    takes = checker_arg_names(instruction_id)
    for key, value in given.items():
        if takes is not None and key not in takes:
            raise KwargsError(key, f"{instruction_id} takes no argument {key!r} "
                                   f"(it takes: {', '.join(takes) if takes else 'none'})")
        kind = KWARG_KINDS_BY_ID.get((instruction_id, key), KWARG_KINDS.get(key))
        problem = _kind_error(kind, value) if kind else None
        if problem:
            raise KwargsError(key, problem)
    if given.get("min_words", 0) > given.get("max_words", float("inf")):
        raise KwargsError("min_words", f"min_words {given['min_words']} is above max_words {given['max_words']}")
    if "n_start" in given and given.get("n_end", float("inf")) <= given["n_start"]:
        raise KwargsError("n_end", f"n_end {given['n_end']} is not after n_start {given['n_start']}")
    try:
        description, used, drew = build_watching_random(instruction_id, given, prompt)
    except CheckerError as e:
        raise KwargsError(None, str(e)) from None
    if drew:
        invented = [k for k in used if k not in given] + [k for k in used if k in given and used[k] != given[k]
                                                          and not _same_up_to_order_and_case(used[k], given[k])]
        if benchmark_quirks and invented and all((instruction_id, k) in BENCHMARK_QUIRKS for k in invented):
            return description
        key = invented[0] if invented else None
        shown = ", ".join(f"{k}={given[k]!r}" if k in given else f"{k} missing" for k in invented) or "its kwargs"
        raise KwargsError(key, f"{instruction_id}: {shown}: the checker would make up a random value instead "
                               f"({', '.join(f'{k}={used[k]!r}' for k in invented)}); give "
                               f"{'it' if len(invented) == 1 else 'them'} explicitly, within range")
    return description


def _same_up_to_order_and_case(used, given) -> bool:
    """The checkers sort keyword lists, lower-case letters and strip strings: not a random draw."""
    if isinstance(used, list) and isinstance(given, list):
        return sorted(set(map(str, used))) == sorted(set(map(str, given)))
    if isinstance(used, str) and isinstance(given, str):
        return used.strip().lower() == given.strip().lower()
    return False


def save_rubric_jsonl(prompts: list[RubricPrompt], path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
