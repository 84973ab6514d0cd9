"""Token-budget batching: rows cut into groups whose padded size (rows x longest) stays within a budget."""
import torch


def budget_batches(order: list, lengths: list, budget: int) -> list:
    """The indices of `order`, in that order, cut into consecutive groups of at most `budget` padded tokens (at least
    one index each).

        budget_batches([0, 1, 2, 3], [3, 5, 2, 2], 10)  ->  [[0, 1], [2, 3]]    (2 rows x 5 tokens, then 2 x 2)
    """
    out, cur, longest = [], [], 0
    for r in order:
        new_longest = max(longest, lengths[r])
        if cur and new_longest * (len(cur) + 1) > budget:
            out.append(cur)
            cur, new_longest = [], lengths[r]
        cur.append(r)
        longest = new_longest
    if cur:
        out.append(cur)
    return out


def length_batches(lengths: list, budget: int) -> list:
    """Indices sorted by length (least padding), cut into groups of at most `budget` padded tokens."""
    return budget_batches(sorted(range(len(lengths)), key=lambda i: lengths[i]), lengths, budget)


def crop_rows(rollout, rows: list) -> tuple:
    """The rows' tensors with their common padding cut off (left of prompts, right of responses).

    Returns (prompt_ids, prompt_mask, response_ids, response_mask, T1): [b, Tp'] x 2, [b, T1] x 2, T1 = the longest
    response among the rows.
    """
    idx = torch.tensor(rows, device=rollout.prompt_ids.device)
    prompt_mask, response_mask = rollout.prompt_mask[idx], rollout.response_mask[idx]
    p0 = int((prompt_mask.sum(0) > 0).nonzero()[0]) if prompt_mask.any() else 0        # first used prompt column
    t1 = int(response_mask.sum(-1).max())                                               # longest response
    return (rollout.prompt_ids[idx, p0:], prompt_mask[:, p0:], rollout.response_ids[idx, :t1],
            response_mask[:, :t1], t1)
