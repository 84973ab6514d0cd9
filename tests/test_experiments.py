"""experiments/variants.py: the summary arithmetic on literal files, and the whole experiment on the tiny model."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import variants  # noqa: E402

DATA = str(ROOT / "tests" / "fixtures" / "rubrics_tiny.jsonl")


def _write_run(out: Path, label: str, rewards: list, all_met: float, met: float, tok_abs: float = 0.0):
    (out / label).mkdir(parents=True)
    rows = [{"kind": "train", "step": i + 1, "reward": r, "aon_pass": r, "csr_pass": r, "tok_adv_abs": tok_abs}
            for i, r in enumerate(rewards)]
    (out / label / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "eval" / label).mkdir(parents=True)
    (out / "eval" / label / "metrics.json").write_text(json.dumps({"all_constraints_met_rate": all_met,
                                                                   "constraint_rate": met}))


def test_summary_is_mean_and_sample_std_over_seeds(tmp_path):
    (tmp_path / "eval" / "base").mkdir(parents=True)
    (tmp_path / "eval" / "base" / "metrics.json").write_text(json.dumps({"all_constraints_met_rate": 0.1,
                                                                        "constraint_rate": 0.3}))
    _write_run(tmp_path, "grpo-aon-seed1", [0.0, 0.5], 0.2, 0.4, tok_abs=0.2)
    _write_run(tmp_path, "grpo-aon-seed2", [0.5, 1.0], 0.4, 0.6, tok_abs=0.4)
    res = variants.summarise(tmp_path, ["grpo-aon"], [1, 2], {"base": "b", "grpo-aon": "g"})
    a = res["grpo-aon"]["all_constraints_met_rate"]
    assert a["mean"] == pytest.approx(0.3) and a["std"] == pytest.approx(0.1414, abs=1e-4) and a["n"] == 2
    assert res["grpo-aon"]["train_csr_mean"] == pytest.approx(0.5)
    assert res["grpo-aon"]["train_tok_adv_abs"] == pytest.approx(0.3)
    assert res["base"]["constraint_rate"]["mean"] == 0.3
    md = variants.markdown(res, 100)
    assert "| grpo-aon | 30.0 ± 14.1 | 50.0 ± 14.1 | 2 | 0.500 | 0.30 | `g` |" in md
    assert "| base | 10.0 | 30.0 | 1 | - | - | `b` |" in md
    for label, acc in (("base", 0.25), ("grpo-aon-seed1", 0.5), ("grpo-aon-seed2", 0.75)):  # IFEval columns
        (tmp_path / "eval-ifeval" / label).mkdir(parents=True)
        (tmp_path / "eval-ifeval" / label / "metrics.json").write_text(json.dumps(
            {"prompt_level_strict_acc": acc, "inst_level_strict_acc": acc}))
    md = variants.markdown(variants.summarise(tmp_path, ["grpo-aon"], [1, 2], {"base": "b", "grpo-aon": "g"}), 100, 8)
    assert "IFEval prompt strict %" in md
    assert "| grpo-aon | 30.0 ± 14.1 | 50.0 ± 14.1 | 62.5 ± 17.7 | 62.5 ± 17.7 |" in md


def test_experiment_end_to_end_on_the_tiny_model(tmp_path, tiny_dir, tiny_disc_dir):
    out = tmp_path / "exp"
    ifeval = str(ROOT / "tests" / "fixtures" / "eval_ifeval_mini.jsonl")
    cmd = [sys.executable, "experiments/variants.py", "--model", str(tiny_dir), "--only", "grpo-aon", "rtt-random",
           "--limit", "2", "--ifeval", "2", "--ifeval-data", ifeval, "--eval-tokens", "4", "--out", str(out), "--",
           "--train-data", DATA,
           "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "8", "--steps", "1",
           "--discriminator", str(tiny_disc_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"base", "grpo-aon", "rtt-random"}
    assert "--relevance random" in res["rtt-random"]["command"]
    assert (out / "curves.png").stat().st_size > 0 and "| rtt-random |" in (out / "results.md").read_text()
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)   # nothing is redone
    assert again.returncode == 0 and again.stdout.count("already done") == 8   # 2 runs, (base + 2) x 2 benches
    assert "IFEval prompt strict %" in (out / "results.md").read_text()


# --- experiments/relevance_std.py ---------------------------------------------------------------------------------

def test_relevance_std_bands_on_literal_rows():
    import relevance_std
    w = torch.zeros(2, 2, 4)                                                   # [B=2, K=2, T=4]
    w[0, 0] = torch.tensor([0.9992, 0.9994, 0.9993, 0.9993])                  # near-constant: sigma 7e-5
    w[0, 1] = torch.tensor([1.0, 0.0, 0.0, 0.0])                              # one relevant token: sigma 0.43
    w[1, 0, :2] = torch.tensor([0.0, 0.03])                                   # 2 real tokens, sigma 0.015
    mask = torch.tensor([[1., 1., 1., 1.], [1., 1., 0., 0.]])
    criteria = [["a", "b"], ["c"]]                                            # row (1, 1) is a padded slot
    bands = relevance_std.summarise(w, mask, criteria, floor=0.01)
    assert [b["rows"] for b in bands] == [1, 0, 1, 1]
    assert bands[0]["share"] == pytest.approx(1 / 3)
    assert bands[0]["abs_r_floored"] == pytest.approx(0.005, abs=1e-4)       # |+-1e-4| / 0.01, half the tokens
    assert bands[0]["abs_r_literal"] > 0.6                                    # noise made unit-size
    assert bands[3]["abs_r_floored"] == bands[3]["abs_r_literal"] == pytest.approx((3 ** 0.5 + 3 / 3 ** 0.5) / 4,
                                                                                    rel=1e-4)


def test_relevance_std_script(tmp_path, tiny_disc_dir):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"prompt_id": "t1", "response": "a robot note"}) + "\n"
                       + json.dumps({"prompt_id": "t2", "response": "the sea is wide"}) + "\n")
    cmd = [sys.executable, "experiments/relevance_std.py", "--discriminator", str(tiny_disc_dir), "--samples",
           str(samples), "--prompts", DATA, "--out", str(tmp_path / "bands.json")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| 0 to 0.001 |" in done.stdout
    bands = json.loads((tmp_path / "bands.json").read_text())["bands"]
    assert sum(b["rows"] for b in bands) == 2 + 1                             # t1 has 2 constraints, t2 one
    samples.write_text(json.dumps({"prompt_id": "nope", "response": "x"}) + "\n")
    bad = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and f"{samples}:1" in bad.stderr and "nope" in bad.stderr


# --- experiments/grid.py and experiments/report.py ----------------------------------------------------------------

import grid  # noqa: E402
import report  # noqa: E402


def test_short64_filter_keeps_only_constraints_that_fit_64_tokens():
    row = lambda iid, **kw: {"rubrics": [{"checker": {"instruction_id": iid, "kwargs": kw}}]}  # noqa: E731
    assert grid.short64(row("punctuation:no_comma"))
    assert grid.short64(row("length_constraints:number_words", relation="less than", num_words=30))
    assert not grid.short64(row("length_constraints:number_words", relation="at least", num_words=50))
    assert not grid.short64(row("count:word_count_range", min_words=50, max_words=100))
    assert not grid.short64(row("length_constraints:number_paragraphs", num_paragraphs=3))
    assert grid.short64({"rubrics": [{"description": "an LLM-judged item"}]})


def test_bootstrap_interval_is_paired_and_covers_the_point():
    total = np.full(50, 2.0)
    a = np.tile(np.array([2.0] * 25 + [1.0] * 25), (2, 1))                 # [S=2, N=50]
    b = np.ones((1, 50))
    point, lo, hi = report.bootstrap_difference(a, b, total, "instruction")
    assert point == pytest.approx(0.25) and lo <= point <= hi and lo > 0
    varied = np.array([[2.0, 0.0, 1.0, 2.0, 0.0] * 10])                       # prompts differ a lot
    assert report.bootstrap_difference(varied, varied, total, "prompt") == (0.0, 0.0, 0.0)   # paired: no spread
    shifted = np.array([[2.0, 1.0, 1.0, 2.0, 0.0] * 10])                      # one prompt in 5 gains one constraint
    point, lo, hi = report.bootstrap_difference(shifted, varied, total, "instruction")
    assert point == pytest.approx(0.1) and 0 < lo <= 0.1 <= hi < 0.2           # an unpaired interval would span 0
    import doctest
    assert doctest.testmod(report).failed == 0


def test_grid_runs_resumes_keeps_small_outputs_and_report_rebuilds(tmp_path, tiny_dir, tiny_disc_dir, monkeypatch):
    monkeypatch.setitem(grid.GRIDS, "tiny", {
        "filter": "short64", "train": DATA, "heldout": DATA, "eval_tokens": 8,
        "train_flags": ["--steps", "2", "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "8",
                        "--micro-batch-tokens", "64", "--discriminator", str(tiny_disc_dir)],
        "variants": {"grpo-aon": ["--algo", "grpo"], "rtt": ["--algo", "rtt"]}})
    argv = ["--grid", "tiny", "--model", str(tiny_dir), "--seeds", "3", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    grid.main(argv)
    results = tmp_path / "results" / "tiny"
    for label in ("grpo-aon-seed3", "rtt-seed3"):
        assert (results / label / "metrics.jsonl").exists() and (results / label / "config.json").exists()
        assert (results / label / "eval" / "verdicts.jsonl").exists()
    assert not list(results.rglob("*.safetensors"))                          # never a checkpoint
    md = report.report(results, "grpo-aon")
    assert "| rtt | 1 |" in md and "| base |" in md and "--algo rtt" in md
    report.plot(results)
    assert (results / "curves.png").stat().st_size > 0
    stamp = (results / "rtt-seed3" / "metrics.jsonl").stat().st_mtime_ns
    grid.main(argv)                                                          # finished: nothing is retrained
    rows = [json.loads(l) for l in (tmp_path / "runs" / "tiny" / "rtt-seed3" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert (results / "rtt-seed3" / "metrics.jsonl").stat().st_mtime_ns >= stamp
    import shutil
    shutil.rmtree(tmp_path / "runs" / "tiny" / "rtt-seed3")                 # another machine: only results/ came
    grid.main(argv)
    assert not (tmp_path / "runs" / "tiny" / "rtt-seed3").exists()           # its committed outputs count as done


def test_family_rates_table_on_literal_verdicts():
    import family_rates
    from types import SimpleNamespace as NS
    item = lambda iid: NS(checker={"instruction_id": iid}, code=None)                  # noqa: E731
    p1, p2 = NS(rubrics=[item("a"), item("b")]), NS(rubrics=[item("a")])
    greedy = [(p1, [[True], [False]]), (p2, [[False]])]
    sampled = [(p1, [[True, False], [False, False]]), (p2, [[True, True]])]            # [P][K][G]
    table = {r["family"]: r for r in family_rates.family_table(greedy, sampled, 0.05, 0.95)}
    assert table["a"]["n"] == 2 and table["a"]["greedy"] == 0.5 and table["a"]["sampled"] == 0.75
    assert table["a"]["spread"] == 0.5 and table["a"]["keep"]                          # one pair of two disagrees
    assert table["b"]["sampled"] == 0.0 and table["b"]["spread"] == 0.0 and not table["b"]["keep"]


def test_family_rates_script(tmp_path, tiny_dir):
    out = tmp_path / "rates"
    proc = subprocess.run([sys.executable, "experiments/family_rates.py", "--model", str(tiny_dir), "--data", DATA,
                           "--limit", "2", "--samples", "2", "--max-new-tokens", "4", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads(out.with_suffix(".json").read_text())["families"]
    assert table and all(0 <= r["sampled"] <= 1 and r["n"] >= 1 for r in table)
    assert "| family |" in out.with_suffix(".md").read_text()
