"""
How a training run stops on a fault: one line that says what went wrong and which checkpoint to resume from, before
anything bad reaches the weights (a NaN loss or gradient, a policy collapsed to the uniform distribution).
"""
import contextlib
import math
from pathlib import Path

from support import errors
from support.checkpoints import last_checkpoint_note


class TrainingStopped(errors.UsageError):
    """The loop stopped on a fault; the message already says which checkpoint to resume from."""


@contextlib.contextmanager
def name_the_checkpoint_on_error(out: Path):
    """A project error raised during the loop (an endpoint that stays down, a divergence) names where to resume."""
    try:
        yield
    except TrainingStopped:
        raise
    except errors.ProjectError as e:
        raise TrainingStopped(f"{' '.join(str(e).split())}; {last_checkpoint_note(out)}") from None


def stop_if_diverged(step: int, what: str, value: float, entropy, uniform_entropy: float, out: Path,
                     start_entropy: float | None = None) -> None:
    """Stop before an optimizer step that would apply a NaN / inf, or train a policy that has collapsed to uniform
    (entropy within 1 % of ln V, when it started clearly below: a random-init model is near-uniform from the start)."""
    if not math.isfinite(value):
        raise TrainingStopped(f"step {step + 1}: the {what} is {value}; nothing of it was applied to the weights; "
                              f"{last_checkpoint_note(out)} (the run's settings; a lower --lr or another "
                              f"--token-weight is a new run: --overwrite, or another --out)")
    started_lower = start_entropy is not None and start_entropy < 0.9 * uniform_entropy
    if entropy is not None and started_lower and float(entropy) >= 0.99 * uniform_entropy:
        raise TrainingStopped(f"step {step + 1}: the policy's next-token distribution is uniform (entropy "
                              f"{float(entropy):.2f} of at most {uniform_entropy:.2f}): training has diverged; start "
                              f"a new run with a lower --lr (--overwrite, or another --out); the last checkpoint may "
                              f"already hold the collapsed policy: {last_checkpoint_note(out)}")
