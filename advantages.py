"""
RTT advantages: from judge verdicts and token relevance to one advantage per response token.

This file is the math of RTT (spec §3, §5, §6 of `docs/method.md`), as pure functions on tensors: no model,
no I/O, nothing to configure. One group is one prompt's G responses; every function also accepts a leading batch of
groups (`[P, G, ...]`) and never mixes statistics across groups.

    step                                   equation                                   function
    1. response reward (spec §3)           R_i = 1[all s_ik = +1]  (AON)  or  CSR      response_rewards
    2. response advantage (GRPO, §3)       A_res_i = (R_i - mean R) / (std R + eps)    grpo_advantages
    3. token reward cube (§2)              r_ikt = s_ik * w_ikt                         token_rewards
    4. token normalisation (§5, RTT)       r~_ikt = (r_ikt - mu_ik) / (sigma_ik + eps) intra_sample_token_norm
       ... or the baseline (§5, app. D)    r^_ikt = (r_ikt - mu_k) / (sigma_k + eps)   inter_sample_token_norm
       (sigma floored at TOKEN_STD_FLOOR, see below)
    5. token advantage (§5)                A_tok_it = mean over real k of r~_ikt        token_advantages
    6. RTT-GRPO advantage (§6)             A_it = (A_res_i + lambda * A_tok_it) * M_it  combine_advantages
    all six in one call                                                                rtt_advantages

Conventions (docs/method.md §2): scores `s [G, K]` are +1 met, -1 not met, 0 = padded/absent constraint slot; relevance
`w [G, K, T]` is in [0, 1]; `response_mask M [G, T]` is 1 on real response tokens (EOS included). Whatever the input
dtypes (bf16 relevance, int8 scores, bool masks) the math runs in float32, or float64 if a float64 tensor comes in.
Population std (masked) for the token normalisations, unbiased std for GRPO, eps = 1e-6. A row whose values are all
equal (sigma = 0: no relevant token, a padded slot, a tied group) gives exactly 0, never NaN, and so does an empty
response (mask all 0).

The std floor (ours, not in the paper). The token normalisations divide by max(sigma, TOKEN_STD_FLOOR) + eps, not by
sigma + eps. A trained discriminator rates a "whole response" constraint (no commas, all lowercase, 60 words)
0.9993 +- 0.0001 on every token: a row that is constant up to float noise. Divided by its own sigma ~ 1e-4, that
noise becomes token advantages of size 1, as large as real credit assignment, pointing wherever the discriminator's
last digits happen to point; 42 % of (response, constraint) rows of the embedded policy's own samples looked like
this (README, "One departure: the std floor"). The paper's stated behaviour, "a constant row gives 0", is what the
floor keeps: such a row now gives values of size sigma / 0.01 (0.01 at sigma = 1e-4, 0.1 at 1e-3) instead of 1. A
row with one relevant token among n has sigma ~ 1/sqrt(n), 0.016 at n = 4096, so at the paper's response length no
row with a clearly relevant token is touched. std_floor=0 gives the formula as printed, with eps only.

Running example used in every docstring: G = 2 responses, K = 2 constraints, T = 4 tokens.

    response 0 (4 tokens): meets c_0 (token 0 relevant), meets c_1 (tokens 2, 3 relevant)   s_0 = [+1, +1]
    response 1 (2 tokens): meets c_0 (token 1 relevant), fails c_1 (token 0 relevant)       s_1 = [+1, -1]

Reproducing the released code (spec §10). We implement the intended math; three functions reproduce the released
code's defects so that a notebook or `rtt_advantages(..., reference_quirks=True)` can show what they do:
`reshape_defect_token_advantages` (§10.1, reshape instead of transpose), `truncate_relevance_like_reference`
(§10.2, relevance cut to {0, 1}) and `zero_relevance_at` (§10.5, EOS never relevant, found by `stop_token_mask`). The ablation baselines `random_relevance` and `uniform_relevance` are here too.

Tests: `.venv/bin/pytest -q tests/test_advantages.py` (they also run every example below as a doctest).
"""
import math

import torch

TOKEN_STD_FLOOR = 0.01  # sigma floor of the token normalisations (see "The std floor" above); 0 = the paper's formula

# ----------------------------------------------------------------------------------------------------------------
# helpers


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (so bf16/fp16/int inputs are computed in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def masked_mean_std(r: torch.Tensor, mask: torch.Tensor, dims: tuple) -> tuple:
    """Mean and population std of r over `dims` where `mask` (bool, broadcasts against r) holds; keepdim shapes.

        masked_mean_std(tensor([[1., 3., 9.]]), tensor([[True, True, False]]), (-1,))  ->  ([[2.]], [[1.]])
    """
    mask = mask.expand_as(r)
    r = torch.where(mask, r, 0.0)
    n = mask.sum(dims, keepdim=True).clamp(min=1)                   # real tokens per statistic
    mu = r.sum(dims, keepdim=True) / n
    var = torch.where(mask, (r - mu) ** 2, 0.0).sum(dims, keepdim=True) / n   # population variance
    return mu, var.sqrt()


def _standardise(r: torch.Tensor, mask: torch.Tensor, dims: tuple, eps: float, std_floor: float = 0.0) -> torch.Tensor:
    """(r - mu) / (max(sigma, std_floor) + eps) with masked mean and population std over `dims`; 0 off the mask.

    `mask` is a bool tensor that broadcasts against `r`. Where all masked values along `dims` are equal (sigma = 0,
    including the empty case) the result is exactly 0: we test equality directly instead of relying on r - mu
    being exactly 0, which float rounding of mu does not guarantee (e.g. seven tokens of 0.3).
    """
    if r.numel() == 0:
        return torch.zeros_like(r)
    mask = mask.expand_as(r)
    r = torch.where(mask, r, 0.0)                                   # padded tokens carry nothing, whatever they hold
    mu, sigma = masked_mean_std(r, mask, dims)
    out = torch.where(mask, (r - mu) / (sigma.clamp(min=std_floor) + eps), 0.0)
    hi = r.masked_fill(~mask, float("-inf")).amax(dims, keepdim=True)
    lo = r.masked_fill(~mask, float("inf")).amin(dims, keepdim=True)
    constant = hi <= lo                                             # all equal, or no real token at all
    return torch.where(constant, 0.0, out)


# ----------------------------------------------------------------------------------------------------------------
# 1-2. response level: the GRPO part (spec §3)


def response_rewards(scores: torch.Tensor, mode: str = "aon") -> torch.Tensor:
    """Response reward R_i from the judge's per-constraint verdicts.

        AON (all-or-nothing, the paper's default):  R_i = 1[s_ik = +1 for every real constraint k]
        CSR (constraint satisfaction rate):         R_i = (# real k with s_ik = +1) / (# real k)

    Real constraints are the slots with s != 0; padded slots (s = 0) are ignored. A response with no real constraint
    scores 0 under both modes (its group then has std 0 and gets no response-level signal). The released code uses
    mean_k s_ik = 2 * CSR - 1 for CSR; after group normalisation the two are the same.

    Args:
        scores: [.., G, K] +1 met, -1 not met, 0 padded slot (any dtype).
        mode: "aon" or "csr".
    Returns:
        [.., G] float rewards, AON in {0, 1}, CSR in [0, 1].

    Example (the running example plus a third response and a padded third slot):
        >>> scores = torch.tensor([[ 1,  1, 0],     # met both real constraints
        ...                        [ 1, -1, 0],     # met one of two
        ...                        [-1, -1, 0]])    # met none
        >>> response_rewards(scores, "aon")
        tensor([1., 0., 0.])
        >>> response_rewards(scores, "csr")
        tensor([1.0000, 0.5000, 0.0000])
    """
    dtype = _float_dtype(scores)
    real = scores != 0                                              # [.., G, K]
    met = scores > 0                                                # [.., G, K]
    n_real = real.sum(-1)                                           # [.., G]
    n_met = met.sum(-1)                                             # [.., G]
    if mode == "aon":
        return ((n_met == n_real) & (n_real > 0)).to(dtype)         # [.., G]
    if mode == "csr":
        return n_met.to(dtype) / n_real.clamp(min=1).to(dtype)      # [.., G]
    raise ValueError(f"response reward mode must be 'aon' or 'csr', got {mode!r}")


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantage: each response's reward standardised within its group.

        A_res_i = (R_i - mean_j R_j) / (std_j R_j + eps),   std unbiased (divides by G - 1), as the released code

    A group whose rewards are all equal (e.g. every response fails AON) gets 0; so does a group of one response.
    Every token of response i later receives A_res_i.

    Args:
        rewards: [.., G] response rewards.
        eps: added to the std.
    Returns:
        [.., G] advantages.

    Example (running example: AON rewards [1, 0]; then a group of four with one success; then a tie):
        >>> grpo_advantages(torch.tensor([1., 0.]))
        tensor([ 0.7071, -0.7071])
        >>> grpo_advantages(torch.tensor([1., 0., 0., 0.]))
        tensor([ 1.5000, -0.5000, -0.5000, -0.5000])
        >>> grpo_advantages(torch.tensor([0., 0., 0., 0.]))     # AON tie: no response-level signal
        tensor([0., 0., 0., 0.])
    """
    R = rewards.to(_float_dtype(rewards))                           # [.., G]
    if R.shape[-1] < 2:
        return torch.zeros_like(R)                                  # unbiased std is undefined for one response
    mean = R.mean(-1, keepdim=True)                                 # [.., 1]
    std = R.std(-1, correction=1, keepdim=True)                     # [.., 1]
    A = (R - mean) / (std + eps)                                    # [.., G]
    tied = R.amax(-1, keepdim=True) <= R.amin(-1, keepdim=True)     # [.., 1] exact 0, whatever mean's rounding
    return torch.where(tied, 0.0, A)


# ----------------------------------------------------------------------------------------------------------------
# 3-5. token level: the reward cube and its normalisation (spec §2, §5)


def token_rewards(scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """The three-dimensional reward cube: each constraint's verdict spread over the tokens relevant to it.

        r_ikt = s_ik * w_ikt

    A met constraint (+1) rewards its relevant tokens, a failed one (-1) blames them; a padded slot (s = 0) gives 0.

    Args:
        scores: [.., G, K] +1 / -1 / 0.
        relevance: [.., G, K, T] discriminator relevance in [0, 1].
    Returns:
        [.., G, K, T] token rewards.

    Example (running example):
        >>> scores = torch.tensor([[1, 1], [1, -1]])                        # [G=2, K=2]
        >>> relevance = torch.tensor([[[1., 0., 0., 0.], [0., 0., 1., 1.]],
        ...                           [[0., 1., 0., 0.], [1., 0., 0., 0.]]])  # [G=2, K=2, T=4]
        >>> token_rewards(scores, relevance)
        tensor([[[ 1.,  0.,  0.,  0.],
                 [ 0.,  0.,  1.,  1.]],
        <BLANKLINE>
                [[ 0.,  1.,  0.,  0.],
                 [-1.,  0.,  0.,  0.]]])
    """
    dtype = _float_dtype(scores, relevance)
    s = scores.to(dtype).unsqueeze(-1)                              # [.., G, K, 1]
    w = relevance.to(dtype)                                         # [.., G, K, T]
    return s * w + 0.0                                              # [.., G, K, T]; + 0.0 turns -0.0 into 0.0


def intra_sample_token_norm(token_rewards: torch.Tensor, response_mask: torch.Tensor,
                            eps: float = 1e-6, std_floor: float = TOKEN_STD_FLOOR) -> torch.Tensor:
    """RTT's intra-sample token group normalisation: per response i AND constraint k, over that response's tokens.

        n_i    = sum_t M_it
        mu_ik  = sum_t M_it r_ikt / n_i
        sigma_ik = sqrt( sum_t M_it (r_ikt - mu_ik)^2 / n_i )
        r~_ikt = M_it (r_ikt - mu_ik) / (sigma_ik + eps)

    Per (i, k) the values sum to 0 over the response's tokens and their squares sum to n_i (when sigma > 0), for any
    length: no length bias. Only the sign of s matters. With a binary relevance covering a share m of the tokens,
    relevant tokens get +-sqrt((1-m)/m) and irrelevant ones -+sqrt(m/(1-m)). A constant row (sigma = 0: no relevant
    token, all tokens relevant, or a padded slot) gives 0, as does an empty response.

    Args:
        token_rewards: [.., G, K, T] the cube r.
        response_mask: [.., G, T] 1 on real response tokens.
        eps: added to sigma.
        std_floor: sigma is raised to at least this (module docstring); 0 = the formula above as printed.
    Returns:
        [.., G, K, T] normalised cube, 0 on padded tokens.

    Example (running example; response 1 has 2 real tokens):
        >>> r = torch.tensor([[[ 1., 0., 0., 0.], [0., 0., 1., 1.]],
        ...                   [[ 0., 1., 0., 0.], [-1., 0., 0., 0.]]])       # [G=2, K=2, T=4]
        >>> mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])               # [G=2, T=4]
        >>> intra_sample_token_norm(r, mask)
        tensor([[[ 1.7320, -0.5773, -0.5773, -0.5773],
                 [-1.0000, -1.0000,  1.0000,  1.0000]],
        <BLANKLINE>
                [[-1.0000,  1.0000,  0.0000,  0.0000],
                 [-1.0000,  1.0000,  0.0000,  0.0000]]])

        Row (0, 0): one relevant token of four (m = 1/4): sqrt(3) = 1.7320 and -sqrt(1/3) = -0.5773.
        Row (1, 1): token 0 caused the failure of c_1 (-1), token 1 is relatively credited (+1).

    Example (a "whole response" constraint, every token rated ~0.9993: the std floor keeps it ~0):
        >>> w = torch.tensor([[[0.9992, 0.9994, 0.9993, 0.9993]]])          # [G=1, K=1, T=4], sigma 7e-5
        >>> intra_sample_token_norm(w, torch.ones(1, 4))
        tensor([[[-0.0100,  0.0100,  0.0000,  0.0000]]])
        >>> intra_sample_token_norm(w, torch.ones(1, 4), std_floor=0)    # as printed in the paper: noise, size 1
        tensor([[[-1.3945,  1.3945,  0.0000,  0.0000]]])
    """
    dtype = _float_dtype(token_rewards)
    r = token_rewards.to(dtype)                                     # [.., G, K, T]
    M = (response_mask != 0).unsqueeze(-2)                          # [.., G, 1, T]
    return _standardise(r, M, (-1,), eps, std_floor)                # [.., G, K, T] stats over T, per (i, k)


def inter_sample_token_norm(token_rewards: torch.Tensor, response_mask: torch.Tensor,
                            eps: float = 1e-6, std_floor: float = TOKEN_STD_FLOOR) -> torch.Tensor:
    """The baseline inter-sample token group normalisation (paper appendix D): per constraint k, over all tokens of
    all G responses of the group.

        mu_k    = sum_i sum_t M_it r_ikt / sum_i n_i
        sigma_k = sqrt( sum_i sum_t M_it (r_ikt - mu_k)^2 / sum_i n_i )
        r^_ikt  = M_it (r_ikt - mu_k) / (sigma_k + eps)

    Length bias: every irrelevant token (w = 0) gets the same value -mu_k / sigma_k, so a response's summed token
    advantage grows with its length. In the example every token irrelevant to c_1 gets -0.2425, in either response,
    whether that response met c_1 or not.

    Args:
        token_rewards: [.., G, K, T] the cube r.
        response_mask: [.., G, T] 1 on real response tokens.
        eps: added to sigma.
        std_floor: sigma is raised to at least this (module docstring); 0 = the formula above as printed.
    Returns:
        [.., G, K, T] normalised cube, 0 on padded tokens.

    Example (running example; 6 real tokens per constraint: c_0 has mean 1/3, c_1 has mean 1/6):
        >>> r = torch.tensor([[[ 1., 0., 0., 0.], [0., 0., 1., 1.]],
        ...                   [[ 0., 1., 0., 0.], [-1., 0., 0., 0.]]])
        >>> mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
        >>> inter_sample_token_norm(r, mask)
        tensor([[[ 1.4142, -0.7071, -0.7071, -0.7071],
                 [-0.2425, -0.2425,  1.2127,  1.2127]],
        <BLANKLINE>
                [[-0.7071,  1.4142,  0.0000,  0.0000],
                 [-1.6977, -0.2425,  0.0000,  0.0000]]])
    """
    dtype = _float_dtype(token_rewards)
    r = token_rewards.to(dtype)                                     # [.., G, K, T]
    M = (response_mask != 0).unsqueeze(-2)                          # [.., G, 1, T]
    return _standardise(r, M, (-3, -1), eps, std_floor)             # [.., G, K, T] stats over (G, T), per k


def token_advantages(normed: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Token advantage: the normalised cube averaged over the prompt's real constraints.

        A_tok_it = sum_k 1[s_ik != 0] r~_ikt / sum_k 1[s_ik != 0]

    Padded slots (s = 0) are excluded from the mean, so adding padding never changes a real value. No constraint at
    all gives 0.

    Args:
        normed: [.., G, K, T] output of intra_sample_token_norm (or inter_sample_token_norm).
        scores: [.., G, K] +1 / -1 / 0, only used to know which slots are real.
    Returns:
        [.., G, T] token advantages.

    Example (running example, intra-sample; then with a padded third slot holding junk, which changes nothing):
        >>> normed = torch.tensor([[[ 1.7320, -0.5773, -0.5773, -0.5773], [-1., -1., 1., 1.]],
        ...                        [[-1., 1., 0., 0.], [-1., 1., 0., 0.]]])     # [G=2, K=2, T=4]
        >>> token_advantages(normed, torch.tensor([[1, 1], [1, -1]]))
        tensor([[ 0.3660, -0.7887,  0.2113,  0.2113],
                [-1.0000,  1.0000,  0.0000,  0.0000]])
        >>> padded = torch.cat([normed, torch.full((2, 1, 4), 9.)], dim=1)     # [G=2, K=3, T=4]
        >>> token_advantages(padded, torch.tensor([[1, 1, 0], [1, -1, 0]]))
        tensor([[ 0.3660, -0.7887,  0.2113,  0.2113],
                [-1.0000,  1.0000,  0.0000,  0.0000]])
    """
    dtype = _float_dtype(normed)
    real = (scores != 0).unsqueeze(-1)                              # [.., G, K, 1]
    total = torch.where(real, normed.to(dtype), 0.0).sum(-2)        # [.., G, T]
    n_real = real.sum(-2).clamp(min=1).to(dtype)                    # [.., G, 1]
    return total / n_real                                           # [.., G, T]


# ----------------------------------------------------------------------------------------------------------------
# 6. RTT-GRPO: combining the two levels (spec §6)


def combine_advantages(response_adv: torch.Tensor, token_adv: torch.Tensor, response_mask: torch.Tensor,
                       mode: str = "add", weight: float = 0.5) -> torch.Tensor:
    """Final per-token advantage: the response advantage broadcast over tokens plus the weighted token advantage.

        "add" (every released config, lambda = 0.5):  A_it = (A_res_i + lambda * A_tok_it) * M_it
        "mix":                                        A_it = ((1 - lambda) * A_res_i + lambda * A_tok_it) * M_it

    lambda is a constant. No whitening, no clipping, no accumulation over future tokens. The token term is non-zero
    even when A_res = 0 (a tied group): that is how RTT fights reward sparsity.

    Args:
        response_adv: [.., G] from grpo_advantages.
        token_adv: [.., G, T] from token_advantages.
        response_mask: [.., G, T] 1 on real response tokens.
        mode: "add" or "mix".
        weight: lambda.
    Returns:
        [.., G, T] advantages, 0 on padded tokens.

    Example (running example: A_res = [0.7071, -0.7071], intra-sample A_tok):
        >>> A_res = torch.tensor([0.70711, -0.70711])
        >>> A_tok = torch.tensor([[0.36602, -0.78868, 0.21132, 0.21132], [-1., 1., 0., 0.]])
        >>> mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
        >>> combine_advantages(A_res, A_tok, mask, "add", 0.5)
        tensor([[ 0.8901,  0.3128,  0.8128,  0.8128],
                [-1.2071, -0.2071,  0.0000,  0.0000]])

        Response 1 failed AON; its token 0 (which broke c_1) is blamed most, its token 1 (which met c_0) least.
    """
    dtype = _float_dtype(response_adv, token_adv)
    A_res = response_adv.to(dtype).unsqueeze(-1)                    # [.., G, 1]
    A_tok = token_adv.to(dtype)                                     # [.., G, T]
    if mode == "add":
        A = A_res + weight * A_tok                                  # [.., G, T]
    elif mode == "mix":
        A = (1.0 - weight) * A_res + weight * A_tok                 # [.., G, T]
    else:
        raise ValueError(f"combine mode must be 'add' or 'mix', got {mode!r}")
    return torch.where(response_mask != 0, A, 0.0)                  # [.., G, T]  A <- A * M


# ----------------------------------------------------------------------------------------------------------------
# reproductions of the released code's defects (spec §10.1, §10.2)


def reshape_defect_token_advantages(token_rewards: torch.Tensor, scores: torch.Tensor, response_mask: torch.Tensor,
                                    norm: str = "intra", eps: float = 1e-6,
                                    std_floor: float = TOKEN_STD_FLOOR) -> torch.Tensor:
    """Token advantage as the released code computes it: the cube is reshaped, not transposed (spec §10.1).

    The released code keeps one prompt's cube as [G, K, T] (response-major, K = that prompt's real constraints),
    wants it as [K, G, T], and writes `.reshape(K, G, T)` where `.permute(1, 0, 2)` was meant. Both token
    normalisations and the mean over rubrics then run on that [K, G, T] view, treating axis 1 as the response:

        flat row j = g * K + k holds r_gk                     (the [G, K, T] cube read as G*K rows)
        wrong[k', g'] = flat row k' * G + g'                   (reshape, intended: r_g'k')
        intra: stats of wrong[k', g'] over the tokens where M_g' = 1      (the mask of g', not of the row's owner)
        inter: stats of wrong[k', :] pooled over g' with masks M_g'
        A_tok_g't = mean_k' normalised wrong[k', g', t]

    So response g' averages rows that belong to *other* responses (and other constraints), measured with g''s
    length. Only K = 1 (and, trivially, G = 1) is unaffected: reshape and permute agree. What we reproduce,
    precisely: per prompt, the real slots (s != 0 in any response) are gathered in slot order, giving the [G, K, T]
    cube the released code builds from that prompt's own rubric list; token rewards on each response's padded
    tokens are zeroed first (the released buffers hold 0 there); the returned [G, T] is 0 outside M_g'. Everything
    else is our intended math.
    The loop over prompts is in Python because K differs between prompts (cheap: one iteration per prompt).

    Args:
        token_rewards: [.., G, K, T] the cube r.
        scores: [.., G, K] +1 / -1 / 0, to find the real slots.
        response_mask: [.., G, T].
        norm: "intra" or "inter".
        eps: added to sigma.
        std_floor: sigma floor, the same default as the intended path so that only the defect differs; 0 = the
            released code's formula.
    Returns:
        [.., G, T] token advantages with the defect; compare with token_advantages(<norm>(r, M), scores).

    Example (running example, intra; flat rows [r_00, r_01, r_10, r_11]): response 0 receives its own c_0 row and
    response 1's c_0 row, both measured over 4 tokens; response 1 receives response 0's c_1 row cut to response 1's
    2 tokens (all 0 there, so it contributes 0) and its own c_1 row:
        >>> r = torch.tensor([[[ 1., 0., 0., 0.], [0., 0., 1., 1.]],
        ...                   [[ 0., 1., 0., 0.], [-1., 0., 0., 0.]]])
        >>> scores = torch.tensor([[1, 1], [1, -1]])
        >>> mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
        >>> reshape_defect_token_advantages(r, scores, mask, "intra")
        tensor([[ 0.5773,  0.5773, -0.5773, -0.5773],
                [-0.5000,  0.5000,  0.0000,  0.0000]])

        The correct result is [[0.3660, -0.7887, 0.2113, 0.2113], [-1, 1, 0, 0]] (see token_advantages).
    """
    if norm not in ("intra", "inter"):
        raise ValueError(f"token normalisation must be 'intra' or 'inter', got {norm!r}")
    normalise = intra_sample_token_norm if norm == "intra" else inter_sample_token_norm
    dtype = _float_dtype(token_rewards)
    *lead, G, K, T = token_rewards.shape
    N = math.prod(lead)                                             # groups (prompts)
    M = (response_mask != 0).reshape(N, G, T)                       # [N, G, T]
    r = token_rewards.to(dtype).reshape(N, G, K, T)                 # [N, G, K, T]
    r = torch.where(M.unsqueeze(-2), r, 0.0)                        # [N, G, K, T] 0 on padded tokens, as released
    real_slots = (scores != 0).reshape(N, G, K).any(-2)             # [N, K] the prompt's real constraints
    out = torch.zeros(N, G, T, dtype=dtype, device=r.device)        # [N, G, T]
    for n in range(N):
        slots = real_slots[n].nonzero().squeeze(-1)                 # [Kp]
        Kp = slots.numel()
        if Kp == 0:
            continue
        cube = r[n][:, slots, :].contiguous()                       # [G, Kp, T] the released code's cube
        wrong = cube.reshape(Kp, G, T)                              # [Kp, G, T] THE DEFECT (meant: permute(1, 0, 2))
        as_gkt = wrong.transpose(0, 1)                              # [G, Kp, T] axis 0 = what the code calls response
        normed = normalise(as_gkt, M[n], eps, std_floor)            # [G, Kp, T] with the mask of axis-0 index g'
        out[n] = normed.mean(-2)                                    # [G, T] mean over "rubrics"
    return out.reshape(*lead, G, T)


def truncate_relevance_like_reference(relevance: torch.Tensor) -> torch.Tensor:
    """Relevance as the released code ends up using it: cut to {0, 1} (spec §10.2).

    The released discriminator computes p = sigmoid(logit) in bf16 and stores it in an int64 buffer, which
    truncates: only p that rounds to exactly 1.0 in bf16 survives. Below 1 the bf16 grid step is 2^-8, so p rounds
    to 1.0 iff p >= 1 - 2^-9 (ties round to even, i.e. to 1.0), i.e. logit >= ln(511) = 6.236. We reproduce that by
    rounding p to bf16 and keeping 1 where it equals 1.0:

        w_ref = 1[bf16(p) >= 1]

    (Rounding an fp32 p to bf16 is what a bf16 sigmoid returns up to the last bf16 bit; close enough to show the
    effect, which is that almost every token's relevance becomes 0.)

    Args:
        relevance: [..] p in [0, 1], any float dtype.
    Returns:
        [..] float32 (float64 if given float64) in {0, 1}.

    Example:
        >>> p = torch.sigmoid(torch.tensor([0.0, 3.0, 6.2, 6.3, 10.0]))
        >>> p
        tensor([0.5000, 0.9526, 0.9980, 0.9982, 1.0000])
        >>> truncate_relevance_like_reference(p)
        tensor([0., 0., 0., 1., 1.])
    """
    dtype = _float_dtype(relevance)
    p_bf16 = relevance.to(torch.bfloat16).to(dtype)                 # [..] rounded to the bf16 grid
    return (p_bf16 >= 1.0).to(dtype)                                # [..] int64 truncation: only 1.0 survives


def stop_token_mask(response_ids: torch.Tensor, response_mask: torch.Tensor, special_ids) -> torch.Tensor:
    """True on the real response tokens from the first special token on (EOS, and anything after it in the mask).

        stop[i, t] = M[i, t] and (some t' <= t has response_ids[i, t'] in special_ids)

    This is what the released discriminator worker never sees: it cuts its input at the first special token. For a
    response that ended with EOS it is the EOS position; for one cut off at the token cap it is empty.

    Example (special id 2 = EOS; response 1 was cut off, so it has none):
        >>> ids = torch.tensor([[5, 6, 2, 0], [5, 6, 7, 8]])
        >>> stop_token_mask(ids, torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]), [2])
        tensor([[False, False,  True, False],
                [False, False, False, False]])
    """
    special = torch.isin(response_ids, torch.as_tensor(list(special_ids), device=response_ids.device))   # [.., T]
    return (special.cumsum(-1) > 0) & (response_mask != 0)                                               # [.., T]


def zero_relevance_at(relevance: torch.Tensor, stop_mask: torch.Tensor) -> torch.Tensor:
    """Relevance 0 on the stop tokens, as the released code has it (spec §10.5): w[i, k, t] = 0 where stop[i, t].

    The released worker scatters the discriminator's weights into a zero buffer cut at the first special token,
    while the response mask still covers EOS. So EOS is never relevant, and on a row rated ~1 everywhere else the
    intra-sample normalisation puts about -sqrt(n - 1) * s on the stop token: a failed constraint rewards stopping,
    a met one punishes it.

    Example (one row rated 1 on five tokens, the sixth is EOS):
        >>> zero_relevance_at(torch.ones(1, 1, 6), torch.tensor([[0, 0, 0, 0, 0, 1]]).bool())
        tensor([[[1., 1., 1., 1., 1., 0.]]])
    """
    return torch.where(stop_mask.unsqueeze(-2), 0.0, relevance)    # [.., G, K, T]


# ----------------------------------------------------------------------------------------------------------------
# ablation baselines for the relevance (what if the discriminator knew nothing?)


def random_relevance(relevance: torch.Tensor, response_mask: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Relevance with each row's values shuffled over that response's real tokens.

        w_rand[i, k, :] = w[i, k, pi_ik]   pi_ik a uniformly random permutation of response i's real tokens

    Each (response, constraint) row keeps its number of relevant tokens and even its multiset of values; only the
    positions become random. Padded tokens get 0. Rows are shuffled independently. Ablation: is it the
    discriminator's placement that helps, or just a sparse token-level perturbation?

    Args:
        relevance: [.., G, K, T] in [0, 1].
        response_mask: [.., G, T].
        generator: torch.Generator for reproducibility (on any device; the result moves to relevance's device).
    Returns:
        [.., G, K, T] shuffled relevance, dtype of the input if floating, else float32.

    Example (the count of relevant tokens per row is kept; which tokens is random):
        >>> relevance = torch.tensor([[[1., 0., 0., 0.], [0., 0., 1., 1.]],
        ...                           [[0., 1., 0., 0.], [1., 0., 0., 0.]]])
        >>> mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
        >>> shuffled = random_relevance(relevance, mask, torch.Generator().manual_seed(0))
        >>> (shuffled > 0).sum(-1)
        tensor([[1, 2],
                [1, 1]])
        >>> shuffled[1, :, 2:]        # response 1's padded tokens stay 0
        tensor([[0., 0.],
                [0., 0.]])
    """
    w = relevance if relevance.is_floating_point() else relevance.to(torch.float32)
    M = (response_mask != 0).unsqueeze(-2).expand_as(w)             # [.., G, K, T]
    w = torch.where(M, w, 0.0)                                      # [.., G, K, T]
    device = generator.device if generator is not None else w.device
    keys = torch.rand(w.shape, generator=generator, device=device).to(w.device)   # [.., G, K, T]
    keys = keys.masked_fill(~M, 2.0)                                # padded tokens sort last
    source = keys.argsort(-1)                                       # [.., G, K, T] real tokens first, random order
    positions = torch.arange(w.shape[-1], device=w.device).expand_as(w).masked_fill(~M, w.shape[-1])
    target = positions.argsort(dim=-1, stable=True)                 # [.., G, K, T] real tokens first, in order
    # The first n_i entries of `source` and `target` both list the real tokens, so the j-th real token receives the
    # value of a random real token; the remaining entries move 0s between padded tokens.
    return torch.zeros_like(w).scatter(-1, target, w.gather(-1, source))   # [.., G, K, T]


def uniform_relevance(response_mask: torch.Tensor, K: int) -> torch.Tensor:
    """Relevance with every real token equally relevant to every constraint: w_ikt = M_it.

    Ablation "no discriminator". With intra-sample normalisation every row is constant, so the token advantage is 0
    and RTT reduces exactly to GRPO; with inter-sample normalisation it becomes a per-constraint reward spread over
    all tokens (which carries the length bias). Padded constraint slots also get 1s, harmlessly: their s = 0.

    Args:
        response_mask: [.., G, T].
        K: number of constraint slots.
    Returns:
        [.., G, K, T] float32 in {0, 1}.

    Example:
        >>> uniform_relevance(torch.tensor([[1, 1, 0]]), K=2)
        tensor([[[1., 1., 0.],
                 [1., 1., 0.]]])
    """
    M = (response_mask != 0).to(torch.float32).unsqueeze(-2)        # [.., G, 1, T]
    return M.expand(*M.shape[:-2], K, M.shape[-1]).clone()          # [.., G, K, T]


# ----------------------------------------------------------------------------------------------------------------
# everything in one call (for the training loop and the notebooks)


EOS_MODES = ("discriminator", "zero", "exclude")
CREDIT_MODES = ("all", "relevant")
RELEVANT = 0.5  # relevance from which a token counts as relevant to a constraint (credit="relevant")


def token_term_defaults(reference_quirks: bool, std_floor: float | None = None, eos: str | None = None,
                        credit: str | None = None) -> tuple:
    """(std_floor, eos, credit) with each None replaced by its default: ours, or the released code's behaviour under
    reference_quirks (no std floor, EOS relevance 0, every token credited). train.py and rtt_advantages both ask here.

        >>> token_term_defaults(False)
        (0.01, 'discriminator', 'relevant')
        >>> token_term_defaults(True, eos="exclude")
        (0.0, 'exclude', 'all')
    """
    std_floor = (0.0 if reference_quirks else TOKEN_STD_FLOOR) if std_floor is None else std_floor
    eos = ("zero" if reference_quirks else "discriminator") if eos is None else eos
    credit = ("all" if reference_quirks else "relevant") if credit is None else credit
    return std_floor, eos, credit


def relevant_only(normed: torch.Tensor, relevance: torch.Tensor, threshold: float = RELEVANT) -> torch.Tensor:
    """The normalised cube kept only on the tokens relevant to each constraint (w >= threshold); 0 elsewhere [ours].

    Intra-sample normalisation centres each (response, constraint) row, so the tokens that do not matter to a
    constraint get the opposite sign of its verdict: a failed constraint pushes them *up*. Where most constraints
    fail (the CPU setting: 70-80 % of verdicts), that pushes up the bulk of every response, whatever it says
    (README, "Why RTT lost the pilot"). Keeping r~ only where w >= threshold credits each verdict to exactly the
    tokens relevant to it; the others keep A_res alone.

    Args:
        normed: [.., G, K, T] output of intra_sample_token_norm (or inter_sample_token_norm).
        relevance: [.., G, K, T] the relevance the cube was built from.
    Returns:
        [.., G, K, T], normed where relevance >= threshold, else 0.

    Example (a failed constraint, relevant on the first token only):
        >>> normed = intra_sample_token_norm(torch.tensor([[[-1., 0., 0., 0.]]]), torch.ones(1, 4))
        >>> normed
        tensor([[[-1.7320,  0.5773,  0.5773,  0.5773]]])
        >>> relevant_only(normed, torch.tensor([[[1., 0., 0.2, 0.]]]))
        tensor([[[-1.7320,  0.0000,  0.0000,  0.0000]]])
    """
    return torch.where(relevance >= threshold, normed, torch.zeros_like(normed))


def rtt_advantages(scores: torch.Tensor, relevance: torch.Tensor, response_mask: torch.Tensor,
                   union: str = "aon", norm: str = "intra", combine: str = "add", weight: float = 0.5,
                   reference_quirks: bool = False, eps: float = 1e-6, std_floor: float | None = None,
                   stop_mask: torch.Tensor | None = None, eos: str | None = None,
                   credit: str | None = "all") -> tuple[torch.Tensor, dict]:
    """RTT-GRPO advantages, spec §3 -> §5 -> §6 in one call.

        R = response_rewards(s, union)                 A_res = grpo_advantages(R)
        r = token_rewards(s, w)                        r~ = intra_sample_token_norm(r, M)  (or inter_...)
        A_tok = token_advantages(r~, s)                A = combine_advantages(A_res, A_tok, M, combine, weight)

    Args:
        scores: [.., G, K] judge verdicts, +1 / -1 / 0 padded slot.
        relevance: [.., G, K, T] discriminator relevance in [0, 1].
        response_mask: [.., G, T] 1 on real response tokens (EOS included).
        union: how constraints make the response reward: "aon" (all-or-nothing, paper default) or "csr".
        norm: token normalisation group: "intra" (RTT) or "inter" (baseline).
        combine: "add" (A_res + lambda A_tok, paper) or "mix" ((1 - lambda) A_res + lambda A_tok).
        weight: lambda (0.5 in every released config).
        reference_quirks: reproduce the released code: relevance cut to {0, 1}
            (truncate_relevance_like_reference), the reshape defect (reshape_defect_token_advantages), EOS
            relevance 0 (zero_relevance_at) and no std floor, unless eos / std_floor say otherwise.
        eps: added to every std.
        std_floor: floor of the token normalisations' sigma (module docstring); 0 = the paper's formula. None: 0
            with reference_quirks (the released code had none), else TOKEN_STD_FLOOR.
        stop_mask: [.., G, T] True on the stop tokens (stop_token_mask); None = no response has one (all were
            cut off at the token cap), so eos then changes nothing.
        eos: what the stop token's relevance is. "discriminator" (ours): as rated, like any other token; "zero":
            0, as in the released code; "exclude": the stop token is left out of the token normalisation and gets
            A_tok = 0 (it keeps A_res). None: "zero" with reference_quirks, else "discriminator".
        credit: which tokens a constraint's normalised reward reaches. "all" (the paper, the formula as printed):
            every token of the response; "relevant" (ours, and train.py's default): only those with w >= RELEVANT
            (relevant_only), not with reference_quirks. None: "all" with reference_quirks, else "relevant".
    Returns:
        (A [.., G, T], parts) where parts holds the intermediate tensors: "rewards" [.., G], "response_adv" [.., G],
        "relevance" [.., G, K, T] (as used, after truncation if reference_quirks), "token_rewards" [.., G, K, T],
        "normed" [.., G, K, T] (None with reference_quirks: the released code's cube has another layout),
        "token_adv" [.., G, T].

    Example (running example):
        >>> scores = torch.tensor([[1, 1], [1, -1]])
        >>> relevance = torch.tensor([[[1., 0., 0., 0.], [0., 0., 1., 1.]],
        ...                           [[0., 1., 0., 0.], [1., 0., 0., 0.]]])
        >>> mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
        >>> A, parts = rtt_advantages(scores, relevance, mask)
        >>> A
        tensor([[ 0.8901,  0.3128,  0.8128,  0.8128],
                [-1.2071, -0.2071,  0.0000,  0.0000]])
        >>> parts["response_adv"]
        tensor([ 0.7071, -0.7071])
    """
    *lead, G, K, T = relevance.shape
    if tuple(scores.shape) != (*lead, G, K) or tuple(response_mask.shape) != (*lead, G, T):
        raise ValueError(f"shapes do not fit: scores {tuple(scores.shape)} should be {(*lead, G, K)}, "
                         f"response_mask {tuple(response_mask.shape)} should be {(*lead, G, T)} "
                         f"for relevance {tuple(relevance.shape)}")
    if norm not in ("intra", "inter"):
        raise ValueError(f"token normalisation must be 'intra' or 'inter', got {norm!r}")
    std_floor, eos, credit = token_term_defaults(reference_quirks, std_floor, eos, credit)
    if eos not in EOS_MODES or credit not in CREDIT_MODES or (credit != "all" and reference_quirks):
        raise ValueError(f"eos must be one of {EOS_MODES}, got {eos!r}; credit one of {CREDIT_MODES} ('all' with "
                         f"reference_quirks), got {credit!r}")
    if stop_mask is None:
        stop_mask = torch.zeros(response_mask.shape, dtype=torch.bool, device=response_mask.device)   # none
    relevance = relevance.to(_float_dtype(scores, relevance))       # [.., G, K, T] bf16/int -> float32
    if reference_quirks:
        relevance = truncate_relevance_like_reference(relevance)    # [.., G, K, T] in {0, 1}
    if eos == "zero":
        relevance = zero_relevance_at(relevance, stop_mask)         # [.., G, K, T] 0 on the stop tokens
    token_mask = response_mask != 0                                 # [.., G, T] tokens the normalisation sees
    if eos == "exclude":
        token_mask = token_mask & ~stop_mask                        # [.., G, T] stop tokens out: A_tok = 0 there
    rewards = response_rewards(scores, union)                       # [.., G]
    response_adv = grpo_advantages(rewards, eps)                    # [.., G]
    r = token_rewards(scores, relevance)                            # [.., G, K, T]
    if reference_quirks:
        normed = None
        token_adv = reshape_defect_token_advantages(r, scores, token_mask, norm, eps, std_floor)    # [.., G, T]
    else:
        normalise = intra_sample_token_norm if norm == "intra" else inter_sample_token_norm
        normed = normalise(r, token_mask, eps, std_floor)           # [.., G, K, T]
        if credit == "relevant":
            normed = relevant_only(normed, relevance)               # [.., G, K, T] 0 off each constraint's tokens
        token_adv = token_advantages(normed, scores)                # [.., G, T]
    A = combine_advantages(response_adv, token_adv, response_mask, combine, weight)   # [.., G, T]
    parts = {"rewards": rewards, "response_adv": response_adv, "relevance": relevance, "token_rewards": r,
             "normed": normed, "token_adv": token_adv}
    return A, parts
