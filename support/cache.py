"""The one cache folder of the project: `$RTT_CACHE`, default `~/.cache/rtt` (converted models, discriminators, NLTK
data, benchmark files, downloaded wheels). Plain Python, no torch, so that every script can ask for it."""
import os
from pathlib import Path


def cache_dir() -> Path:
    """$RTT_CACHE, else ~/.cache/rtt."""
    return Path(os.environ.get("RTT_CACHE", Path.home() / ".cache" / "rtt"))
