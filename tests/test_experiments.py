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
    assert "IFEval" not in md and "learning_curves" not in md                # no extra bench, no eval rows
    report.plot(results)
    assert (results / "curves.png").stat().st_size > 0
    assert report.learning_curves(results) is None and not (results / "learning_curves.png").exists()
    stamp = (results / "rtt-seed3" / "metrics.jsonl").stat().st_mtime_ns
    grid.main(argv)                                                          # finished: nothing is retrained
    rows = [json.loads(l) for l in (tmp_path / "runs" / "tiny" / "rtt-seed3" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert (results / "rtt-seed3" / "metrics.jsonl").stat().st_mtime_ns >= stamp
    import shutil
    shutil.rmtree(tmp_path / "runs" / "tiny" / "rtt-seed3")                 # another machine: only results/ came
    grid.main(argv)
    assert not (tmp_path / "runs" / "tiny" / "rtt-seed3").exists()           # its committed outputs count as done


def test_short_grid_dry_run_prints_15_train_commands_with_eval_during_training(capsys):
    grid.main(["--grid", "short", "--dry-run"])
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 5 * 3                                            # variants x seeds 42 1 2
    eval_flags = "--eval-every 10 --eval-prompts 64 --eval-data runs/short/data/heldout-all.jsonl"
    assert all(c.startswith("python train.py --model smollm2-135m --train-data runs/short/data/train-all.jsonl "
                            + eval_flags + " --steps 40 --lr 1e-5 --prompts-per-step 2 --group-size 8 "
                            "--max-new-tokens 64 --algo ") for c in commands)
    assert sorted(c.split(" --out ")[1].split()[0] for c in commands) == sorted(
        f"runs/short/{v}-seed{s}" for v in ("grpo-aon", "grpo-csr", "rtt", "rtt-random", "rtt-credit-all")
        for s in (42, 1, 2))
    assert "--algo rtt --norm intra --relevance random --seed 2 " in commands[-2]
    assert "--algo rtt --norm intra --token-credit all --seed 2 " in commands[-1]
    grid.main(["--grid", "short", "--dry-run", "--seeds", "7", "--only", "rtt"])    # --seeds still wins
    assert capsys.readouterr().out.count("--seed 7 ") == 1
    grid.main(["--grid", "diagnosis", "--dry-run"])                         # diagnosis: as it was committed
    diagnosis = capsys.readouterr().out.splitlines()
    assert len(diagnosis) == 10 * 2 and all(" --eval-prompts 0 --steps 20 " in c and "--eval-every" not in c
                                           for c in diagnosis)


def _fake_job(calls: list):
    """Stands in for variants.run: writes what train.py / evaluate.py would leave in --out, instantly."""
    def run(cmd, log):
        calls.append(" ".join(map(str, cmd[1:])))
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if cmd[1] == "train.py":
            steps = int(cmd[cmd.index("--steps") + 1])
            rows = [{"kind": "train", "step": s + 1, "zero_var_groups": 0.5} for s in range(steps)]
            (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (out / "config.json").write_text("{}\n")
            (out / "checkpoints").mkdir(exist_ok=True)
            (out / "checkpoints" / "latest").write_text(f"step_{steps:06d}")
        else:
            (out / "metrics.json").write_text(json.dumps({"prompt_level_strict_acc": 0.5,
                                                          "inst_level_strict_acc": 0.5}))
            (out / "verdicts.jsonl").write_text("")
        return 0.0
    return run


def test_short_grid_adds_ifeval_in_a_later_sitting_and_keeps_it_under_eval_ifeval(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(grid, "run", _fake_job(calls))
    argv = ["--grid", "short", "--only", "grpo-aon", "rtt", "--seeds", "42", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    results = tmp_path / "results" / "short"
    grid.main([*argv, "--skip-extra"])                                       # held-out only
    assert sum("train.py" in c for c in calls) == 2 and sum("--bench heldout" in c for c in calls) == 3
    assert not any("--bench ifeval" in c for c in calls) and not list(results.rglob("eval-ifeval"))
    calls.clear()
    grid.main(argv)                                                          # a later sitting: IFEval, no retraining
    assert len(calls) == 3 and all(" --bench ifeval --max-new-tokens 64 --out " in c and "--data" not in c
                                   for c in calls)
    assert any("--model smollm2-135m " in c for c in calls)                  # the base model gets it too
    for label in ("base", "grpo-aon-seed42", "rtt-seed42"):
        assert (results / label / "eval-ifeval" / "metrics.json").exists()
        assert (results / label / "eval-ifeval" / "verdicts.jsonl").exists()
    described = json.loads((results / "grid.json").read_text())["commands"]
    assert described["base-ifeval"].startswith("python evaluate.py --model smollm2-135m --bench ifeval ")
    calls.clear()
    grid.main(argv)                                                          # all done: nothing runs
    assert calls == []
    import shutil
    shutil.rmtree(results / "rtt-seed42" / "eval-ifeval")                  # trained on another machine, no IFEval
    shutil.rmtree(tmp_path / "runs" / "short" / "rtt-seed42")
    capsys.readouterr()
    grid.main(argv)
    assert calls == [] and "rtt-seed42: trained, but ifeval needs its checkpoint" in capsys.readouterr().out


def _write_verdicts(folder: Path, met: list, responses: "list | None" = None):
    """verdicts.jsonl as evaluate.py writes it (the fields report.py reads): met[i] = strict verdicts of prompt i,
    responses[i] its response (default: a plain sentence)."""
    folder.mkdir(parents=True)
    responses = responses or ["A plain answer."] * len(met)
    (folder / "verdicts.jsonl").write_text("".join(json.dumps({"key": f"k{i}", "follow_instruction_list_strict": m,
                                                               "instruction_id_list": ["a", "b", "c"][:len(m)],
                                                               "response": r})
                                                   + "\n" for i, (m, r) in enumerate(zip(met, responses))))
    (folder / "metrics.json").write_text("{}\n")


def _write_short_results(results: Path):
    """A literal short grid: 2 variants x 2 seeds, 4 training steps with train.py evaluations at steps 0, 2, 4,
    held-out and IFEval verdicts on 2 prompts of 2 constraints each."""
    T, F = True, False
    heldout = {"base": [[T, F], [T, F]],                                     # 50.0 % instructions, 0.0 % prompts
               "grpo-aon-seed1": [[T, T], [T, F]], "grpo-aon-seed2": [[T, T], [T, F]],       # 75 / 50 both seeds
               "rtt-seed1": [[T, F], [T, F]], "rtt-seed2": [[T, T], [T, T]]}                 # 50 / 0, 100 / 100
    ifeval = {"base": [[T, F], [F, F]],                                      # 25.0 %, 0.0 %
              "grpo-aon-seed1": [[T, T], [F, F]], "grpo-aon-seed2": [[T, T], [T, F]],        # 50 / 50, 75 / 50
              "rtt-seed1": [[T, F], [F, F]], "rtt-seed2": [[T, T], [F, F]]}                  # 25 / 0, 50 / 50
    commands = {"base": "python evaluate.py --model m --bench heldout --data H --max-new-tokens 64 --out OUT",
                "base-ifeval": "python evaluate.py --model m --bench ifeval --max-new-tokens 64 --out OUT"}
    degenerate = {"rtt-seed2": ["A plain answer.", "P.S." + " *" * 8]}     # rtt seed 2 meets prompt 2 by repeating
    for label in heldout:
        _write_verdicts(results / label / "eval", heldout[label], degenerate.get(label))
        _write_verdicts(results / label / "eval-ifeval", ifeval[label])
        if label == "base":
            continue
        seed = int(label[-1])
        commands[label] = f"python train.py --algo {label.split('-seed')[0]} --seed {seed} --eval-every 2"
        train = [{"kind": "train", "step": s, "zero_var_groups": [0.5, 1.0][seed - 1], "truncated": 0.5,
                  "csr_pass": 0.4, "aon_pass": 0.2} for s in (1, 2, 3, 4)]
        evals = [{"kind": "eval", "step": s, "eval_aon": 0.1 * seed + 0.05 * s, "eval_csr": 0.5, "eval_n": 2}
                 for s in (0, 2, 4)]
        (results / label / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals[:1] + train[:2]
                                                               + evals[1:2] + train[2:] + evals[2:]))
    (results / "grid.json").write_text(json.dumps({
        "grid": "short", "model": "m", "variants": {"grpo-aon": ["--algo", "grpo"], "rtt": ["--algo", "rtt"]},
        "train_flags": [], "filter": "all", "eval_tokens": 64, "commands": commands}))


def test_report_of_a_short_grid_has_ifeval_columns_and_learning_curves(tmp_path):
    results = tmp_path / "short"
    _write_short_results(results)
    report.main([str(results), "--contrast", "rtt", "grpo-aon", "--contrast", "rtt", "no-such-variant"])
    md = (results / "report.md").read_text()
    # the paired differences asked for: held-out inst. and prompt level, IFEval inst. (the table's Δ vs grpo-aon)
    assert "| rtt - grpo-aon | 2 / 2 | +0.0 [-50.0, +50.0] | +0.0 [-100.0, +100.0] | -25.0 [-50.0, +0.0] |" in md
    assert "| -25.0 [-50.0, +0.0] | 50 |" in md                          # the same IFEval interval in rtt's row
    assert "no-such-variant" not in md                                    # a pair with a side not evaluated: left out
    assert "| IFEval inst. % | IFEval prompt % | Δ IFEval inst. vs base | Δ IFEval inst. vs grpo-aon |" in md
    assert "Held-out: 2 prompts (no filter)" in md and "IFEval: 2 prompts" in md
    assert "| base | - | 50.0 | 0.0 |  |  |  | 25.0 | 0.0 |  |  |" in md
    assert "| grpo-aon | 2 | 75.0 ± 0.0 | 50.0 ± 0.0 | +25.0 [" in md
    assert "|  | +50.0 [" in md                                          # grpo-aon: no Δ against itself; prompts
    assert "| 62.5 ± 17.7 | 50.0 ± 0.0 | +37.5 [" in md                   # grpo-aon on IFEval, Δ vs base
    assert "| rtt | 2 | 75.0 ± 35.4 | 50.0 ± 70.7 | +25.0 [" in md
    assert "| 37.5 ± 17.7 | 25.0 ± 35.4 | +12.5 [" in md and "| -25.0 [" in md   # rtt on IFEval; vs grpo-aon
    assert "- IFEval (base; a trained policy: the same with `--model` its final checkpoint): " \
           "`python evaluate.py --model m --bench ifeval --max-new-tokens 64 --out OUT`" in md
    assert "- `rtt`: `python train.py --algo rtt --seed S --eval-every 2`" in md                # seed written as S
    assert "first 2 held-out prompts" in md and "![learning curves](learning_curves.png)" in md
    assert "| family | n | base | grpo-aon | rtt |" in md                 # per family: base, mean over seeds
    assert "| a | 2 | 100 | 100 | 100 |" in md and "| b | 2 | 0 | 50 | 50 |" in md
    assert (results / "learning_curves.png").stat().st_size > 0 and (results / "curves.png").stat().st_size > 0
    # repetitive responses: rtt seed 2's second one ("* * * ..."); counted as failed, rtt falls to 50 % both seeds
    assert "| base | - | 0.0 | 50.0 |  |  |  |" in md
    assert "| grpo-aon | 2 | 0.0 ± 0.0 | 75.0 ± 0.0 | +25.0 [" in md
    assert "| rtt | 2 | 25.0 ± 35.4 | 50.0 ± 0.0 | +0.0 [-50.0, +50.0] | -25.0 [-50.0, +0.0] | `*` 1 |" in md
    assert "| rtt - grpo-aon | -25.0 [" in md
    assert "Repetitive responses on the IFEval prompts" in md                # the same table for IFEval: none there
    assert "| rtt | 2 | 0.0 ± 0.0 | 37.5 ± 17.7 | +12.5 [" in md


def test_report_names_the_verdict_without_a_response(tmp_path):
    results = tmp_path / "short"
    _write_short_results(results)
    path = results / "rtt-seed1" / "eval" / "verdicts.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[1]["response"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match=r"rtt-seed1/eval/verdicts.jsonl, verdict 2: no 'response' field"):
        report.main([str(results)])
    runs = [report.read_jsonl(results / f"rtt-seed{s}" / "metrics.jsonl") for s in (1, 2)]
    steps, mean, sd = report.over_seeds([[r for r in rows if r["kind"] == "eval"] for rows in runs], "eval_aon")
    assert steps.tolist() == [0, 2, 4] and mean == pytest.approx([0.15, 0.25, 0.35])
    assert sd == pytest.approx([0.0707] * 3, abs=1e-4)
    steps, mean, sd = report.over_seeds([[r for r in rows if r["kind"] == "train"] for rows in runs],
                                        "zero_var_groups")
    assert steps.tolist() == [1, 2, 3, 4] and mean == pytest.approx([0.75] * 4)


def test_over_seeds_keeps_the_steps_every_seed_logged_and_the_last_value_of_a_step():
    runs = [[{"step": 0, "eval_aon": 0.1}, {"step": 10, "eval_aon": 0.3}, {"step": 10, "eval_aon": 0.5}],   # resumed
            [{"step": 0, "eval_aon": 0.3}, {"step": 10, "eval_aon": 0.7}, {"step": 20, "eval_aon": 0.9}]]
    steps, mean, sd = report.over_seeds(runs, "eval_aon")                  # [T=2] each
    assert steps.tolist() == [0, 10] and mean == pytest.approx([0.2, 0.6]) and sd == pytest.approx([0.1414] * 2,
                                                                                                     abs=1e-4)
    steps, mean, sd = report.over_seeds(runs[:1], "eval_aon")             # one seed: no spread
    assert mean == pytest.approx([0.1, 0.5]) and sd.tolist() == [0.0, 0.0]


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


def test_token_credit_a_failed_constraint_pushes_its_irrelevant_tokens_up():
    import token_credit
    relevance = torch.tensor([[[1.0, 0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0, 0.0]]])           # [B=2, K=1, T=4]
    mask = torch.ones(2, 4, dtype=torch.bool)
    stop = torch.zeros(2, 4, dtype=torch.bool)
    table = token_credit.credit_by_balance(torch.tensor([[-1.0], [1.0]]), relevance, mask, stop, 0.5)
    # failed: r = [-1, 0, 0, 0], mu = -0.25, sigma = sqrt(0.1875): relevant -0.75 / 0.433, the others +0.25 / 0.433
    assert table[1]["relevant"] == pytest.approx(-1.732, abs=1e-3)
    assert table[1]["irrelevant"] == pytest.approx(0.577, abs=1e-3)
    assert table[-1]["irrelevant"] == pytest.approx(-0.577, abs=1e-3)          # met: the mirror image
    assert table[1]["eos"] is None and table[1]["responses"] == 1


def test_token_credit_by_token_ranks_tokens_by_their_mean_push():
    import doctest
    import token_credit
    assert doctest.testmod(token_credit).failed == 0
    # a met constraint relevant to the marker token 5 only: the paper's credit pushes 5 up and every other token
    # down; relevant-only credit pushes 5 up and leaves the others at 0; random relevance puts the push elsewhere
    scores = torch.tensor([[1.0], [1.0]])                                               # [B=2, K=1]
    ids = torch.tensor([[5, 1, 2, 3], [5, 1, 2, 3]])                                    # [B, T]
    relevance = (ids == 5).float()[:, None, :]                                          # [B, K, T]
    mask = torch.ones(2, 4, dtype=torch.bool)
    stop = torch.zeros(2, 4, dtype=torch.bool)
    paper, relevant, rand = token_credit.token_terms(scores, relevance, mask, stop, 2, torch.Generator().manual_seed(1))
    top = lambda a_tok: token_credit.credit_by_token(ids.flatten(), a_tok.flatten(), 2)  # noqa: E731
    assert top(paper)[0][:2] == (5, 2) and all(m < 0 for _, _, m in top(paper)[1:])
    assert top(relevant)[0][0] == 5 and all(m == 0 for _, _, m in top(relevant)[1:])
    assert top(relevant)[0][2] == pytest.approx(top(paper)[0][2])                     # same push on the marker
    assert torch.equal(relevant != 0, torch.tensor([[True, False, False, False]] * 2))
    assert (rand != 0).sum() == 2 and not torch.equal(rand != 0, relevant != 0)         # moved, not removed


def test_token_credit_script(tmp_path, tiny_dir, tiny_disc_dir):
    import token_credit
    out = tmp_path / "credit.json"
    proc = subprocess.run([sys.executable, "experiments/token_credit.py", "--model", str(tiny_dir), "--discriminator",
                           str(tiny_disc_dir), "--data", DATA, "--prompts", "2", "--group-size", "2",
                           "--max-new-tokens", "4", "--by-token", "3", "--min-count", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = json.loads(out.read_text())
    assert sum(c["responses"] for c in saved["by_balance"].values()) == 4
    assert list(saved["by_token"]) == [name for name, *_ in token_credit.TOKEN_TERMS]
    assert all(saved["by_token"][name] for name in saved["by_token"])
    assert "highest mean A_tok, relevant tokens only" in proc.stdout
