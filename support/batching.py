"""Token-budget batching: rows cut into groups whose padded size (rows x longest) stays within a budget."""


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
