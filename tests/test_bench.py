"""bench.py: a subprocess smoke test on the tiny model, and the summary arithmetic on literal rows."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import bench

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
