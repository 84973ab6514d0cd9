"""
Measure the reading path: how many lines a reader follows for one RTT step (rollout -> judge -> relevance ->
advantages -> update), file sizes, the loop's length and the longest functions. The figures of the README's
"How the code is laid out" come from this script.

    python scripts/reading_path.py
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARD = ["train.py", "rollout.py", "judge.py", "discriminator.py", "advantages.py"]
# what one default step (RTT, intra, AON, the trained discriminator, rule checkers) calls in the card's files
ONE_STEP = {
    "train.py": ["main", "token_relevance", "mini_batch_rows", "ppo_update", "ppo_clip_loss", "aggregate_denominator",
                 "response_logprobs"],
    "rollout.py": ["Rollout", "eos_ids", "response_mask_from_ids", "encode_prompts", "generate_rollout"],
    "judge.py": ["judge_messages", "parse_verdict", "Judge"],
    "discriminator.py": ["prefix_ids", "build_inputs", "pad_right", "_check_ids", "default_batch_tokens",
                         "score_pairs", "relevance"],
    "advantages.py": ["_float_dtype", "_standardise", "response_rewards", "grpo_advantages", "token_rewards",
                      "intra_sample_token_norm", "token_advantages", "combine_advantages", "stop_token_mask",
                      "rtt_advantages"],
}


def docstring_lines(node) -> int:
    """Lines of the docstrings inside a function or class (its own and its methods')."""
    n = 0
    for sub in ast.walk(node):
        if isinstance(sub, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and ast.get_docstring(sub):
            doc = sub.body[0]
            n += doc.end_lineno - doc.lineno + 1
    return n


def main():
    print(f"{'file':<18} {'lines':>6} {'one step':>9} {'of which docstrings':>20}  longest function")
    total = total_doc = 0
    for name in CARD:
        tree = ast.parse((ROOT / name).read_text())
        defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        used = [defs[f] for f in ONE_STEP[name]]
        if name == "train.py":   # main counts from the loop on: set-up lives in support/train_setup.py
            loop = next(n for n in ast.walk(defs["main"]) if isinstance(n, ast.For))
            step = sum(n.end_lineno - n.lineno + 1 for n in used if n.name != "main")
            step += loop.end_lineno - loop.lineno + 1
            print(f"  train.py main: {defs['main'].end_lineno - defs['main'].lineno + 1} lines, "
                  f"its loop {loop.end_lineno - loop.lineno + 1}")
        else:
            step = sum(n.end_lineno - n.lineno + 1 for n in used)
        doc = sum(docstring_lines(n) for n in used)
        funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        longest = max(funcs, key=lambda n: n.end_lineno - n.lineno)
        size = len((ROOT / name).read_text().splitlines())
        print(f"{name:<18} {size:>6} {step:>9} {doc:>20}  {longest.name} ({longest.end_lineno - longest.lineno + 1})")
        total, total_doc = total + step, total_doc + doc
    print(f"{'one step':<18} {'':>6} {total:>9} {total_doc:>20}  ({total - total_doc} without docstrings)")


if __name__ == "__main__":
    main()
