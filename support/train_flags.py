"""
train.py's command line, the part that is not a knob of the paper: model and data paths, memory knobs, the judge
backend, run bookkeeping; the device-dependent defaults; the checks of impossible values; and what `--resume` may
change. The paper's knobs themselves are defined in train.py, where a reader sees them.
"""
import argparse
import math

from support import errors, models

# Defaults that depend on the device; a flag given on the command line always wins. On a CPU, `python train.py`
# (discriminator build + RL run + two held-out evaluations) has to finish in under 30 minutes on 2 cores: one step of
# P=4, 256 new tokens took 6.5 min there (update 3 min), so the CPU run is small; its lr is 10x the paper's because
# the run has only 10 optimizer steps (a choice, not a tuned value). The GPU values are a short version of the paper's.
RUN_DEFAULTS = {
    "cpu": dict(prompts_per_step=2, max_new_tokens=64, steps=5, lr=1e-5, eval_prompts=16, decay="cosine"),
    "cuda": dict(prompts_per_step=4, max_new_tokens=256, steps=10, lr=1e-6, eval_prompts=32, decay="linear"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: x)" except where the default is None (those flags say in their help what they default to)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def add_model_and_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=models.DEFAULT_MODEL,
                   help=f"policy: alias ({', '.join(models.ALIASES)}), hub id, local folder or .gguf")
    g.add_argument("--train-data", default="data/train.jsonl", help="rubric prompts to train on (JSONL, README)")
    g.add_argument("--eval-data", default="data/heldout.jsonl", help="held-out rubric prompts for periodic eval")
    g.add_argument("--max-constraints", type=int, default=20, help="cap on rubric items per prompt (reference: 20)")
    g.add_argument("--out", default=None, help="run folder (default runs/<algo>-<norm>-seed<seed>)")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """Memory knobs, the judge backend and the run's bookkeeping: how a run is carried out, not what it computes."""
    g = p.add_argument_group("memory")
    g.add_argument("--micro-batch-tokens", type=int, default=4096,
                   help="token budget per forward/backward micro-batch (memory knob, not an algorithm knob)")
    g.add_argument("--grad-checkpointing", choices=["auto", "on", "off"], default="auto",
                   help="activation checkpointing (auto: on for GPU, off for CPU where micro-batching is cheaper)")
    g.add_argument("--disc-batch-tokens", type=int, default=8192, help="token budget per discriminator forward")
    g = p.add_argument_group("judge")
    g.add_argument("--judge-model", default=None, help="local LLM judge for constraints without a rule checker")
    g.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint for the LLM judge (vLLM, ...)")
    g.add_argument("--judge-name", default="judge", help="model name sent to --judge-url")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=42, help="seed (paper: 42)")
    g.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    g.add_argument("--eval-every", type=int, default=0, help="held-out eval every N steps (0: only first and last)")
    g.add_argument("--eval-prompts", type=int, default=None,
                   help="held-out prompts per evaluation, greedy (default 16 on CPU, 32 on GPU)")
    g.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 is often faster on a CPU shared with other jobs)")
    g.add_argument("--save-every", type=int, default=5, help="checkpoint every N steps (and at the end)")
    g.add_argument("--keep-checkpoints", type=int, default=2,
                   help="checkpoints kept on disk (oldest deleted; 0 = keep all)")
    g.add_argument("--resume", default=None, help="run folder (or checkpoint folder) to continue exactly")
    g.add_argument("--plot", default=None, metavar="RUN", help="only redraw the PNG curves of RUN and exit")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    g.add_argument("--stop-after", type=int, default=None,
                   help="stop after N steps of this invocation, as if killed (to test --resume)")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run even if --out holds one (its checkpoints and metrics are deleted)")


def fill_run_defaults(args, device_type: str):
    """Replace the flags left at None by RUN_DEFAULTS for this device (cpu, cuda; anything else counts as cpu)."""
    for k, v in RUN_DEFAULTS.get(device_type, RUN_DEFAULTS["cpu"]).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def given_flags(parser: argparse.ArgumentParser, argv=None) -> set:
    """The settings the command line actually gave (dest names), as opposed to those left at their default."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


# On --resume every setting comes from the saved run. These may be given again with another value: they steer how
# the run is carried out (where, how fast, how long, what is printed and kept), not what a step computes.
# Those of PER_INVOCATION belong to one command, never to the run, and are not taken from the saved settings.
RESUME_MAY_CHANGE = {"out", "steps", "device", "threads", "no_progress", "save_every", "keep_checkpoints",
                     "eval_every", "eval_prompts", "eval_data", "micro_batch_tokens", "disc_batch_tokens",
                     "grad_checkpointing", "judge_url"}
PER_INVOCATION = {"resume", "stop_after", "overwrite", "plot"}
# What a run saved before a setting existed ran with, where that is not today's default: resuming it keeps it.
SAVED_BEFORE_IT_EXISTED = {"token_credit": "all"}   # --token-credit came with "all" only; its default is now relevant


def settings_for_resume(args, saved: dict, given: set, where: str):
    """The settings of a resumed run: the saved run's, except flags given again that may change (RESUME_MAY_CHANGE).

    A flag given again with the saved value is fine; with another value it is refused, because it would change the
    algorithm, the data order or the shapes half-way through a run. Settings that did not exist when the run was
    saved take their current default, or what the run ran with where the default has changed since
    (SAVED_BEFORE_IT_EXISTED).
    """
    merged = {**vars(args), **{k: v for k, v in saved.items() if k in vars(args) and k not in PER_INVOCATION}}
    merged.update({k: v for k, v in SAVED_BEFORE_IT_EXISTED.items() if k not in saved and k not in given})
    for k in sorted(given):
        new, old = getattr(args, k), saved.get(k)
        if k == "steps" and new != old and (merged["decay"] != "constant" or merged["curriculum"] != "none"):
            raise errors.UsageError(f"--steps {new}: the run was planned for {old} steps, and its learning-rate "
                                    f"schedule (--decay {merged['decay']}) or curriculum (--curriculum "
                                    f"{merged['curriculum']}) depends on that length; only a run with --decay "
                                    "constant and --curriculum none can be extended")
        if k in RESUME_MAY_CHANGE or k in PER_INVOCATION or k not in saved:
            merged[k] = new
        elif new != old:
            flag = "--" + k.replace("_", "-")
            raise errors.UsageError(f"{flag} {new} contradicts the run being resumed ({where} has {flag} {old}); "
                                    f"resume without {flag}, or start a new run")
    return argparse.Namespace(**merged)


def run_settings(args) -> dict:
    """What config.json and a checkpoint keep of the command line: the run's settings, not this command's."""
    return {k: v for k, v in vars(args).items() if k not in PER_INVOCATION}


SETTING_RULES = [  # (setting, what it must be, test): impossible values are refused before any work
    ("prompts_per_step", "at least 1", lambda v: v >= 1), ("group_size", "at least 2 (GRPO normalises within a "
                                                                         "group)", lambda v: v >= 2),
    ("steps", "at least 1", lambda v: v >= 1), ("mini_batches", "at least 1", lambda v: v >= 1),
    ("lr", "above 0 and below 1 (paper: 1e-6)", lambda v: 0 < v < 1),
    ("weight_decay", "0 or more", lambda v: v >= 0), ("warmup_steps", "0 or more", lambda v: v is None or v >= 0),
    ("clip_low", "above 0 and below 1 (paper: 0.2)", lambda v: 0 < v < 1),
    ("clip_high", "above 0 (paper: 0.27)", lambda v: 0 < v < math.inf), ("grad_clip", "above 0", lambda v: v > 0),
    ("kl", "0 or more", lambda v: v >= 0), ("lora", "0 (off) or a rank of at least 1", lambda v: v >= 0),
    ("token_weight", "0 or more (paper: 0.5)", lambda v: v >= 0), ("token_std_floor", "0 or more",
                                                                    lambda v: v >= 0),
    ("micro_batch_tokens", "at least 1", lambda v: v >= 1), ("disc_batch_tokens", "at least 1", lambda v: v >= 1),
    ("save_every", "at least 1", lambda v: v >= 1), ("keep_checkpoints", "0 (keep all) or more", lambda v: v >= 0),
    ("eval_every", "0 or more", lambda v: v >= 0), ("eval_prompts", "0 or more", lambda v: v >= 0),
    ("threads", "0 (torch's default) or more", lambda v: v >= 0),
]


def check_settings(args) -> None:
    """Refuse settings that cannot make a run (0 prompts, a negative clip, a NaN weight, ...), naming the flag."""
    for name, must_be, ok in SETTING_RULES:
        value = getattr(args, name)
        finite = not isinstance(value, float) or math.isfinite(value)
        if not (finite and ok(value)):
            raise errors.UsageError(f"--{name.replace('_', '-')} {value}: must be {must_be}")
    if args.token_credit != "all" and args.reference_quirks:
        raise errors.UsageError(f"--token-credit {args.token_credit} is ours; --reference-quirks reproduces the "
                                "released code, which credits every token: use one or the other")
    if args.mini_batches > args.prompts_per_step * args.group_size:
        raise errors.UsageError(f"--mini-batches {args.mini_batches}: at most P*G = "
                                f"{args.prompts_per_step * args.group_size} (one response per optimizer step)")
