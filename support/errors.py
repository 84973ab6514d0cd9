"""
The error boundary of the scripts: a fault the user can fix is ONE line on stderr and exit code 2,

    error: <what>, <where>, <what to do>

and anything else (a bug) keeps its traceback. train.py, judge.py, evaluate.py, rollout.py and discriminator.py
end with

    if __name__ == "__main__":
        errors.main_boundary(main)

What counts as "a fault the user can fix":
- the project's own errors, all subclasses of `ProjectError` (data.DataError, llm.JudgeEndpointError,
  models.ModelLoadError, discriminator.DiscriminatorError, benchmarks.EvalDataError, UsageError below). Their messages
  are written to say what went wrong, where and what to do; a DataError is printed as
  `error: <message>, at FILE:LINE field 'FIELD', fix ...`;
- an OSError that names a file (missing path, a folder where a file was expected, no permission).
Format errors of a file (not UTF-8, malformed or too deeply nested JSON) are turned into DataError by the readers
(data.iter_jsonl), which know the file and the line; a RecursionError or UnicodeDecodeError that reaches the
boundary came from somewhere the project did not expect, so it keeps its traceback.

Also here: argparse types that refuse impossible flag values before anything runs (`--max-new-tokens 0`,
`--judge-timeout -1`, `--top-p 1.5`): positive_int, non_negative_int, positive_float, non_negative_float, probability.
"""
import argparse
import sys


class ProjectError(Exception):
    """Base of the project's own errors: a fault the user can fix; the message says what, where and what to do."""


class UsageError(ProjectError):
    """A command that cannot run as asked (files that do not match each other, a setting that makes no sense)."""


def one_line(e: BaseException) -> str | None:
    """The `error: ...` line for a fault the user can fix; None for anything else (a bug: keep the traceback)."""
    if isinstance(e, ProjectError):
        if hasattr(e, "file") and hasattr(e, "line") and hasattr(e, "field"):  # data.DataError
            where = f"{e.file}:{e.line}" if e.line else e.file
            return (f"error: {e.message}, at {where} field {e.field!r}, "
                    "fix that line of the file (or remove it) and run again")
        return "error: " + " ".join(str(e).split())
    if isinstance(e, OSError) and e.filename is not None:
        what = {FileNotFoundError: "no such file or folder", IsADirectoryError: "a folder where a file is expected",
                NotADirectoryError: "not a folder", PermissionError: "permission denied"}.get(type(e), e.strerror)
        return f"error: {what}, {e.filename}, check the path you passed (and that it is the kind of file asked for)"
    return None


def main_boundary(main, argv=None):
    """Run a script's main(argv); a fault the user can fix exits with code 2 and one line on stderr."""
    try:
        return main(argv)
    except Exception as e:  # noqa: BLE001 -- re-raised below unless one_line knows it
        line = one_line(e)
        if line is None:
            raise
        print(line, file=sys.stderr)
        raise SystemExit(2) from None


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (0 new tokens, a batch of -1 prompts: refused before anything runs)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a timeout, a time limit)."""
    value = float(text)
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (a sampling temperature: 0 = greedy)."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number from 0 up, got {text}")
    return value


def probability(text: str) -> float:
    """argparse type: a number in (0, 1] (nucleus sampling's top-p)."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text}")
    return value
