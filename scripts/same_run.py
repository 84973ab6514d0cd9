"""
Did two runs of train.py compute the same thing? Compares their metrics.jsonl row by row (timings, memory and the
judge's seconds left out) and the weights of their newest checkpoints, tensor by tensor. Exit code 0 when both match.
This is how a refactor that must not change behaviour is checked: the same seeded command on the old and the new
code (README, "How the code is laid out").

    python scripts/same_run.py runs/before runs/after
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

TIMING = {"t_generate", "t_judge", "t_discriminator", "t_logprobs", "t_update", "step_seconds", "peak_mem_gb",
          "new_tokens_per_s"}


def comparable(row: dict) -> dict:
    row = {k: v for k, v in row.items() if k not in TIMING}
    if isinstance(row.get("judge"), dict):
        row["judge"] = {k: v for k, v in row["judge"].items() if not k.startswith("seconds")}
    return row


def newest_weights(run: Path) -> dict:
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    weights = ckpt / "model.safetensors"
    return load_file(weights if weights.exists() else ckpt / "adapter_model.safetensors")   # --lora: the adapter


def main(a: str, b: str) -> int:
    a, b = Path(a), Path(b)
    rows_a = [comparable(json.loads(l)) for l in (a / "metrics.jsonl").read_text().splitlines() if l.strip()]
    rows_b = [comparable(json.loads(l)) for l in (b / "metrics.jsonl").read_text().splitlines() if l.strip()]
    diff = [(x, y) for x, y in zip(rows_a, rows_b) if x != y]
    same_rows = len(rows_a) == len(rows_b) and not diff
    print(f"metrics: {len(rows_a)} vs {len(rows_b)} rows, {'identical' if same_rows else 'DIFFERENT'} "
          f"(timings and memory left out)")
    for x, y in diff[:1]:
        print("  first difference, step", x.get("step"), {k: (x.get(k), y.get(k)) for k in set(x) | set(y)
                                                          if x.get(k) != y.get(k)})
    wa, wb = newest_weights(a), newest_weights(b)
    same_weights = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    print(f"weights of the newest checkpoints: {len(wa)} tensors, {'identical' if same_weights else 'DIFFERENT'}")
    return 0 if same_rows and same_weights else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
