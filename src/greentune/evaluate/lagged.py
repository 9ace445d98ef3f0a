"""Sums over sliding windows of a series from lagged cross-products, without the design matrix.

A ridge over every training window (stride 1) sees a design whose rows are overlapping slices
of one series: the row of origin t is ``series[t - before : t + after]`` flattened. Its Gram
matrix, formed as a product, costs rows x width^2 (on the demo 11,763 x 6,144^2, most of the
ridge's statistics time). Along each block diagonal of that Gram matrix, moving both positions
one step later moves the summed rows by one: one row enters at the end and one leaves at the
start. So one block row is a product and every other block is that block plus a running sum of
rank-one corrections: exact sums (float64, rounding aside) for the cost of one block row.
"""

from __future__ import annotations

import numpy as np


def runs(origins: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of consecutive origins as (first, stop) pairs, in order."""
    if len(origins) == 0:
        return []
    breaks = np.flatnonzero(np.diff(origins) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(origins)]])
    return [(int(origins[a]), int(origins[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


def lagged_sums(
    series: np.ndarray, start: int, stop: int, before: int, after: int, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Over origins ``start .. stop - 1`` with ``z_t = series[t - before : t + after]``
    flattened position-major (index ``i * C + c``): ``sum z_t`` (P*C,) and ``sum z_t' z_t``
    (P*C, P*C), P = before + after, in float64."""
    s = np.asarray(series, dtype=np.float64)
    n_pos, n_ch = before + after, s.shape[1]
    m, base = stop - start, start - before
    if m <= 0 or base < 0 or stop + after - 1 > len(s):
        raise ValueError(f"origins {start}..{stop - 1} need rows outside the series of {len(s)}")
    first = s[base : base + m]
    # block row 0: sum over the run of first[r]' s[base + i + r] for every position i
    row0 = np.zeros((n_ch, n_pos * n_ch))
    for r0 in range(0, m, chunk):
        r1 = min(r0 + chunk, m)
        view = np.lib.stride_tricks.sliding_window_view(
            s[base + r0 : base + r1 + n_pos - 1], n_pos, 0
        )
        row0 += first[r0:r1].T @ view.transpose(0, 2, 1).reshape(r1 - r0, -1)
    head = row0.reshape(n_ch, n_pos, n_ch).transpose(1, 0, 2)  # (i, c, c'): block (0, i)
    leave = s[base : base + n_pos - 1]  # the row that leaves as position i moves to i + 1
    enter = s[base + m : base + m + n_pos - 1]  # and the row that enters
    gram = np.empty((n_pos, n_ch, n_pos, n_ch))
    for d in range(n_pos):
        k = n_pos - d
        steps = np.einsum("rc,rk->rck", enter[: k - 1], enter[d:]) - np.einsum(
            "rc,rk->rck", leave[: k - 1], leave[d:]
        )
        blocks = np.empty((k, n_ch, n_ch))
        blocks[0] = head[d]
        np.cumsum(steps, axis=0, out=blocks[1:])
        blocks[1:] += head[d]
        at = np.arange(k)
        gram[at, :, at + d, :] = blocks
        if d:
            gram[at + d, :, at, :] = blocks.transpose(0, 2, 1)
    total = np.empty((n_pos, n_ch))
    total[0] = first.sum(0)
    np.cumsum(enter - leave, axis=0, out=total[1:])
    total[1:] += total[0]
    return total.reshape(-1), gram.reshape(n_pos * n_ch, n_pos * n_ch)
