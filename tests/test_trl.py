"""RTT on TRL's GRPOTrainer (scale/trl_rtt.py): same loss, same advantages, across processes too; refusals; launcher.

Tiny models built in code (tests/tiny.py) and a fixed rollout (tests/trl_tiny.py), CPU only.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trl_tiny import (G, PROMPT_ROWS, TWO_PROCESS_CASES, StubJudge, advantages_by_response, generation_batch,
                      make_trainer, reference_advantages)

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny models: threads cost more than they give on a shared CPU
    yield
    torch.set_num_threads(threads)


def grads(model) -> list:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


# ---------------------------------------------------------------------------------------------------------------
# the loss: TRL's on RTT's [B, T] advantage == train.ppo_clip_loss, row by row through shuffling and reuse


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_loss_and_gradient_equal_train_ppo_clip_loss(loss_type):
    import train
    spg, iterations = 2, 2                          # 2 mini-batches per rollout, each rollout used twice
    credit = dict(token_credit="all")               # every token has an advantage: every row moves the loss
    trainer = make_trainer(loss_type=loss_type, steps_per_generation=spg, num_iterations=iterations,
                           per_device_train_batch_size=len(PROMPT_ROWS) // spg, **credit)
    expected = reference_advantages(trainer, **credit)   # {response tokens: A row}, advantages.rtt_advantages
    model = trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = generation_batch(trainer)
    clipped = 0.0
    for step in range(spg * iterations):
        inputs = trainer._prepare_inputs(batch)     # shuffled, split, reused: each row must keep its advantages
        got = advantages_by_response(inputs)
        assert len(got) == len(PROMPT_ROWS) // spg
        for tokens, row in got.items():
            torch.testing.assert_close(row, expected[tokens].float(), atol=1e-5, rtol=1e-5)

        model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
        grad_trl = grads(model)

        model.zero_grad(set_to_none=True)           # train.py's own forward (temperature 1: TRL divides by it)
        logp, _ = train.response_logprobs(model, inputs["prompt_ids"], inputs["prompt_mask"],
                                          inputs["completion_ids"], inputs["completion_mask"])        # [b, T]
        old = inputs.get("old_per_token_logps")
        old = logp.detach() if old is None else old
        mask = inputs["completion_mask"]
        A = torch.zeros_like(logp)                                                     # [b, T] from the reference
        for b, (tokens, m) in enumerate(zip(inputs["completion_ids"], mask)):
            n = int(m.sum())
            A[b, :n] = expected[tuple(tokens[:n].tolist())].float()
        if loss_type == "grpo":   # seq-mean-token-mean over the mini-batch's rows (train.aggregate_denominator)
            loss_sum, st = train.ppo_clip_loss(logp, old, A, mask, 0.2, 0.27, "seq-mean-token-mean")
            denom = train.aggregate_denominator(mask, "seq-mean-token-mean")
        else:                     # token-mean; TRL divides by the rollout's tokens per mini-batch, not this one's
            loss_sum, st = train.ppo_clip_loss(logp, old, A, mask, 0.2, 0.27, "token-mean")
            denom = float(inputs["num_items_in_batch"]) / spg
        ours = loss_sum / denom
        ours.backward()
        torch.testing.assert_close(loss.detach(), ours.detach(), atol=1e-6, rtol=1e-5)
        for g_trl, g_ours in zip(grad_trl, grads(model)):
            torch.testing.assert_close(g_trl, g_ours, atol=1e-6, rtol=1e-4)
        clipped += st["clip_frac"]

        with torch.no_grad():     # a large SGD step, so that later mini-batches are off-policy and some ratios clip
            for p in model.parameters():
                if p.grad is not None:
                    p -= 50.0 * p.grad
        trainer._step += 1
    assert clipped > 0, "the test never reached the clipped region"


def test_aon_tied_group_gets_a_gradient_under_rtt_and_none_under_grpo():
    norms = {}
    for algo in ("rtt", "grpo"):
        trainer = make_trainer(algo=algo, judge=StubJudge(tie=True))
        model = trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        inputs = trainer._prepare_inputs(generation_batch(trainer))
        assert trainer._metrics["train"]["rtt/aon_pass"][-1] == 0.0               # every response fails AON
        model.zero_grad(set_to_none=True)
        trainer.compute_loss(model, inputs).backward()
        norms[algo] = sum(float(g.norm()) for g in grads(model))
    assert norms["rtt"] > 1e-3
    assert norms["grpo"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# two processes, one group split across them: the same advantages as one process


def test_two_processes_give_the_same_advantages_as_one(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",   # a free port
           str(ROOT / "tests" / "trl_tiny.py"), str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert parts[0]["world"] == 2
    references = {}
    for name, flags in TWO_PROCESS_CASES.items():     # intra, inter (gathered cube), quirks, grpo, paper-credit
        two = {**parts[0]["results"][name], **parts[1]["results"][name]}
        assert len(parts[0]["results"][name]) == len(parts[1]["results"][name]) == len(PROMPT_ROWS) // 2
        trainer = make_trainer(**flags)
        trainer.model.train()
        one = advantages_by_response(trainer._generate_and_score_completions(generation_batch(trainer)))
        reference = reference_advantages(trainer, **flags)
        assert two.keys() == one.keys() == reference.keys()
        for tokens in reference:
            torch.testing.assert_close(two[tokens], one[tokens], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(one[tokens], reference[tokens].float(), atol=1e-5, rtol=1e-5)
        references[name] = reference
    # --token-credit reaches the trainer: the paper's credit (all tokens) is not the default (relevant tokens only)
    relevant_only, every_token = references["intra"], references["paper-credit"]
    assert any(not torch.allclose(relevant_only[t], every_token[t]) for t in relevant_only)


def test_group_advantages_refuse_inter_without_the_gathered_cube():
    from scale.trl_rtt import RefusedSetting, group_advantages
    scores = torch.tensor([[1., -1.], [1., 1.]])                                       # [B=2, K=2]
    relevance, mask = torch.rand(1, 2, 3), torch.ones(1, 3)                            # this process: row 1 only
    stop = torch.zeros(1, 3, dtype=torch.bool)
    with pytest.raises(RefusedSetting, match="inter"):
        group_advantages(scores, relevance, mask, stop, slice(1, 2), G=2, norm="inter", gather_cube=None)


# ---------------------------------------------------------------------------------------------------------------
# refusals, before any training


@pytest.mark.parametrize("setting, message", [
    (dict(importance_sampling_level="sequence"), "GSPO"),
    (dict(loss_type="cispo"), "token-level"),
    (dict(reference_quirks=True, token_credit="relevant"), "--token-credit relevant"),
])
def test_settings_that_change_rtt_are_refused(setting, message):
    from scale.trl_rtt import RefusedSetting
    with pytest.raises(RefusedSetting, match=message):
        make_trainer(**setting)


def test_bad_discriminator_refused(tmp_path, tiny_tok, tiny_disc_dir):
    import discriminator as disc_lib
    from support import models
    from tiny import tiny_token_classifier, tiny_tokenizer
    with pytest.raises(models.ModelLoadError, match="does not exist"):
        make_trainer(discriminator=str(tmp_path / "no-such-folder"))

    untrained = tmp_path / "untrained"                                                 # a plain backbone, no head
    tiny_token_classifier(tiny_tok).save_pretrained(untrained)
    tiny_tok.save_pretrained(untrained)
    with pytest.raises(disc_lib.DiscriminatorError, match="no trained relevance head"):
        make_trainer(discriminator=str(untrained))

    other_tok = tiny_tokenizer()
    other_tok.add_tokens(["<extra>"])                                                  # one more id than the policy
    with pytest.raises(disc_lib.DiscriminatorError, match="does not share the policy's tokenizer"):
        make_trainer(discriminator=(tiny_token_classifier(tiny_tok), other_tok))
    make_trainer(discriminator=str(tiny_disc_dir))                                     # the right one is taken


def test_launcher_refuses_a_missing_discriminator(tmp_path, tiny_dir):
    from scale import trl_rtt
    with pytest.raises(SystemExit, match="no discriminator at"):
        trl_rtt.main(["--model", str(tiny_dir), "--discriminator", str(tmp_path / "nothing"), "--out", str(tmp_path),
                      "--train-data", str(ROOT / "data" / "train.jsonl")])


# ---------------------------------------------------------------------------------------------------------------
# the launcher end to end: one RL step on a tiny model, a checkpoint that from_pretrained loads


def test_launcher_writes_a_checkpoint_that_loads(tmp_path, tiny_dir, tiny_disc_dir):
    from transformers import AutoModelForCausalLM
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "scale" / "trl_rtt.py"), "--model", str(tiny_dir), "--discriminator",
           str(tiny_disc_dir), "--steps", "1", "--prompts-per-step", "2", "--group-size", str(G),
           "--max-new-tokens", "8", "--mini-batches", "2", "--save-every", "1", "--lr", "1e-4", "--threads", "1",
           "--out", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "policy saved to" in run.stdout
    checkpoint = out / "checkpoint-2"                                                  # 1 RL step = 2 optimizer steps
    for folder in (out, checkpoint):
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert model.config.vocab_size == AutoModelForCausalLM.from_pretrained(tiny_dir).config.vocab_size
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict()
    assert any(not torch.equal(trained[k], base[k]) for k in base), "the run did not change the policy"
