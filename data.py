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

Bad rows raise `DataError` naming the file, the line and the field.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

MAX_CONSTRAINTS = 20  # the reference caps K at 20 (spec §7); `max_constraints` changes it, <= 0 means no cap
ROLES = {"system", "user", "assistant"}


class DataError(ValueError):
    """A bad row: `file`, `line` (1-based) and `field` say where."""

    def __init__(self, file, line, field, message):
        self.file, self.line, self.field = str(file), line, field
        super().__init__(f"{file}:{line}: field {field!r}: {message}")


def iter_jsonl(path):
    """(line number, JSON object) for each non-blank line of a JSONL file; DataError names the line otherwise.
    Every JSONL reader of the project goes through here (data, judge, discriminator, evaluate)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, lineno, "<json>", f"malformed JSON: {e}") from None
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
    check_kwargs: build every checker once to reject kwargs the registry does not accept (e.g. a misspelt key).
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
    _check_items(items, messages, err, llm_judge, check_kwargs)
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
    import judge
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    out = set()
    for c in checkers:
        try:
            out.add(judge.describe(c.checker["instruction_id"], c.checker["kwargs"], prompt).strip())
        except judge.CheckerError:
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


def _check_items(items, messages, err, llm_judge, check_kwargs):
    """Unknown ids, bad kwargs, missing descriptions (filled from the registry)."""
    if not any(it.checker for it in items):
        return
    import judge  # the registries live there (NLTK set-up included)
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    for k, it in enumerate(items):
        if it.checker is None:
            continue
        iid = it.checker["instruction_id"]
        if not judge.has_checker(iid):
            if not llm_judge:
                raise err(f"rubrics[{k}].checker.instruction_id",
                          f"unknown instruction id {iid!r} and no LLM judge configured "
                          "(pass an LLM judge, or use an IFEval / IFBench id)")
            if not it.description:
                raise err(f"rubrics[{k}].description", f"unknown instruction id {iid!r} and no description "
                                                       "for the LLM judge to read")
            it.checker = None
            continue
        if check_kwargs or not it.description:
            try:
                text = judge.describe(iid, it.checker["kwargs"], prompt)
            except judge.CheckerError as e:
                raise err(f"rubrics[{k}].checker.kwargs", str(e)) from None
            if not it.description:
                it.description = text


def save_rubric_jsonl(prompts: list[RubricPrompt], path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
