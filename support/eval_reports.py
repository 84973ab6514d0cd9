"""
evaluate.py's reports: metrics.json as Markdown (`markdown`, written to OUT/metrics.md) and several runs side by side
(`compare_table`, `python evaluate.py --compare DIR DIR ...`).
"""
import json
from pathlib import Path

from support.benchmarks import EvalDataError

MAIN_KEYS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


def pct(x) -> str:
    return f"{100 * x:.2f}" if isinstance(x, (int, float)) else "-"


def markdown(m: dict) -> str:
    """metrics.json as a Markdown report: the four accuracies, then per-category and per-instruction tables."""
    title = {"ifeval": "IFEval", "ifbench": "IFBench", "heldout": "Held-out rubrics"}.get(m.get("bench"), m.get("bench"))
    lines = [f"# {title}: {m.get('model') or m.get('responses_file')}", "",
             f"{m['n_prompts']} prompts, {m['n_instructions']} instructions; data: {m.get('data_source')}; "
             + (f"responses from {m['responses_file']}; " if m.get("responses_file") else
                f"greedy, max_new_tokens {m.get('max_new_tokens')}; truncated responses: {m.get('truncated', 0)}; ")
             + f"checker errors: {m.get('checker_errors', 0)}.", "",
             "| metric | % |", "|---|---:|"]
    lines += [f"| {k} | {pct(m[k])} |" for k in MAIN_KEYS]
    if m.get("bench") == "heldout":
        lines += [f"| all_constraints_met_rate | {pct(m['all_constraints_met_rate'])} |",
                  f"| constraint_rate | {pct(m['constraint_rate'])} |"]
    for name in ("per_category", "per_instruction"):
        lines += ["", f"## {name.replace('_', ' ')}", "", "| | n | strict % | loose % |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {t['n']} | {pct(t['strict_acc'])} | {pct(t['loose_acc'])} |"
                  for k, t in m[name].items()]
    return "\n".join(lines) + "\n"


def read_json(path: Path, what: str) -> dict:
    """A JSON object file this script wrote (run.json, metrics.json); EvalDataError when it is not readable."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise EvalDataError(f"{path} is not {what} (unreadable JSON: {type(e).__name__}), "
                            f"delete or replace it") from None
    if not isinstance(value, dict):
        raise EvalDataError(f"{path} is not {what} (a JSON {type(value).__name__}, not an object), "
                            "delete or replace it")
    return value


def compare_table(dirs: list) -> str:
    """Side-by-side Markdown table of several runs' metrics.json (columns = runs, rows = metrics)."""
    runs = []
    for d in dirs:
        p = Path(d) / "metrics.json" if Path(d).is_dir() else Path(d)
        if not p.is_file():
            raise EvalDataError(f"--compare: {p} does not exist, give folders written by evaluate.py --out")
        runs.append((Path(d).name if Path(d).is_dir() else p.parent.name, read_json(p, "a metrics.json")))
    rows = [("bench", lambda m: m.get("bench", "-")), ("model", lambda m: m.get("model") or m.get("responses_file")),
            ("prompts", lambda m: m["n_prompts"]), ("max_new_tokens", lambda m: m.get("max_new_tokens") or "-")]
    rows += [(k, lambda m, k=k: pct(m.get(k))) for k in MAIN_KEYS]
    if any(m.get("bench") == "heldout" for _, m in runs):
        rows += [(k, lambda m, k=k: pct(m.get(k))) for k in ("all_constraints_met_rate", "constraint_rate")]
    lines = ["| | " + " | ".join(name for name, _ in runs) + " |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {label} | " + " | ".join(str(get(m)) for _, m in runs) + " |" for label, get in rows]
    return "\n".join(lines) + "\n"
