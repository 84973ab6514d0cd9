"""support/diagnostics.py: the per-step figures of the token advantages, on literal tensors (and its docstring example)."""
import doctest

import torch

import advantages as adv
from support import diagnostics


def test_docstring_examples():
    assert doctest.testmod(diagnostics).failed == 0


def test_eos_last_tokens_floor_and_terms_on_a_literal_step():
    # P = 1, G = 2, K = 2, T = 5. Response 0 stops at t = 3 (EOS), response 1 is cut off (no EOS).
    scores = torch.tensor([[[1, -1], [-1, 0]]])                          # [P, G, K]; response 1 has one real slot
    w = torch.tensor([[[[0., 0., 1., 1., 0.], [0.9993, 0.9994, 0.9993, 0.9993, 0.]],
                       [[1., 0., 0., 0., 0.], [0., 0., 0., 0., 0.]]]])     # [P, G, K, T]
    mask = torch.tensor([[[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]])
    stop = adv.stop_token_mask(torch.tensor([[[5, 6, 7, 2, 0], [5, 6, 7, 8, 9]]]), mask, [2])
    _, parts = adv.rtt_advantages(scores, w, mask, stop_mask=stop)
    st = diagnostics.token_advantage_stats(parts, mask, stop, scores, [["a", "b"]], 0.5, 0.01)
    assert st["eos_count"] == 1
    assert st["eos_tok_adv"] == float(parts["token_adv"][0, 0, 3])
    assert abs(st["eos_adv_by_family"]["a"] - float(parts["normed"][0, 0, 0, 3])) < 1e-4
    assert set(st["eos_adv_by_family"]) == {"a", "b"}                     # response 1 has no EOS: not counted
    # the near-constant row (response 0, constraint b) is the one the floor damps; 3 real rows in all
    assert abs(st["floor_damped_rows"] - 1 / 3) < 1e-6
    last4 = torch.cat([parts["token_adv"][0, 0, :4], parts["token_adv"][0, 1, 1:]])
    assert abs(st["last4_tok_adv"] - float(last4.mean())) < 1e-6
    A_res = parts["response_adv"][0]                                       # [G]
    assert abs(st["res_adv_abs"] - float((A_res.abs() * torch.tensor([4, 5])).sum() / 9)) < 1e-6
    assert abs(st["tok_term_abs"] - float(0.5 * (parts["token_adv"].abs() * mask).sum() / 9)) < 1e-6
