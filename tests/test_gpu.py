"""GPU tests (marker `gpu`): what train.py does differently on CUDA, checked against a float32 reference.

    python -m pytest -q -m gpu tests/test_gpu.py                            # on a GPU machine (scripts/gpu_check.sh)
    RTT_GPU_TESTS_ON_CPU=1 python -m pytest -q -m gpu tests/test_gpu.py     # the same tests on the CPU, tiny sizes

Without CUDA they skip, unless RTT_GPU_TESTS_ON_CPU=1 (what `scripts/gpu_check.sh OUT --cpu-toy` sets, so that CI runs
this file's code too). On the CPU the bf16 autocast is CPU autocast: it checks the test logic, not CUDA kernels.
"""
import copy
import os

import pytest
import torch

import discriminator
import train
from support.logprobs import token_logprobs

DEVICE = "cuda" if torch.cuda.is_available() else ("cpu" if os.environ.get("RTT_GPU_TESTS_ON_CPU") == "1" else None)
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    DEVICE is None, reason="needs CUDA (RTT_GPU_TESTS_ON_CPU=1 runs these on the CPU)")]


def bf16():
    """The autocast train.py uses on a GPU (bf16 matmuls, float32 master weights)."""
    return torch.autocast(DEVICE, dtype=torch.bfloat16)


def batch(tok, B=4, Tp=6, T=10, seed=0):
    """A random left-padded prompt [B, Tp] and right-padded response [B, T] batch (one short response, one short
    prompt), plus advantages [B, T] of both signs."""
    g = torch.Generator().manual_seed(seed)
    V = len(tok)
    pi, ri = torch.randint(3, V, (B, Tp), generator=g), torch.randint(3, V, (B, T), generator=g)
    pm, rm = torch.ones(B, Tp, dtype=torch.long), torch.ones(B, T, dtype=torch.long)
    pm[1, :3] = 0                                               # left padding of a shorter prompt
    rm[2, 6:] = 0                                               # a response that ended early
    adv = torch.randn(B, T, generator=g) * rm
    return [x.to(DEVICE) for x in (pi, pm, ri, rm, adv)]


def policy_grads(model, b, autocast: bool) -> tuple:
    """(log-probs [B, T], {name: grad}) of one on-policy PPO-clip loss, as train.py's first mini-batch computes it."""
    pi, pm, ri, rm, adv = b
    model.zero_grad(set_to_none=True)
    with bf16() if autocast else torch.autocast(DEVICE, enabled=False):
        logp, _ = train.response_logprobs(model, pi, pm, ri, rm)                       # [B, T]
    loss, _ = train.ppo_clip_loss(logp, logp.detach(), adv, rm)
    (loss / rm.shape[0]).backward()
    return logp.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def flat(grads: dict) -> torch.Tensor:
    return torch.cat([g.float().flatten() for g in grads.values()])


def test_bf16_autocast_step_matches_float32_reference(tiny_lm, tiny_tok):
    model = copy.deepcopy(tiny_lm).to(DEVICE).train()
    b = batch(tiny_tok)
    logp32, g32 = policy_grads(model, b, autocast=False)
    logp16, g16 = policy_grads(model, b, autocast=True)
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())  # master fp32
    with torch.no_grad(), bf16():
        assert model(input_ids=b[0]).logits.dtype == torch.bfloat16                    # the autocast is really on
    mask = b[3].bool()
    assert not torch.equal(logp16[mask], logp32[mask])                                  # so bf16 rounding shows
    torch.testing.assert_close(logp16[mask], logp32[mask], rtol=0, atol=0.05)
    cos = torch.nn.functional.cosine_similarity(flat(g32), flat(g16), dim=0)
    assert cos > 0.99, f"bf16 autocast gradient direction differs from float32: cosine {cos:.4f}"
    # one AdamW step from the same weights moves them the same way
    moved = []
    for g in (g32, g16):
        m = copy.deepcopy(model)
        for n, p in m.named_parameters():
            p.grad = g[n].clone()
        before = torch.cat([p.detach().flatten().clone() for p in m.parameters()])
        torch.optim.AdamW(m.parameters(), lr=1e-3).step()
        moved.append(torch.cat([p.detach().flatten() for p in m.parameters()]) - before)
    assert torch.nn.functional.cosine_similarity(moved[0], moved[1], dim=0) > 0.9


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_logprobs_values_and_gradients_match_log_softmax(dtype):
    # The real vocabulary on a GPU; on the CPU a smaller one, still with rows spread over two chunks.
    V, N = (151936, 300) if DEVICE == "cuda" else (8192, 2100)
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(N, V, generator=g) * 3).to(DEVICE, dtype).requires_grad_()   # [N, V]
    targets = torch.randint(0, V, (N,), generator=g).to(DEVICE)                         # [N]
    up = torch.randn(N, generator=g).to(DEVICE)                                          # upstream gradient [N]
    logp, ent = token_logprobs(logits, targets)
    (logp * up).sum().backward()
    ref_in = logits.detach().float().requires_grad_()
    ref_lsm = torch.log_softmax(ref_in, dim=-1)                                          # [N, V] float32
    ref = ref_lsm.gather(1, targets[:, None]).squeeze(1)
    (ref * up).sum().backward()
    assert logp.dtype == torch.float32 and logits.grad.dtype == dtype
    torch.testing.assert_close(logp, ref.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ent, -(ref_lsm.exp() * ref_lsm).sum(-1).detach(), rtol=1e-5, atol=1e-4)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(logits.grad.float(), ref_in.grad, **tol)


@pytest.mark.parametrize("autocast", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_lm, tiny_tok, autocast):
    model = copy.deepcopy(tiny_lm).to(DEVICE).train()
    b = batch(tiny_tok, seed=1)
    _, plain = policy_grads(model, b, autocast)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})   # as train.py
    _, ckpt = policy_grads(model, b, autocast)
    # per tensor, relative to its norm: CUDA attention backward may sum in another order (and bf16 then round
    # differently) from one pass to the next; a recomputation that went wrong is off by far more than this
    rel = 1e-2 if autocast else 1e-4
    for n in plain:
        err = float((ckpt[n] - plain[n]).norm())
        assert err <= rel * float(plain[n].norm()) + 1e-9, f"{n}: |ckpt - plain| {err:.3g}, |plain| {plain[n].norm():.3g}"


def test_discriminator_forward_on_device_matches_cpu_float32(tiny_tok):
    from tiny import tiny_token_classifier
    from support import models
    ref = tiny_token_classifier(tiny_tok)
    dev = copy.deepcopy(ref).to(DEVICE, models.default_dtype(torch.device(DEVICE)))   # bf16 on a GPU, as loaded there
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, len(tiny_tok), (3, 7), generator=g)                         # [B, T]
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0                                                                      # a shorter response
    criteria = [["Answer in under 100 words.", "Include the word robot."], ["Write a poem."], ["No commas."]]
    w_ref = discriminator.relevance(ref, tiny_tok, ids, mask, criteria, K=2)            # [B, K, T] on CPU, float32
    w = discriminator.relevance(dev, tiny_tok, ids.to(DEVICE), mask.to(DEVICE), criteria, K=2)
    assert w.shape == (3, 2, 7) and w.device.type == DEVICE and w.dtype == torch.float32
    assert (w[1, :, 4:] == 0).all() and (w[1:, 1] == 0).all()                           # masked tokens, padded slots
    torch.testing.assert_close(w.cpu(), w_ref, rtol=0, atol=2e-2)
