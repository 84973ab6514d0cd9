import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")          # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    config.addinivalue_line("markers", "real_model: loads the embedded SmolLM2-135M (slower; still runs in CI)")
    config.addinivalue_line("markers", "gpu: needs CUDA, skipped without it (RTT_GPU_TESTS_ON_CPU=1 runs them on "
                                       "the CPU); scripts/gpu_check.sh runs them")


@pytest.fixture(scope="session")
def tiny_tok():
    from tiny import tiny_tokenizer
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm(tiny_tok):
    from tiny import tiny_causal_lm
    return tiny_causal_lm(tiny_tok)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from tiny import tiny_model_dir
    return tiny_model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_disc_dir(tmp_path_factory, tiny_tok):
    """A saved discriminator folder for the tiny policy (untrained head, marked trained so train.py takes it)."""
    from tiny import tiny_token_classifier
    path = tmp_path_factory.mktemp("disc") / "tiny-disc"
    disc = tiny_token_classifier(tiny_tok)
    disc.config.rtt_head_trained = True      # what discriminator.py sets after training
    disc.save_pretrained(path)
    tiny_tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def smol():
    """(model, tokenizer) of the embedded default, loaded once per test session."""
    from support import models
    return models.load_causal_lm("smollm2-135m", device="cpu"), models.load_tokenizer("smollm2-135m")
