"""The fuzz suite of train.py (tests/test_fuzz.py has the other scripts'): bad settings, data, models, run folders.

Each case runs `errors.main_boundary(train.main, argv)` in this process (a subprocess per case would take minutes on
2 cores; test_script_errors_are_one_line_with_exit_code_2 in test_train.py checks the real command's wiring) and must
end with exit code 2, no traceback, one `error:` line (argparse's own `error: argument --flag: ...` for a bad flag
value) that names what is wrong, and nothing written or lost: the case's folder is byte for byte the same afterwards.
Then kill -9 in the middle of a checkpoint write, and --resume: the same weights as a run that was never killed.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support import errors, models
import train

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "fixtures" / "rubrics_tiny.jsonl"
USER = [{"role": "user", "content": "Write a note about foxes."}]


def checker_row(iid, kwargs) -> bytes:
    return json.dumps({"id": "bad", "messages": USER, "rubrics": [
        {"description": "d", "checker": {"instruction_id": iid, "kwargs": kwargs}}]}).encode()


# --- the table ---------------------------------------------------------------------------------------------------
# (case, extra argv, what the error line must contain); {case} is the case's folder, {run} a finished run folder
# copied into it, {tiny} the tiny policy, {disc} its discriminator, {broken} a broken model made by BROKEN below.

BAD_SETTINGS = [  # one bad value for each of support/train_flags.SETTING_RULES, and argparse's own refusals
    ("prompts_per_step", "0"), ("group_size", "1"), ("steps", "0"), ("mini_batches", "0"),
    ("lr", "-1"), ("lr", "1000"), ("lr", "nan"), ("weight_decay", "-0.1"), ("warmup_steps", "-3"),
    ("clip_low", "1.5"), ("clip_high", "-1"), ("grad_clip", "0"), ("kl", "-1"), ("lora", "-2"),
    ("token_weight", "nan"), ("token_weight", "-0.5"), ("token_std_floor", "inf"), ("micro_batch_tokens", "0"),
    ("disc_batch_tokens", "0"), ("save_every", "0"), ("keep_checkpoints", "-1"), ("eval_every", "-1"),
    ("eval_prompts", "-1"), ("threads", "-1"),
]
CASES = [(f"--{name.replace('_', '-')} {value}", [f"--{name.replace('_', '-')}", value],
          f"--{name.replace('_', '-')}") for name, value in BAD_SETTINGS]
CASES += [
    ("more mini-batches than rows", ["--mini-batches", "99"], "--mini-batches 99: at most P*G"),
    ("--max-new-tokens 0", ["--max-new-tokens", "0"], "argument --max-new-tokens"),
    ("--temperature -1", ["--temperature", "-1"], "argument --temperature"),
    ("--top-p 2", ["--top-p", "2"], "argument --top-p"),
    ("--algo unknown", ["--algo", "ppo"], "argument --algo"),
    ("--lr not a number", ["--lr", "fast"], "argument --lr"),
    # data
    ("train data missing", ["--train-data", "{case}/nope.jsonl"], "nope.jsonl"),
    ("train data a folder", ["--train-data", "{case}"], "{case}"),
    ("train data empty", ["--train-data", "{case}/empty.jsonl"], "has no prompts"),
    ("train data not UTF-8", ["--train-data", "{case}/latin1.jsonl"], "latin1.jsonl:1"),
    ("train data malformed JSON", ["--train-data", "{case}/malformed.jsonl"], "malformed.jsonl:1"),
    ("train data nested too deeply", ["--train-data", "{case}/deep.jsonl"], "deep.jsonl:1"),
    ("keywords a string", ["--train-data", "{case}/keywords_string.jsonl"], "kwargs"),
    ("keywords missing", ["--train-data", "{case}/keywords_missing.jsonl"], "keywords"),
    ("num_words negative", ["--train-data", "{case}/num_words.jsonl"], "num_words"),
    ("eval data missing", ["--eval-data", "{case}/nope.jsonl"], "nope.jsonl"),
    # models
    ("model path missing", ["--model", "{case}/no-model"], "no-model"),
    ("a text file named .gguf", ["--model", "{case}/fake.gguf"], "fake.gguf"),
    ("model folder without weights", ["--model", "{broken}"], "{broken}"),
    ("model weights truncated", ["--model", "{broken}"], "{broken}"),
    ("discriminator folder missing", ["--discriminator", "{case}/no-disc"], "no-disc"),
    ("discriminator with another vocabulary", ["--discriminator", "{broken}"], "tokenizer"),
    # run folders
    ("resume: no such folder", ["--resume", "{case}/no-run"], "no checkpoint there"),
    ("resume: a folder without checkpoints", ["--resume", "{case}"], "no checkpoint there"),
    ("resume: trainer state truncated", ["--resume", "{run}"], "trainer_state.pt"),
    ("resume: trainer state empty", ["--resume", "{run}"], "trainer_state.pt"),
    ("resume: trainer state garbage", ["--resume", "{run}"], "trainer_state.pt"),
    ("resume: trainer state runs code", ["--resume", "{run}"], "trainer_state.pt"),
    ("resume: another algorithm", ["--resume", "{run}", "--algo", "rtt"], "--algo rtt contradicts"),
    ("resume: another seed", ["--resume", "{run}", "--seed", "5"], "--seed 5 contradicts"),
    ("resume: another group size", ["--resume", "{run}", "--group-size", "4"], "--group-size 4 contradicts"),
    ("resume: checkpoint weights truncated", ["--resume", "{run}"], "step_000001"),
    ("a new run into a run folder", ["--out", "{run}"], "already holds a run"),
    ("resume into another run's folder", ["--resume", "{run}", "--out", "{case}/other"], "other already holds a run"),
    ("resume: a cosine run made longer", ["--resume", "{run}", "--steps", "5"],
     "--steps 5: the run was planned for 2 steps"),
    ("resume: another judge model name", ["--resume", "{run}", "--judge-name", "other"], "--judge-name other"),
]


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[:1000])


def _pickle_payload(path: Path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {path.parent / 'payload-ran'}",))
    torch.save({"step": 1, "x": Payload()}, path)


STATE = "checkpoints/step_000001/trainer_state.pt"
BREAK_RUN = {  # case -> how the copied run folder is damaged
    "resume: trainer state truncated": lambda run: _truncate(run / STATE),
    "resume: trainer state empty": lambda run: (run / STATE).write_bytes(b""),
    "resume: trainer state garbage": lambda run: (run / STATE).write_bytes(b"not a checkpoint at all"),
    "resume: trainer state runs code": lambda run: _pickle_payload(run / STATE),
    "resume: checkpoint weights truncated": lambda run: _truncate(run / "checkpoints/step_000001/model.safetensors"),
}
BROKEN = {  # case -> how a copy of the tiny policy is broken
    "model folder without weights": lambda m: (m / "model.safetensors").unlink(),
    "model weights truncated": lambda m: _truncate(m / "model.safetensors"),
    "discriminator with another vocabulary": None,   # made in the fixture: the tokenizer gets an extra token
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_dir):
    """A GRPO-CSR run folder of the tiny policy with a checkpoint at step 1 of 2."""
    out = tmp_path_factory.mktemp("fuzz-run") / "run"
    train.main(common_argv(tiny_dir) + ["--algo", "grpo", "--union", "csr", "--steps", "2", "--stop-after", "1",
                                        "--out", str(out)])
    return out


def common_argv(tiny_dir) -> list:
    return ["--model", str(tiny_dir), "--train-data", str(DATA), "--eval-data", str(DATA), "--eval-prompts", "0",
            "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "8", "--lr", "1e-3",
            "--micro-batch-tokens", "64", "--no-progress"]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case,extra,says", CASES, ids=[c[0] for c in CASES])
def test_train_fault(case, extra, says, tmp_path, tiny_dir, tiny_disc_dir, finished_run, capsys):
    folder = tmp_path / "case"
    folder.mkdir()
    (folder / "empty.jsonl").write_bytes(b"")
    (folder / "latin1.jsonl").write_bytes(b'{"id": "x", "messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    (folder / "malformed.jsonl").write_bytes(b'{"id": "x", "messages": \n')
    (folder / "deep.jsonl").write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    (folder / "keywords_string.jsonl").write_bytes(checker_row("keywords:existence", {"keywords": "brother"}) + b"\n")
    (folder / "keywords_missing.jsonl").write_bytes(checker_row("keywords:existence", {}) + b"\n")
    (folder / "num_words.jsonl").write_bytes(checker_row("length_constraints:number_words",
                                                         {"num_words": -5, "relation": "less than"}) + b"\n")
    (folder / "fake.gguf").write_text("this is a text file, not a GGUF model")
    run, broken = folder / "run", folder / "broken"
    shutil.copytree(finished_run, run)
    if case in BREAK_RUN:
        BREAK_RUN[case](run)
    if case == "resume into another run's folder":
        shutil.copytree(finished_run, folder / "other")
    if case in BROKEN:
        shutil.copytree(tiny_dir, broken)
        if BROKEN[case]:
            BROKEN[case](broken)
        else:
            shutil.copytree(tiny_disc_dir, broken, dirs_exist_ok=True)
            tok = models.load_tokenizer(str(broken))
            tok.add_tokens(["<an_extra_token>"])
            tok.save_pretrained(broken)
    fill = lambda a: a.format(case=folder, run=run, tiny=tiny_dir, disc=tiny_disc_dir, broken=broken)  # noqa: E731
    argv = common_argv(tiny_dir) + ["--discriminator", str(tiny_disc_dir), "--out", str(folder / "out")]
    argv = [fill(a) for a in extra] if extra[0] == "--resume" else argv + [fill(a) for a in extra]   # bare resume
    before = snapshot(folder)
    with pytest.raises(SystemExit) as exit_info:
        errors.main_boundary(train.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    error_lines = [l for l in err.splitlines() if "error:" in l]
    assert len(error_lines) == 1, err
    assert fill(says) in error_lines[0], error_lines[0]
    assert snapshot(folder) == before                                          # nothing written, nothing lost
    assert not (folder / "out").exists() and not (folder / "payload-ran").exists()


# --- kill -9 during a checkpoint write, then --resume -----------------------------------------------------------

KILL_DURING_SAVE = """
import os, signal, sys, torch
sys.path.insert(0, {root!r})
import train
real_save = torch.save
def save(obj, path, *a, **k):
    if "step_000002" in str(path):          # the model of step 2 is on disk, its trainer state is not
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, path, *a, **k)
torch.save = save
train.main({argv!r})
"""


def test_kill_9_during_a_checkpoint_write_then_resume_gives_the_same_weights(tmp_path, tiny_dir):
    settings = ["--algo", "grpo", "--union", "csr", "--steps", "3", "--save-every", "1", "--keep-checkpoints", "5"]
    one_go = tmp_path / "one-go"
    train.main(common_argv(tiny_dir) + settings + ["--out", str(one_go)])
    killed = tmp_path / "killed"
    script = KILL_DURING_SAVE.format(root=str(ROOT), argv=common_argv(tiny_dir) + settings + ["--out", str(killed)])
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (killed / "checkpoints" / "latest").read_text() == "step_000001"
    assert (killed / "checkpoints" / "step_000002.tmp").exists()              # the half-written checkpoint
    train.main(["--resume", str(killed)])
    from safetensors.torch import load_file
    a = load_file(one_go / "checkpoints" / "step_000003" / "model.safetensors")
    b = load_file(killed / "checkpoints" / "step_000003" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["kind"] == "train"]
    assert steps == [1, 2, 3]                                                 # step 2 once, not twice
