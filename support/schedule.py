"""Learning-rate schedules, shared by the policy update (train.py) and the discriminator's training."""
import math
import re
import warnings


def lr_multiplier(step: int, warmup: int, total: int, decay: str = "cosine", min_ratio: float = 0.1) -> float:
    """The learning-rate multiplier of optimizer step `step` (0-based): linear warm-up over `warmup` steps, then
    `decay` over the rest: linear to 0, cosine to `min_ratio`, or constant.

        [round(lr_multiplier(i, 2, 6, "linear"), 2) for i in range(6)]  ->  [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))      # 0 after warm-up, 1 at the end
    if decay == "linear":
        return 1.0 - progress
    if decay == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def skip_optimizer_steps(scheduler, n: int) -> None:
    """Advance the learning-rate schedule past n optimizer steps that are not taken (a step with no signal), so the
    learning rate stays a function of the step. torch warns when the schedule moves before any optimizer step; here
    that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        for _ in range(n):
            scheduler.step()
