"""
Tests for advantages.py: hand-computed cases with the expected numbers written out, then properties over seeded
random batches (and a few hypothesis-driven ones). Literal tensors only, no models; runs in a few seconds.

The running example (same as the docstrings): G = 2 responses, K = 2 constraints, T = 4 tokens.
    response 0 (4 tokens): meets c_0 (token 0 relevant), meets c_1 (tokens 2, 3 relevant)   s_0 = [+1, +1]
    response 1 (2 tokens): meets c_0 (token 1 relevant), fails c_1 (token 0 relevant)       s_1 = [+1, -1]
"""
import doctest
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # flat repo: import advantages.py from the root

import advantages  # noqa: E402
from advantages import (  # noqa: E402
    combine_advantages,
    grpo_advantages,
    inter_sample_token_norm,
    intra_sample_token_norm,
    random_relevance,
    reshape_defect_token_advantages,
    response_rewards,
    rtt_advantages,
    token_advantages,
    token_rewards,
    truncate_relevance_like_reference,
    uniform_relevance,
)

EPS = 1e-6
SCORES = torch.tensor([[1, 1], [1, -1]])                                   # [G=2, K=2]
RELEVANCE = torch.tensor([[[1., 0., 0., 0.], [0., 0., 1., 1.]],
                          [[0., 1., 0., 0.], [1., 0., 0., 0.]]])             # [G=2, K=2, T=4]
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])                          # [G=2, T=4]


def close(actual, expected, atol=1e-5):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=atol, rtol=0), f"\n{actual}\n!=\n{expected}"


def random_batch(gen, P, G, K, T, binary=False, p_rel=0.3, min_len=1):
    """Random [P, G, ...] inputs following the contract: real slots first (a random number per prompt, >= 1),
    scores +-1 on real slots and 0 on padded ones, relevance 0 on padded slots and tokens, right-padded masks."""
    lengths = torch.randint(min_len, T + 1, (P, G), generator=gen)                           # [P, G]
    mask = (torch.arange(T) < lengths.unsqueeze(-1)).to(torch.int64)                          # [P, G, T]
    k_real = torch.randint(1, K + 1, (P,), generator=gen)                                     # [P]
    slot_real = torch.arange(K) < k_real.unsqueeze(-1)                                        # [P, K]
    scores = torch.where(torch.rand(P, G, K, generator=gen) < 0.6, 1, -1)                     # [P, G, K]
    scores = (scores * slot_real.unsqueeze(1)).to(torch.int8)                                 # [P, G, K]
    hit = torch.rand(P, G, K, T, generator=gen) < p_rel                                       # [P, G, K, T]
    relevance = hit.float() if binary else hit * torch.rand(P, G, K, T, generator=gen)        # [P, G, K, T]
    relevance = relevance * mask.unsqueeze(2) * slot_real[:, None, :, None]                   # [P, G, K, T]
    return scores, relevance, mask


# ----------------------------------------------------------------------------------------------------------------
# hand-computed cases


def test_docstring_examples_run():
    result = doctest.testmod(advantages, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 20 and result.failed == 0


def test_response_rewards_aon_csr_and_padded_slots():
    scores = torch.tensor([[1, 1, 0, 0],          # met both real constraints
                           [1, -1, 0, 0],         # met one of two
                           [-1, -1, 0, 0],        # met none
                           [0, 0, 0, 0]],         # no real constraint at all
                          dtype=torch.int8)
    close(response_rewards(scores, "aon"), [1., 0., 0., 0.])
    close(response_rewards(scores, "csr"), [1., 0.5, 0., 0.])
    close(response_rewards(torch.tensor([[1, -1, 1]]), "csr"), [2 / 3])
    assert response_rewards(scores, "aon").dtype == torch.float32
    with pytest.raises(ValueError):
        response_rewards(scores, "sum")


def test_grpo_advantages_hand():
    # [1, 0, 0, 0]: mean 1/4, unbiased std sqrt((9/16 + 3/16) / 3) = 1/2
    close(grpo_advantages(torch.tensor([1., 0., 0., 0.])), [1.5, -0.5, -0.5, -0.5])
    # [1, 0]: mean 1/2, unbiased std sqrt(1/2)
    close(grpo_advantages(torch.tensor([1., 0.])), [1 / math.sqrt(2), -1 / math.sqrt(2)])
    # eps is added to the std, not to the variance
    R = torch.tensor([3., 1.], dtype=torch.float64)
    close(grpo_advantages(R, eps=1.0), [1 / (math.sqrt(2) + 1), -1 / (math.sqrt(2) + 1)], atol=1e-12)
    # ties give exactly 0 (also when the mean does not round back to the value: 8 x 1/3) and one response gives 0
    assert torch.equal(grpo_advantages(torch.zeros(4)), torch.zeros(4))
    assert torch.equal(grpo_advantages(torch.full((8,), 1 / 3)), torch.zeros(8))
    assert torch.equal(grpo_advantages(torch.tensor([1.])), torch.zeros(1))
    # a batch of groups never mixes them
    close(grpo_advantages(torch.tensor([[1., 0.], [5., 5.]])), [[0.70711, -0.70711], [0., 0.]])


def test_csr_equals_released_mean_of_scores_after_normalisation():
    # The released code's CSR is mean_k s = 2 CSR - 1; group normalisation removes the affine map (up to eps).
    gen = torch.Generator().manual_seed(1)
    scores, _, _ = random_batch(gen, P=16, G=8, K=6, T=4)
    real = scores != 0
    mean_s = (scores.float() * real).sum(-1) / real.sum(-1)                                   # [P, G]
    close(grpo_advantages(response_rewards(scores, "csr")), grpo_advantages(mean_s), atol=1e-4)


def test_token_rewards_hand():
    expected = [[[1., 0., 0., 0.], [0., 0., 1., 1.]],
                [[0., 1., 0., 0.], [-1., 0., 0., 0.]]]
    close(token_rewards(SCORES, RELEVANCE), expected)
    half = torch.tensor([[[0.5, 0.25]]])                                     # continuous relevance is scaled
    close(token_rewards(torch.tensor([[-1]]), half), [[[-0.5, -0.25]]])
    close(token_rewards(torch.tensor([[0]]), half), [[[0., 0.]]])            # padded slot: 0


def test_intra_sample_norm_hand():
    r = token_rewards(SCORES, RELEVANCE)
    s3 = math.sqrt(3)
    expected = [[[s3, -1 / s3, -1 / s3, -1 / s3],     # one relevant of four: mu 1/4, sigma sqrt(3)/4
                 [-1., -1., 1., 1.]],                 # two of four: mu 1/2, sigma 1/2
                [[-1., 1., 0., 0.],                   # two real tokens, one relevant
                 [-1., 1., 0., 0.]]]                  # failed c_1: token 0 gets -1, token 1 +1
    close(intra_sample_token_norm(r, MASK), expected)


def test_intra_sample_closed_form_for_binary_relevance():
    # a share m of relevant tokens: +-sqrt((1-m)/m) on relevant, -+sqrt(m/(1-m)) on the others
    for n, n_rel in [(5, 1), (5, 2), (10, 3), (7, 6)]:
        m = n_rel / n
        w = torch.zeros(1, 1, n)
        w[..., :n_rel] = 1.0
        for s in (1, -1):
            out = intra_sample_token_norm(token_rewards(torch.tensor([[s]]), w), torch.ones(1, n))
            close(out[0, 0, :n_rel], [s * math.sqrt((1 - m) / m)] * n_rel)
            close(out[0, 0, n_rel:], [-s * math.sqrt(m / (1 - m))] * (n - n_rel))


def test_intra_sample_constant_rows_and_empty_response_are_zero():
    r = torch.tensor([[[0.3] * 7 + [0.], [0.] * 8, [-1.] * 7 + [0.]],      # constant on the 7 real tokens
                      [[5., 1.] + [0.] * 6, [1.] * 8, [2.] * 8]])            # response 1 is empty
    mask = torch.tensor([[1] * 7 + [0], [0] * 8])
    for f in (intra_sample_token_norm, inter_sample_token_norm):
        out = f(r, mask)
        assert torch.equal(out, torch.zeros_like(out)), f.__name__


def test_inter_sample_norm_hand():
    r = token_rewards(SCORES, RELEVANCE)
    # c_0: 6 real tokens, values [1,0,0,0, 0,1]: mu = 1/3, sigma = sqrt(2)/3
    a, b = (2 / 3) / (math.sqrt(2) / 3), (-1 / 3) / (math.sqrt(2) / 3)     # 1.41421, -0.70711
    # c_1: values [0,0,1,1, -1,0]: mu = 1/6, sigma^2 = 3/6 - 1/36 = 17/36
    sig = math.sqrt(17) / 6
    z, p, n = (-1 / 6) / sig, (5 / 6) / sig, (-7 / 6) / sig               # -0.24254, 1.21268, -1.69775
    expected = [[[a, b, b, b], [z, z, p, p]],
                [[b, a, 0., 0.], [n, z, 0., 0.]]]
    close(inter_sample_token_norm(r, MASK), expected)


def test_token_advantages_hand_and_padded_slot():
    s3 = math.sqrt(3)
    normed = intra_sample_token_norm(token_rewards(SCORES, RELEVANCE), MASK)
    expected = [[(s3 - 1) / 2, (-1 / s3 - 1) / 2, (-1 / s3 + 1) / 2, (-1 / s3 + 1) / 2],   # 0.36603 -0.78868 0.21132
                [-1., 1., 0., 0.]]
    close(token_advantages(normed, SCORES), expected)
    junk = torch.cat([torch.full((2, 1, 4), 9.), normed], dim=1)            # padded slot FIRST, holding junk
    close(token_advantages(junk, torch.tensor([[0, 1, 1], [0, 1, -1]])), expected)
    assert torch.equal(token_advantages(normed, torch.zeros(2, 2)), torch.zeros(2, 4))   # no real constraint


def test_combine_add_and_mix_hand():
    A_res = torch.tensor([1.0, -0.5])
    A_tok = torch.tensor([[0.2, -0.4, 0.6, 0.8], [1.0, -1.0, 7.0, 7.0]])   # junk on response 1's padded tokens
    close(combine_advantages(A_res, A_tok, MASK, "add", 0.5),
          [[1.1, 0.8, 1.3, 1.4], [0.0, -1.0, 0.0, 0.0]])
    close(combine_advantages(A_res, A_tok, MASK, "mix", 0.25),
          [[0.8, 0.65, 0.9, 0.95], [-0.125, -0.625, 0.0, 0.0]])
    with pytest.raises(ValueError):
        combine_advantages(A_res, A_tok, MASK, "multiply")


def test_rtt_advantages_running_example_end_to_end():
    A, parts = rtt_advantages(SCORES, RELEVANCE, MASK)
    r2 = 1 / math.sqrt(2)
    close(parts["rewards"], [1., 0.])
    close(parts["response_adv"], [r2, -r2])
    close(parts["token_adv"], [[0.36603, -0.78868, 0.21132, 0.21132], [-1., 1., 0., 0.]])
    close(A, [[r2 + 0.183013, r2 - 0.394338, r2 + 0.105662, r2 + 0.105662],
              [-r2 - 0.5, -r2 + 0.5, 0., 0.]])
    # the same with the inter-sample baseline, written from test_inter_sample_norm_hand's values
    A, parts = rtt_advantages(SCORES, RELEVANCE, MASK, norm="inter")
    close(parts["token_adv"], [[(1.414214 - 0.242536) / 2, (-0.707107 - 0.242536) / 2,
                                (-0.707107 + 1.212678) / 2, (-0.707107 + 1.212678) / 2],
                               [(-0.707107 - 1.697749) / 2, (1.414214 - 0.242536) / 2, 0., 0.]])


def test_rtt_advantages_rejects_bad_shapes_and_modes():
    with pytest.raises(ValueError):
        rtt_advantages(SCORES[:, :1], RELEVANCE, MASK)
    with pytest.raises(ValueError):
        rtt_advantages(SCORES, RELEVANCE, MASK[:, :3])
    with pytest.raises(ValueError):
        rtt_advantages(SCORES, RELEVANCE, MASK, norm="batch")


def test_reshape_defect_hand():
    r = token_rewards(SCORES, RELEVANCE)
    s3 = math.sqrt(3)
    # response 0 gets mean(intra(r_00), intra(r_10)) over its 4 tokens:
    #   [s3, -1/s3, -1/s3, -1/s3] and [-1/s3, s3, -1/s3, -1/s3]  ->  [1/s3, 1/s3, -1/s3, -1/s3]
    # response 1 gets mean(intra(r_01 cut to 2 tokens) = 0, intra(r_11) = [-1, 1])
    close(reshape_defect_token_advantages(r, SCORES, MASK, "intra"),
          [[1 / s3, 1 / s3, -1 / s3, -1 / s3], [-0.5, 0.5, 0., 0.]])
    # inter: slab 0 = rows (r_00, r_01) pooled over masks (M_0, M_1); slab 1 = rows (r_10, r_11), same masks.
    # slab 0 values [1,0,0,0 | 0,0]: mu 1/6, sigma sqrt(5)/6; slab 1 values [0,1,0,0 | -1,0]: mu 0, sigma sqrt(1/3)
    sa, sb = math.sqrt(5) / 6, math.sqrt(1 / 3)
    slab0 = [[(5 / 6) / sa, (-1 / 6) / sa, (-1 / 6) / sa, (-1 / 6) / sa], [(-1 / 6) / sa, (-1 / 6) / sa, 0, 0]]
    slab1 = [[0., 1 / sb, 0., 0.], [-1 / sb, 0., 0., 0.]]
    expected = (torch.tensor(slab0) + torch.tensor(slab1)) / 2
    close(reshape_defect_token_advantages(r, SCORES, MASK, "inter"), expected)


def test_truncate_relevance_like_reference():
    # below 1 the bf16 grid step is 2^-8: p rounds to 1.0 iff p >= 1 - 2^-9 (the tie rounds to even = 1.0)
    p = torch.tensor([0.0, 0.5, 0.99, 1 - 2 ** -9 - 1e-6, 1 - 2 ** -9, 0.999, 1.0])
    out = truncate_relevance_like_reference(p)
    assert out.dtype == torch.float32
    close(out, [0., 0., 0., 0., 1., 1., 1.], atol=0)
    # in logits: the threshold is ln(511) = 6.236
    logits = torch.tensor([-3.0, 0.0, 5.0, 6.2, 6.23, 6.25, 6.3, 12.0])
    close(truncate_relevance_like_reference(torch.sigmoid(logits)), [0., 0., 0., 0., 0., 1., 1., 1.], atol=0)
    close(truncate_relevance_like_reference(torch.sigmoid(logits).bfloat16()), [0., 0., 0., 0., 0., 1., 1., 1.],
          atol=0)
    assert math.isclose(math.log(511), 6.2364, abs_tol=1e-4)


def test_reference_quirks_chain_truncation_and_defect():
    gen = torch.Generator().manual_seed(3)
    scores, relevance, mask = random_batch(gen, P=4, G=4, K=3, T=12)
    relevance = torch.where(relevance > 0, torch.sigmoid(torch.randn(relevance.shape, generator=gen) * 4 + 6), 0.)
    A, parts = rtt_advantages(scores, relevance, mask, reference_quirks=True)
    w = truncate_relevance_like_reference(relevance)
    assert torch.equal(parts["relevance"], w) and parts["normed"] is None
    tok = reshape_defect_token_advantages(token_rewards(scores, w), scores, mask, "intra")
    close(A, combine_advantages(grpo_advantages(response_rewards(scores, "aon")), tok, mask), atol=1e-6)


def released_token_only_adv_rubrics_mean(scores, probs, response_ids, response_mask, special_ids):
    """A line-by-line rendering of the released pipeline for one prompt (docs/method.md, "the released code"),
    written independently of advantages.py: the discriminator worker cuts each response at its first special token
    and scatters bf16 weights into a zero int64 buffer; the token rewards s*w are reshaped (not permuted) to
    [K, G, T]; each row is normalised over the mask of the response its position names; the mean over rubrics."""
    G, K, T = probs.shape
    weights = torch.zeros(G, K, T, dtype=torch.int64)
    for g in range(G):
        ids = response_ids[g].tolist()
        cut = next((t for t, i in enumerate(ids) if i in special_ids), T)
        weights[g, :, :cut] = probs[g, :, :cut].to(torch.bfloat16).to(torch.int64)
    rewards = scores[:, :, None].to(torch.float32) * weights                 # [G, K, T]
    rewards = rewards * response_mask[:, None, :]                            # 0 on padding
    wrong = rewards.reshape(K, G, T)
    out = torch.zeros(K, G, T)
    for k in range(K):
        for g in range(G):
            m = response_mask[g].float()
            row = wrong[k, g]
            mu = (row * m).sum() / m.sum()
            sd = (((row - mu) * m) ** 2).sum().div(m.sum()).sqrt()
            out[k, g] = (row - mu) / (sd + 1e-6) * m
    return out.mean(0)                                                       # [G, T]


def test_reference_quirks_eos_relevance_is_zero_like_the_released_code():
    # G = 2, K = 1, six tokens, the last one EOS (id 2); the constraint is rated 0.9995 on every token; s = [+1, -1]
    ids = torch.tensor([[5, 6, 7, 8, 9, 2], [5, 6, 7, 8, 9, 2]])
    mask = torch.ones(2, 6)
    probs = torch.full((2, 1, 6), 0.9995)
    scores = torch.tensor([[1], [-1]])
    stop = advantages.stop_token_mask(ids, mask, [2])
    A, parts = rtt_advantages(scores, probs, mask, reference_quirks=True, stop_mask=stop)
    port = released_token_only_adv_rubrics_mean(scores, probs, ids, mask, [2])
    close(parts["token_adv"], port, atol=1e-5)
    r = math.sqrt(1 / 5)                                                     # (1 - 5/6) / sqrt(5/36) = 0.447
    close(parts["token_adv"], [[r] * 5 + [-math.sqrt(5)], [-r] * 5 + [math.sqrt(5)]], atol=1e-4)
    # the intended path: the same row is flat (every token relevant), so no token advantage at all
    _, ours = rtt_advantages(scores, probs, mask, stop_mask=stop)
    close(ours["token_adv"], torch.zeros(2, 6), atol=0)
    # a response cut off at the cap has no EOS: nothing to zero, the row stays flat
    cut = advantages.stop_token_mask(torch.tensor([[5, 6, 7, 8, 9, 10]] * 2), mask, [2])
    close(rtt_advantages(scores, probs, mask, reference_quirks=True, stop_mask=cut)[1]["token_adv"],
          torch.zeros(2, 6), atol=0)


def test_reference_quirks_port_matches_on_a_random_batch():
    gen = torch.Generator().manual_seed(5)
    G, K, T = 4, 3, 10
    probs = torch.sigmoid(torch.randn(G, K, T, generator=gen) * 4 + 6)
    scores = torch.where(torch.rand(G, K, generator=gen) < 0.5, 1, -1)
    lengths = [10, 7, 10, 4]
    mask = torch.tensor([[1.] * n + [0.] * (T - n) for n in lengths])
    ids = torch.randint(3, 50, (G, T), generator=gen)
    ids[1, 6] = 2                                                             # responses 1 and 3 ended with EOS
    ids[3, 3] = 2
    stop = advantages.stop_token_mask(ids, mask, [2])
    _, parts = rtt_advantages(scores, probs, mask, reference_quirks=True, stop_mask=stop)
    close(parts["token_adv"], released_token_only_adv_rubrics_mean(scores, probs, ids, mask, [2]), atol=1e-5)


def test_eos_excluded_gets_no_token_advantage_and_leaves_the_others_alone():
    ids = torch.tensor([[5, 6, 7, 2]])
    mask = torch.ones(1, 4)
    w = torch.tensor([[[1., 0., 0., 1.]]])                                   # EOS rated relevant
    stop = advantages.stop_token_mask(ids, mask, [2])
    A, parts = rtt_advantages(torch.tensor([[-1]]), w, mask, stop_mask=stop, eos="exclude")
    # the first three tokens normalised among themselves: [-1, 0, 0] -> [-1.4142, 0.7071, 0.7071]; EOS 0
    close(parts["token_adv"], [[-1.4142, 0.7071, 0.7071, 0.0]], atol=1e-4)
    close(A, parts["token_adv"] * 0.5, atol=1e-6)                           # G = 1: A_res = 0
    _, kept = rtt_advantages(torch.tensor([[-1]]), w, mask, stop_mask=stop)  # ours: EOS blamed like any token
    assert kept["token_adv"][0, 3] < 0


def test_reference_quirks_default_to_no_std_floor():
    n = 20_000                                                               # one relevant token: sigma ~ 0.0071
    w = torch.zeros(1, 1, n)
    w[0, 0, 0] = 1.0
    mask = torch.ones(1, n)
    quirks = rtt_advantages(torch.tensor([[1]]), w, mask, reference_quirks=True)[1]["token_adv"]
    floor0 = rtt_advantages(torch.tensor([[1]]), w, mask, reference_quirks=True, std_floor=0)[1]["token_adv"]
    ours = rtt_advantages(torch.tensor([[1]]), w, mask)[1]["token_adv"]
    close(quirks, floor0, atol=0)
    assert quirks[0, 0] == pytest.approx(math.sqrt(n - 1), rel=1e-3)        # the formula as printed
    assert ours[0, 0] == pytest.approx(math.sqrt(n - 1) * (1 / math.sqrt(n)) / 0.01, rel=1e-3)   # scaled by sigma/floor


# ----------------------------------------------------------------------------------------------------------------
# properties


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 64), seed=st.integers(0, 2 ** 31 - 1), scale=st.floats(0.5, 4.0), binary=st.booleans())
def test_intra_sum_zero_square_sum_n_and_only_sign_matters(n, seed, scale, binary):
    gen = torch.Generator().manual_seed(seed)
    T = n + 3                                                                # 3 padded tokens
    hit = torch.rand(1, 1, n, generator=gen) < 0.4
    w = hit.double() if binary else hit * torch.rand(1, 1, n, generator=gen, dtype=torch.float64)
    w = torch.cat([w, torch.zeros(1, 1, 3, dtype=torch.float64)], -1)       # [G=1, K=1, T]
    mask = (torch.arange(T) < n).unsqueeze(0)                                # [1, T]
    for s in (1, -1):   # the paper's formula as printed (std_floor=0): the floor has its own test below
        out = intra_sample_token_norm(token_rewards(torch.tensor([[s]]), w), mask, std_floor=0)[0, 0]   # [T]
        sigma = w[0, 0, :n].std(correction=0).item()
        assert out[n:].abs().max() == 0
        assert abs(out.sum().item()) < 1e-9 * n
        if sigma == 0:
            assert out.abs().max() == 0
        else:
            shrink = (sigma / (sigma + EPS)) ** 2                            # eps makes squares sum slightly < n
            assert math.isclose((out ** 2).sum().item(), n * shrink, rel_tol=1e-9)
            if sigma > 1e-2:
                assert math.isclose((out ** 2).sum().item(), n, rel_tol=1e-3)
        # only the sign of s matters: scaling s by a positive factor changes nothing (up to eps)
        scaled = intra_sample_token_norm(token_rewards(torch.tensor([[s * scale]]), w), mask, std_floor=0)[0, 0]
        assert torch.allclose(scaled, out, atol=1e-3)
        if s == 1:
            positive = out
        else:
            assert torch.allclose(out, -positive, atol=1e-12)               # and flipping it flips the signal


def test_std_floor_silences_near_constant_rows_and_leaves_real_structure():
    # A "whole response" constraint as the trained discriminator rates it: 0.9993 on every token, +- 1e-4 of noise.
    gen = torch.Generator().manual_seed(8)
    n = 64
    w = (0.9993 + 1e-4 * torch.randn(1, 1, n, generator=gen, dtype=torch.float64)).clamp(max=1.0)   # [G=1, K=1, T]
    mask = torch.ones(1, n)
    for s in (1, -1):
        r = token_rewards(torch.tensor([[s]]), w)
        literal = intra_sample_token_norm(r, mask, std_floor=0)[0, 0]       # the formula as printed
        floored = intra_sample_token_norm(r, mask)[0, 0]                    # default floor 0.01
        assert math.isclose((literal ** 2).sum().item(), n, rel_tol=0.05)   # noise blown up to unit variance
        assert floored.abs().max() < 0.05                                   # ... or kept as small as it is
        assert abs(floored.sum().item()) < 1e-9                             # still zero-sum per row
    assert advantages.TOKEN_STD_FLOOR == 0.01
    # the same near-constant rows pooled over a group (inter): the floor applies there too
    wg = (0.9993 + 1e-4 * torch.randn(4, 1, n, generator=gen, dtype=torch.float64)).clamp(max=1.0)
    assert inter_sample_token_norm(wg, torch.ones(4, n)).abs().max() < 0.05
    assert inter_sample_token_norm(wg, torch.ones(4, n), std_floor=0).abs().max() > 1.0
    # a row with one relevant token among 4096 (the paper's response length) has sigma 0.0156: not touched
    one_hot = torch.zeros(1, 1, 4096, dtype=torch.float64)
    one_hot[..., 17] = 1.0
    close(intra_sample_token_norm(one_hot, torch.ones(1, 4096)),
          intra_sample_token_norm(one_hot, torch.ones(1, 4096), std_floor=0), atol=0)
    # end to end: a prompt whose two constraints are both "whole response" rows gets (almost) only the GRPO part,
    # while without the floor its token advantages are as large as the response advantages
    scores = torch.tensor([[1, 1], [1, -1], [-1, -1], [1, 1]])             # [G=4, K=2]
    rel = (0.9993 + 1e-4 * torch.randn(4, 2, n, generator=gen)).clamp(max=1.0)
    A, parts = rtt_advantages(scores, rel, torch.ones(4, n))
    A0, parts0 = rtt_advantages(scores, rel, torch.ones(4, n), std_floor=0)
    assert parts["token_adv"].abs().max() < 0.05
    assert parts0["token_adv"].abs().mean() > 0.3
    close(A, parts["response_adv"][:, None].expand(4, n), atol=0.03)
    # the reshape-defect reproduction takes the same floor by default: with K = 1 it still equals the intended path
    s1, r1 = scores[:, :1], token_rewards(scores[:, :1], rel[:, :1])
    close(reshape_defect_token_advantages(r1, s1, torch.ones(4, n)),
          token_advantages(intra_sample_token_norm(r1, torch.ones(4, n)), s1), atol=1e-6)


def test_intra_is_independent_of_length_tiling():
    # Repeating a response's reward pattern (twice as long, same shares) leaves every token's value unchanged.
    gen = torch.Generator().manual_seed(4)
    scores, relevance, _ = random_batch(gen, P=1, G=4, K=3, T=9, min_len=9)
    r = token_rewards(scores, relevance)[0]                                  # [G, K, 9]
    once = intra_sample_token_norm(r, torch.ones(4, 9))
    twice = intra_sample_token_norm(torch.cat([r, r], -1), torch.ones(4, 18))
    close(twice, torch.cat([once, once], -1), atol=1e-5)
    # the inter-sample one also passes this test (all responses tiled together); the bias needs unequal lengths


def test_padded_slots_and_tokens_never_change_real_values():
    gen = torch.Generator().manual_seed(5)
    for trial in range(6):
        P, G, K, T = 3, 4, 3, 10
        scores, relevance, mask = random_batch(gen, P, G, K, T, binary=trial % 2 == 0)
        extra_K, extra_T = 2, 5
        slots = torch.randperm(K + extra_K, generator=gen)[:K].sort().values             # where the real slots go
        big_scores = torch.zeros(P, G, K + extra_K, dtype=torch.int8)
        big_scores[:, :, slots] = scores
        junk = torch.rand(P, G, K + extra_K, T + extra_T, generator=gen)                # junk everywhere padded
        big_rel = junk.clone()
        big_rel[:, :, slots, :T] = torch.where(mask.unsqueeze(2) > 0, relevance, junk[:, :, slots, :T])
        big_mask = torch.zeros(P, G, T + extra_T, dtype=torch.int64)
        big_mask[..., :T] = mask
        for union in ("aon", "csr"):
            for norm in ("intra", "inter"):
                for quirks in (False, True):
                    kw = dict(union=union, norm=norm, reference_quirks=quirks)
                    A, _ = rtt_advantages(scores, relevance, mask, **kw)
                    big_A, _ = rtt_advantages(big_scores, big_rel, big_mask, **kw)
                    close(big_A[..., :T], A, atol=1e-6)
                    assert torch.equal(big_A[..., T:], torch.zeros(P, G, extra_T))
                    assert torch.equal(big_A * (big_mask == 0), torch.zeros_like(big_A))


def test_aon_tie_still_gets_token_signal():
    # every response fails some constraint: AON rewards all 0, A_res = 0, but relevance differs -> A != 0
    scores = torch.tensor([[1, -1], [-1, 1], [-1, -1]])                     # [G=3, K=2]
    relevance = torch.tensor([[[1., 1., 0., 0., 0.], [0., 0., 0., 1., 0.]],
                              [[0., 0., 1., 0., 0.], [1., 0., 0., 0., 0.]],
                              [[0., 1., 0., 0., 0.], [0., 0., 0., 0., 1.]]])
    mask = torch.ones(3, 5)
    A, parts = rtt_advantages(scores, relevance, mask)
    assert torch.equal(parts["response_adv"], torch.zeros(3))
    assert (A.abs().sum(-1) > 0.5).all()
    close(A, 0.5 * parts["token_adv"], atol=0)
    # response 0, token 3 broke c_1: most negative; tokens 0-1 met c_0: positive
    assert A[0].argmin() == 3 and (A[0, :2] > 0).all()
    # the same holds for a group where every response passes
    A, parts = rtt_advantages(scores.abs(), relevance, mask)
    assert torch.equal(parts["response_adv"], torch.zeros(3)) and (A.abs().sum(-1) > 0.5).all()


@pytest.mark.parametrize("share_met, sign", [(0.75, -1), (0.25, +1)])
def test_inter_sample_length_bias_and_intra_has_none(share_met, sign):
    # One constraint, 8 responses of increasing length, each with the same 2 relevant tokens. Inter-sample: every
    # irrelevant token gets -mu/sigma, so summed advantage moves with length (down when most responses meet the
    # constraint, up when most fail it). Intra-sample: sums are 0 at every length.
    lengths = [4, 6, 8, 12, 16, 24, 32, 48]
    G, T = len(lengths), max(lengths)
    mask = (torch.arange(T) < torch.tensor(lengths).unsqueeze(-1)).float()             # [G, T]
    relevance = torch.zeros(G, 1, T)
    relevance[:, :, :2] = 1.0
    n_met = int(share_met * G)
    # spread met/failed over short and long responses so that length is not confounded with the verdict
    met = [i % (G // n_met) == 0 for i in range(G)] if n_met <= G // 2 else [i % (G // (G - n_met)) != 0
                                                                              for i in range(G)]
    scores = torch.tensor([[1] if m else [-1] for m in met])                           # [G, 1]
    r = token_rewards(scores, relevance)
    inter = token_advantages(inter_sample_token_norm(r, mask), scores).sum(-1)           # [G]
    intra = token_advantages(intra_sample_token_norm(r, mask), scores).sum(-1)           # [G]
    for verdict in (True, False):
        idx = [i for i in range(G) if met[i] == verdict]
        sums = inter[idx]
        diffs = sign * (sums[1:] - sums[:-1])                                           # longer -> sign * larger
        assert (diffs > 0.1).all(), (verdict, sums)
    assert intra.abs().max() < 1e-5
    # the irrelevant tokens' value is exactly -mu/sigma
    mu = (r[:, 0] * mask).sum() / mask.sum()
    sigma = (((r[:, 0] - mu) ** 2 * mask).sum() / mask.sum()).sqrt()
    normed = inter_sample_token_norm(r, mask)
    close(normed[-1, 0, 2:lengths[-1]], (-mu / (sigma + EPS)).expand(lengths[-1] - 2))


def test_reshape_defect_differs_for_k_above_1_and_equals_for_k_1():
    gen = torch.Generator().manual_seed(6)
    for trial in range(20):
        G, K = 2 + trial % 4, 2 + trial % 3
        scores, relevance, mask = random_batch(gen, P=1, G=G, K=K, T=8, min_len=2)
        scores[:] = torch.where(torch.rand(1, G, K, generator=gen) < 0.5, 1, -1)                 # all K real
        relevance = torch.rand(1, G, K, 8, generator=gen) * mask.unsqueeze(2)                      # dense
        r = token_rewards(scores, relevance)
        for norm, f in (("intra", intra_sample_token_norm), ("inter", inter_sample_token_norm)):
            correct = token_advantages(f(r, mask), scores)
            defect = reshape_defect_token_advantages(r, scores, mask, norm)
            assert (defect - correct).abs().max() > 1e-3, (trial, norm)
            # K = 1 (here: the first slot only) is unaffected, with or without padded slots behind it
            one = scores.clone()
            one[..., 1:] = 0
            close(reshape_defect_token_advantages(r, one, mask, norm), token_advantages(f(r, mask), one), atol=1e-6)
            close(reshape_defect_token_advantages(r[:, :, :1], scores[:, :, :1], mask, norm),
                  token_advantages(f(r[:, :, :1], mask), scores[:, :, :1]), atol=1e-6)


def test_random_relevance_keeps_counts_values_and_padding():
    gen = torch.Generator().manual_seed(7)
    _, relevance, mask = random_batch(gen, P=3, G=4, K=5, T=16)
    mask[0, 0, 3] = 0                                                        # a hole inside a response
    relevance = relevance * mask.unsqueeze(2)
    out = random_relevance(relevance, mask, torch.Generator().manual_seed(0))
    assert out.shape == relevance.shape and out.dtype == relevance.dtype
    assert torch.equal((out > 0).sum(-1), (relevance > 0).sum(-1))                            # counts kept
    assert torch.equal(out.sort(-1).values, relevance.sort(-1).values)                        # values kept
    assert torch.equal(out * (mask.unsqueeze(2) == 0), torch.zeros_like(out))                 # padding stays 0
    assert not torch.equal(out, relevance)                                                    # positions move
    again = random_relevance(relevance, mask, torch.Generator().manual_seed(0))
    other = random_relevance(relevance, mask, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)
    # junk on padded tokens is dropped, not moved onto real ones
    junk = relevance + (mask.unsqueeze(2) == 0) * 0.9
    assert torch.equal(random_relevance(junk, mask, torch.Generator().manual_seed(0)), out)


def test_random_relevance_places_uniformly():
    n_rows, T, n = 4000, 12, 10                                              # 10 real tokens, 1 relevant
    relevance = torch.zeros(n_rows, 1, T)
    relevance[:, :, 0] = 1.0
    mask = (torch.arange(T) < n).expand(n_rows, T)
    out = random_relevance(relevance, mask, torch.Generator().manual_seed(8))
    counts = out[:, 0].sum(0)                                                # [T] expect 400 each on real tokens
    assert counts[n:].sum() == 0
    assert ((counts[:n] - n_rows / n).abs() < 80).all(), counts              # 4 binomial std devs


def test_uniform_relevance_reduces_intra_rtt_to_grpo():
    mask = torch.tensor([[[1, 1, 0], [1, 0, 0]]])                            # [P=1, G=2, T=3]
    w = uniform_relevance(mask, K=2)
    assert w.dtype == torch.float32
    close(w, [[[[1., 1., 0.], [1., 1., 0.]], [[1., 0., 0.], [1., 0., 0.]]]], atol=0)
    gen = torch.Generator().manual_seed(9)
    scores, _, mask = random_batch(gen, P=5, G=4, K=3, T=7)
    A, parts = rtt_advantages(scores, uniform_relevance(mask, K=3), mask)
    assert torch.equal(parts["token_adv"], torch.zeros_like(parts["token_adv"]))
    assert torch.equal(A, parts["response_adv"].unsqueeze(-1) * mask)
    A_inter, parts = rtt_advantages(scores, uniform_relevance(mask, K=3), mask, norm="inter")
    assert parts["token_adv"].abs().max() > 0.1


def test_batch_of_groups_equals_loop_over_groups():
    gen = torch.Generator().manual_seed(10)
    scores, relevance, mask = random_batch(gen, P=5, G=4, K=4, T=9)
    r = token_rewards(scores, relevance)
    batched = {
        "aon": response_rewards(scores, "aon"),
        "csr": response_rewards(scores, "csr"),
        "grpo": grpo_advantages(response_rewards(scores, "csr")),
        "r": r,
        "intra": intra_sample_token_norm(r, mask),
        "inter": inter_sample_token_norm(r, mask),
        "tok": token_advantages(inter_sample_token_norm(r, mask), scores),
        "comb": combine_advantages(grpo_advantages(response_rewards(scores, "aon")), r.mean(-2), mask, "mix", 0.3),
        "defect_intra": reshape_defect_token_advantages(r, scores, mask, "intra"),
        "defect_inter": reshape_defect_token_advantages(r, scores, mask, "inter"),
        "rtt": rtt_advantages(scores, relevance, mask, union="csr", norm="inter")[0],
        "uniform": uniform_relevance(mask, 4),
    }
    for p in range(5):
        s, w, m = scores[p], relevance[p], mask[p]
        rp = token_rewards(s, w)
        looped = {
            "aon": response_rewards(s, "aon"),
            "csr": response_rewards(s, "csr"),
            "grpo": grpo_advantages(response_rewards(s, "csr")),
            "r": rp,
            "intra": intra_sample_token_norm(rp, m),
            "inter": inter_sample_token_norm(rp, m),
            "tok": token_advantages(inter_sample_token_norm(rp, m), s),
            "comb": combine_advantages(grpo_advantages(response_rewards(s, "aon")), rp.mean(-2), m, "mix", 0.3),
            "defect_intra": reshape_defect_token_advantages(rp, s, m, "intra"),
            "defect_inter": reshape_defect_token_advantages(rp, s, m, "inter"),
            "rtt": rtt_advantages(s, w, m, union="csr", norm="inter")[0],
            "uniform": uniform_relevance(m, 4),
        }
        for name, value in looped.items():
            close(batched[name][p], value, atol=1e-6)
    # two levels of leading batch work too
    close(rtt_advantages(scores.view(5, 1, 4, 4), relevance.view(5, 1, 4, 4, 9), mask.view(5, 1, 4, 9))[0],
          rtt_advantages(scores, relevance, mask)[0].view(5, 1, 4, 9), atol=1e-6)


def test_dtypes_bf16_int_bool_inputs_compute_in_float32():
    gen = torch.Generator().manual_seed(11)
    scores, relevance, mask = random_batch(gen, P=4, G=4, K=3, T=10)
    rel_bf16 = relevance.bfloat16()
    for quirks in (False, True):
        for norm in ("intra", "inter"):
            A, parts = rtt_advantages(scores.to(torch.int8), rel_bf16, mask.bool(), norm=norm,
                                      reference_quirks=quirks)
            ref, _ = rtt_advantages(scores.float(), rel_bf16.float(), mask.float(), norm=norm,
                                    reference_quirks=quirks)
            assert A.dtype == torch.float32 and all(
                v.dtype == torch.float32 for v in parts.values() if v is not None)
            assert torch.equal(A, ref)
            A64, parts64 = rtt_advantages(scores.long(), rel_bf16.double(), mask, norm=norm,
                                          reference_quirks=quirks)
            assert A64.dtype == torch.float64 and parts64["token_adv"].dtype == torch.float64
            close(A64.float(), A, atol=1e-5)
    # integer relevance (a {0, 1} label tensor) and fp16 also work
    A_int, _ = rtt_advantages(scores, (relevance > 0).long(), mask)
    A_flt, _ = rtt_advantages(scores, (relevance > 0).float(), mask)
    assert torch.equal(A_int, A_flt)
    A16, _ = rtt_advantages(scores, relevance.half(), mask)
    assert A16.dtype == torch.float32
    assert grpo_advantages(torch.tensor([1, 0, 0, 0])).dtype == torch.float32


def test_no_nan_on_degenerate_groups():
    G, K, T = 4, 3, 6
    cases = {
        "all relevance 0": (torch.ones(G, K), torch.zeros(G, K, T), torch.ones(G, T)),
        "all relevance 1": (-torch.ones(G, K), torch.ones(G, K, T), torch.ones(G, T)),
        "all empty": (torch.ones(G, K), torch.rand(G, K, T), torch.zeros(G, T)),
        "no constraint": (torch.zeros(G, K), torch.rand(G, K, T), torch.ones(G, T)),
        "one token each": (torch.tensor([[1., -1, 1]] * G), torch.rand(G, K, T), torch.eye(G, T)),
    }
    for name, (s, w, m) in cases.items():
        for union in ("aon", "csr"):
            for norm in ("intra", "inter"):
                for quirks in (False, True):
                    A, _ = rtt_advantages(s, w, m, union=union, norm=norm, reference_quirks=quirks)
                    assert torch.isfinite(A).all(), (name, union, norm, quirks)
    # one token per response: every intra row is constant, so only the GRPO part remains
    A, parts = rtt_advantages(*cases["one token each"][:2], cases["one token each"][2])
    assert torch.equal(parts["token_adv"], torch.zeros(G, T))
    # an empty response gets 0 everywhere, and does not disturb the others' intra-sample values
    s, w, m = random_batch(torch.Generator().manual_seed(12), P=1, G=4, K=3, T=6)
    m_empty = m.clone()
    m_empty[0, 0] = 0
    A, parts = rtt_advantages(s, w * m_empty.unsqueeze(2), m_empty)
    assert torch.equal(A[0, 0], torch.zeros(6))
    close(parts["token_adv"][0, 1:], rtt_advantages(s, w, m)[1]["token_adv"][0, 1:], atol=1e-6)


def test_credit_relevant_zeroes_the_push_on_irrelevant_tokens_and_keeps_the_rest():
    """credit="relevant" (ours) against the paper's "all": a failed constraint no longer pushes its irrelevant tokens
    up; the relevant tokens and A_res are unchanged."""
    scores = torch.tensor([[[-1, 1], [1, 1]]])                          # [P=1, G=2, K=2]
    relevance = torch.tensor([[[[1., 0., 0., 0.], [0., 0., 1., 0.]],
                               [[0., 1., 0., 0.], [0., 0., 0., 1.]]]])    # [1, 2, 2, 4]
    mask = torch.ones(1, 2, 4)
    A_all, parts_all = advantages.rtt_advantages(scores, relevance, mask)
    A_rel, parts_rel = advantages.rtt_advantages(scores, relevance, mask, credit="relevant")
    assert torch.equal(parts_all["response_adv"], parts_rel["response_adv"])
    # response 0, token 1 matters to neither constraint: the failed one pushed it up, the met one down; now 0
    assert parts_all["normed"][0, 0, 0, 1] > 0 and parts_all["normed"][0, 0, 1, 1] < 0
    assert parts_rel["token_adv"][0, 0, 1] == 0 and parts_rel["token_adv"][0, 0, 3] == 0
    # relevant tokens keep the paper's value, averaged over the K = 2 constraints
    assert parts_rel["token_adv"][0, 0, 0] == pytest.approx(float(parts_all["normed"][0, 0, 0, 0]) / 2)
    assert parts_rel["token_adv"][0, 0, 2] == pytest.approx(float(parts_all["normed"][0, 0, 1, 2]) / 2)
    assert not torch.equal(A_all, A_rel)
    with pytest.raises(ValueError, match="credit"):
        advantages.rtt_advantages(scores, relevance, mask, credit="relevant", reference_quirks=True)
    # credit=None is train.py's default: relevant tokens only, or every token under the reference quirks
    assert torch.equal(advantages.rtt_advantages(scores, relevance, mask, credit=None)[0], A_rel)
    assert torch.equal(advantages.rtt_advantages(scores, relevance, mask, credit=None, reference_quirks=True)[0],
                       advantages.rtt_advantages(scores, relevance, mask, credit="all", reference_quirks=True)[0])
