"""
log p(token) and entropy of each token from the policy's logits, without keeping a [N, V] float32 log-softmax for
the backward pass (with a 150k vocabulary that tensor is the largest thing in memory). Same numbers as
`log_softmax(logits).gather(...)`, computed chunk by chunk.
"""
import torch


class _TokenLogProbs(torch.autograd.Function):
    """log p(target) and entropy per row of `logits` [N, V] without a [N, V] float32 log-softmax kept for backward.

    Forward works through row chunks in float32 and keeps only the (bf16 / fp32) logits and the log-sum-exp [N];
    backward rebuilds softmax chunk by chunk: d logp / d logits = onehot(target) - softmax(logits).
    """

    @staticmethod
    def forward(ctx, logits, targets, chunk):
        N = logits.shape[0]
        lse = torch.empty(N, dtype=torch.float32, device=logits.device)       # [N]
        entropy = torch.empty(N, dtype=torch.float32, device=logits.device)   # [N]
        for s in range(0, N, chunk):
            x = logits[s:s + chunk].float()                                   # [n, V]
            lse[s:s + chunk] = torch.logsumexp(x, dim=-1)
            p = torch.exp(x - lse[s:s + chunk, None])
            entropy[s:s + chunk] = lse[s:s + chunk] - (p * x).sum(-1)
        logp = logits.gather(1, targets[:, None]).squeeze(1).float() - lse    # [N]
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk = chunk
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        logits, targets, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for s in range(0, logits.shape[0], ctx.chunk):
            g = -torch.exp(logits[s:s + ctx.chunk].float() - lse[s:s + ctx.chunk, None])  # -softmax, [n, V]
            g.scatter_add_(1, targets[s:s + ctx.chunk, None], torch.ones_like(g[:, :1]))
            grad[s:s + ctx.chunk] = (g * grad_logp[s:s + ctx.chunk, None]).to(logits.dtype)
        return grad, None, None


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple:
    """logits [..., V], targets [...] -> (log p(target) [...] float32, entropy [...] float32, no grad)."""
    V = logits.shape[-1]
    chunk = max(1, (64 * 2**20) // (4 * V))  # ~64 MB of float32 per chunk
    logp, ent = _TokenLogProbs.apply(logits.reshape(-1, V), targets.reshape(-1), chunk)
    return logp.view(targets.shape), ent.view(targets.shape)
