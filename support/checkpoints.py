"""
A run folder: its checkpoints (weights, optimizer, schedule, every RNG), `--resume`, and the rules that keep two runs
from mixing in one folder. A checkpoint is written to a temporary folder and renamed, so a kill never leaves half of
one; the trainer state holds only tensors and plain values and loads with weights_only=True (a file in a run folder
never runs code).

    runs/NAME/config.json                       the run's settings
    runs/NAME/metrics.jsonl                     one row per step (and per held-out evaluation)
    runs/NAME/checkpoints/step_000005/          model + tokenizer + trainer_state.pt
    runs/NAME/checkpoints/latest                the name of the newest complete checkpoint
"""
import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from support import errors
from support.train_flags import run_settings


def save_checkpoint(out: Path, step: int, model, tokenizer, optimizer, scheduler, args, keep: int) -> Path:
    """Write out/checkpoints/step_XXXXXX atomically: a temporary folder renamed at the end."""
    final = out / "checkpoints" / f"step_{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # full model; with --lora only the adapter (load it with peft on the base)
    tokenizer.save_pretrained(tmp)
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": get_rng_state(), "data_position": step * args.prompts_per_step, "args": run_settings(args)}
    torch.save(state, tmp / "trainer_state.pt")  # tensors, numbers, strings, lists, dicts: loads with weights_only
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (out / "checkpoints" / "latest").write_text(final.name)
    ckpts = sorted(p for p in (out / "checkpoints").glob("step_*") if not p.name.endswith(".tmp"))
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(path: str) -> Path:
    """The checkpoint to resume from: a checkpoint folder, or a run folder's `latest` (else its newest step folder)."""
    p = Path(path)
    if (p / "trainer_state.pt").exists():
        return p
    latest = p / "checkpoints" / "latest"
    if latest.exists() and (p / "checkpoints" / latest.read_text().strip() / "trainer_state.pt").exists():
        return p / "checkpoints" / latest.read_text().strip()
    steps = sorted(d for d in (p / "checkpoints").glob("step_*") if (d / "trainer_state.pt").exists()
                   and not d.name.endswith(".tmp"))
    if steps:  # `latest` missing or dangling (killed between the rename and its write): the newest complete one
        print(f"[train] {latest} does not name a checkpoint; resuming from the newest one, {steps[-1].name}")
        return steps[-1]
    raise errors.UsageError(f"--resume {path}: no checkpoint there (expected {p}/checkpoints/latest or a "
                            "checkpoint folder with trainer_state.pt)")


def load_trainer_state(ckpt: Path) -> dict:
    """A checkpoint's trainer state, loaded with weights_only=True: a file in a run folder never runs code."""
    path = ckpt / "trainer_state.pt"
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # pickle payloads, truncated or foreign files: refused, never executed
        raise errors.UsageError(f"cannot load {path} as a trainer state ({type(e).__name__}: {str(e)[:200]}); "
                                "it may be damaged or come from an older version: resume from another checkpoint "
                                "folder")


def get_rng_state() -> dict:
    """Every RNG a step draws from, as tensors and plain lists (so that the state loads with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                   cached],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(rng: dict) -> None:
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def refuse_to_overwrite_a_run(out: Path, overwrite: bool) -> None:
    """A new run never mixes into an old one: a folder with checkpoints or metrics is resumed or, if asked, emptied."""
    holds_run = (out / "metrics.jsonl").exists() or any((out / "checkpoints").glob("step_*"))
    if holds_run and not overwrite:
        raise errors.UsageError(f"{out} already holds a run (checkpoints or metrics.jsonl); continue it with "
                                f"`python train.py --resume {out}`, or pass --overwrite to delete it and start again")


def clear_run(out: Path) -> None:
    """--overwrite: the old run's checkpoints and metrics go (only once every check of the new command passed)."""
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep only the metric rows of steps <= step (a run killed after logging a step but before its checkpoint)."""
    if not path.exists():
        return

    def step_of(line):  # a line cut short by a kill does not parse: it goes too
        try:
            return json.loads(line).get("step", 0)
        except ValueError:
            return math.inf

    lines = [l for l in path.read_text().splitlines() if l.strip()]
    kept = [l for l in lines if step_of(l) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(l + "\n" for l in kept))


def last_checkpoint_note(out: Path) -> str:
    """Where a run that stopped on an error can continue from (for the error line)."""
    latest = out / "checkpoints" / "latest"
    if latest.exists() and (out / "checkpoints" / latest.read_text().strip()).exists():
        return (f"the last finished step's checkpoint is {out / 'checkpoints' / latest.read_text().strip()}; fix the "
                f"cause, then continue with `python train.py --resume {out}`")
    return f"no checkpoint was written yet; fix the cause and start again with --overwrite --out {out}"
