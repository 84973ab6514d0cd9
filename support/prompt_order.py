"""
Which prompts a training step gets: an endless stream of seeded epoch permutations (so a resumed run continues the
same stream), optionally easy to hard over the number of constraints (`--curriculum constraints`).
"""
import numpy as np


def batch_of_prompts(prompts: list, step: int, per_step: int, seed: int, curriculum: str = "none",
                     steps: int = 1) -> list:
    """Prompts of a step: an endless stream of seeded epoch permutations, so position = step * per_step.

    curriculum "constraints" (easy to hard, as in Conifer): the run is cut into as many equal stages as the largest
    number of constraints K_max; stage j draws only prompts with at most j + 1 constraints (the last stage: all).
    """
    if curriculum == "constraints":
        k_max = max(len(p.rubrics) for p in prompts)
        allowed = min(k_max, 1 + step * k_max // max(1, steps))                 # K of this step's stage
        pool = [p for p in prompts if len(p.rubrics) <= allowed] or prompts
        seed = seed + 1000 * allowed                                           # each stage its own stream
    else:
        pool = prompts
    out = []
    for pos in range(step * per_step, (step + 1) * per_step):
        epoch, i = divmod(pos, len(pool))
        order = np.random.default_rng(seed + epoch).permutation(len(pool))
        out.append(pool[order[i]])
    return out
