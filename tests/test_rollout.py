"""rollout.py and support/models.py: shapes, masks, EOS, padding, determinism, skipping, aliases, the embedded model."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support import models
from rollout import generate_rollout, response_mask_from_ids

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [[{"role": "user", "content": "hello world"}],
           [{"role": "user", "content": "Write a short email to your manager about the project deadline."}]]


def test_response_mask_includes_first_eos_only():
    ids = torch.tensor([[5, 7, 2, 2, 2],
                        [5, 6, 7, 8, 9],
                        [2, 2, 2, 2, 2]])
    mask, truncated = response_mask_from_ids(ids, [2])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def test_response_mask_two_stop_ids():
    mask, truncated = response_mask_from_ids(torch.tensor([[4, 3, 9, 2], [4, 4, 2, 3]]), [2, 3])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    assert truncated.tolist() == [False, False]


def test_shapes_groups_and_masks(tiny_lm, tiny_tok):
    G = 3
    r = generate_rollout(tiny_lm, tiny_tok, PROMPTS, group_size=G, max_new_tokens=12, seed=0)
    B = len(PROMPTS) * G
    assert r.response_ids.shape[0] == B and r.response_mask.shape == r.response_ids.shape
    assert r.prompt_ids.shape[0] == B and r.prompt_mask.shape == r.prompt_ids.shape
    assert r.prompt_index == [0, 0, 0, 1, 1, 1]
    assert len(r.texts) == B and r.truncated.shape == (B,)
    assert r.num_prompts == len(PROMPTS) and r.new_tokens == int(r.response_mask.sum())
    # rows of the same prompt share the prompt tokens; left padding: last prompt column is real for every row
    assert torch.equal(r.prompt_ids[0], r.prompt_ids[2])
    assert r.prompt_mask[:, -1].all()
    for b in range(B):
        n = int(r.response_mask[b].sum())
        assert n >= 1
        assert r.response_mask[b, :n].all() and not r.response_mask[b, n:].any()   # a prefix
        if not r.truncated[b]:
            assert r.response_ids[b, n - 1] == tiny_tok.eos_token_id                 # EOS is inside the mask
            assert (r.response_ids[b, n:] == tiny_tok.pad_token_id).all()
        else:
            assert n == r.response_ids.shape[1]
            assert tiny_tok.eos_token_id not in r.response_ids[b].tolist()


def test_eos_in_mask_when_pad_equals_eos(tiny_tok):
    """Force an EOS early by making the tiny model love it: the EOS must be a masked-in response token."""
    from tiny import tiny_causal_lm
    lm = tiny_causal_lm(tiny_tok, seed=1)
    bias = torch.zeros(len(tiny_tok))
    bias[tiny_tok.eos_token_id] = 50.0
    lm.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    r = generate_rollout(lm, tiny_tok, PROMPTS[:1], group_size=2, max_new_tokens=5, seed=0)
    assert tiny_tok.pad_token_id == tiny_tok.eos_token_id
    assert r.response_mask[:, 0].all() and not r.response_mask[:, 1:].any()
    assert (r.response_ids[:, 0] == tiny_tok.eos_token_id).all()
    assert not r.truncated.any() and r.texts == ["", ""]


def test_left_padding_does_not_change_greedy_output(tiny_lm, tiny_tok):
    both = generate_rollout(tiny_lm, tiny_tok, PROMPTS, group_size=1, max_new_tokens=10, temperature=0)
    for i, prompt in enumerate(PROMPTS):
        alone = generate_rollout(tiny_lm, tiny_tok, [prompt], group_size=1, max_new_tokens=10, temperature=0)
        n = int(alone.response_mask[0].sum())
        assert both.response_ids[i, :n].tolist() == alone.response_ids[0, :n].tolist()
        assert both.texts[i] == alone.texts[0]


def test_seeded_sampling_is_deterministic(tiny_lm, tiny_tok):
    a = generate_rollout(tiny_lm, tiny_tok, PROMPTS, group_size=2, max_new_tokens=8, temperature=1.0, seed=123)
    b = generate_rollout(tiny_lm, tiny_tok, PROMPTS, group_size=2, max_new_tokens=8, temperature=1.0, seed=123)
    c = generate_rollout(tiny_lm, tiny_tok, PROMPTS, group_size=2, max_new_tokens=8, temperature=1.0, seed=124)
    assert torch.equal(a.response_ids, b.response_ids)
    assert not torch.equal(a.response_ids, c.response_ids)
    assert a.response_ids[0].tolist() != a.response_ids[1].tolist()   # sampling: a group is not G copies


def test_long_prompts_are_skipped_and_counted(tiny_lm, tiny_tok):
    long = [{"role": "user", "content": "word " * 200}]
    r = generate_rollout(tiny_lm, tiny_tok, [PROMPTS[0], long, PROMPTS[1]], group_size=2, max_new_tokens=4,
                         max_prompt_tokens=64, seed=0)
    assert r.skipped == [1]
    assert r.prompt_index == [0, 0, 2, 2]
    none = generate_rollout(tiny_lm, tiny_tok, [long], group_size=2, max_new_tokens=4, max_prompt_tokens=64)
    assert none.skipped == [0] and none.texts == [] and none.response_ids.shape[0] == 0


def test_aliases_resolve_without_loading():
    assert models.resolve("Qwen2.5-1.5B") == ("Qwen/Qwen2.5-1.5B-Instruct", None)
    assert models.resolve("Qwen2.5-0.5B") == ("Qwen/Qwen2.5-0.5B-Instruct", None)
    assert models.resolve("someorg/some-model") == ("someorg/some-model", None)
    with pytest.raises(models.ModelLoadError, match="does not exist"):
        models.resolve("./no/such/folder")
    with pytest.raises(models.ModelLoadError, match="does not exist"):
        models.resolve("missing.gguf")


def test_local_folder_and_clear_hub_error(tiny_dir):
    assert models.resolve(str(tiny_dir)) == (str(tiny_dir), None)
    tok = models.load_tokenizer(str(tiny_dir))
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    with pytest.raises(models.ModelLoadError, match="pass the local folder with --model PATH"):
        models.load_tokenizer("no-such-org/no-such-model-xyz")   # HF_HUB_OFFLINE=1 in tests


def test_rollout_cli_unknown_model_is_one_clear_line():
    proc = subprocess.run([sys.executable, "rollout.py", "--model", "no-such-org/no-such-model", "--prompt", "hi"],
                          cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ,
                                                                          "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert "error: cannot load model 'no-such-org/no-such-model'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rollout_cli_on_tiny_model(tiny_dir):
    proc = subprocess.run([sys.executable, "rollout.py", "--model", str(tiny_dir), "--prompt", "hello", "-n", "2",
                           "--max-new-tokens", "6"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "--- response 2/2" in proc.stdout and "tokens/s" in proc.stdout


@pytest.mark.real_model
def test_embedded_model_loads_and_generates(smol):
    model, tok = smol
    assert model.config.vocab_size == 49152 and tok.eos_token == "<|im_end|>"
    r = generate_rollout(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                         group_size=2, max_new_tokens=16, temperature=0, seed=0)
    assert r.response_ids.shape[0] == 2 and r.new_tokens > 0
    assert "Paris" in r.texts[0]
