"""``solve_ridge``'s fit from the design rows themselves, for fewer training rows than inputs.

A ridge per clock time (``linear_clock``, ``data.match_origins``) sees one window a day: 246
rows on Victoria 2014 against 6,096 inputs. Its sums would be d x d matrices (0.3 GB each on
Victoria), and forming and copying them was most of such a fit's time. Here every solve goes
through the n x n kernel instead: by the push-through identity
(X'X + a I)^-1 X'Y = X' (X X' + a I)^-1 Y, and the validation forecasts are
Xv X' (X X' + a I)^-1 Y, so no d x d matrix is formed and each design's weights are formed
once, at the alpha the walk settles on. Designs, penalty scale, walk and tie rule are
``solve_ridge``'s, so the fit is the one its sums give (tested). A numeric kernel only:
``ridge`` hands it the rows, the level step and the walk, and wraps what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy import linalg

Rows = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(x, y) centred at the training means -> the design's (x, y): raw, or levelled."""
Walk = Callable[[Callable[[int], float], tuple[float, ...]], int]
"""(validation error of an alpha index, alphas) -> the index chosen (``ridge.walk_alphas``)."""


class Levelling(Protocol):
    """The ``window`` design's level step (``ridge._LevelStep``)."""

    def right(self, a: np.ndarray, copy: bool = True) -> np.ndarray: ...
    def times_b(self, a: np.ndarray) -> np.ndarray: ...
    def to_raw(self, w: np.ndarray) -> np.ndarray: ...


@dataclass
class RowFit:
    """The chosen fit: weights on raw inputs, the training means, the alpha's index, the
    design and its validation MSE (scaled units)."""

    weight: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    alpha_index: int
    level: str
    val_mse: float


@dataclass
class _Kernel:
    """One design's ridge through its n training rows ``a`` (centred, n x d) and targets
    ``b``: one n x n Cholesky factor per alpha; ``val`` and ``val_y`` are the validation
    rows' products with the training rows (nv x n) and their targets, centred and in the
    design's own terms."""

    a: np.ndarray
    b: np.ndarray
    val: np.ndarray
    val_y: np.ndarray
    scale: float
    alphas: tuple[float, ...]
    duals: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kernel = self.a @ self.a.T

    def dual(self, i: int) -> np.ndarray:
        """(X X' + alpha scale I)^-1 Y: the weights are X' times it."""
        if i not in self.duals:
            k = self.kernel.copy()
            k.flat[:: len(k) + 1] += self.alphas[i] * self.scale
            self.duals[i] = linalg.cho_solve(
                linalg.cho_factor(k, overwrite_a=True, check_finite=False),
                self.b,
                check_finite=False,
            )
        return self.duals[i]

    def val_error(self, i: int) -> float:
        """Validation MSE (scaled units) of the fit at alpha ``i``."""
        return float(np.mean((self.val @ self.dual(i) - self.val_y) ** 2))


def solve_rows(
    x: np.ndarray,
    y: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    step: Levelling,
    levels: tuple[str, ...],
    alphas: tuple[float, ...],
    walk: Walk,
) -> RowFit:
    """``solve_ridge``'s fit of the training rows ``x`` (n x d) and targets ``y``, chosen on the
    validation rows ``xv`` / ``yv``: per design in ``levels``, ``walk`` over ``alphas``, then
    the design with the lower validation MSE (ties keep the first)."""
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    # the mean diagonal of the raw design's centred X'X: both designs penalise on that scale
    scale = float(np.einsum("ij,ij->", xc, xc)) / x.shape[1] or 1.0

    def levelled(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = b - step.times_b(a)  # from the raw rows, before they are levelled in place
        return step.right(a, copy=False), b

    designs: dict[str, Rows] = {"raw": lambda a, b: (a, b), "window": levelled}
    best: tuple[float, str, int, np.ndarray] | None = None
    for level in levels:
        rows = designs[level]
        a, b = rows(xc.copy() if level != "raw" else xc, yc)
        va, vb = rows(xv - xm, yv - ym)
        kernel = _Kernel(a, b, va @ a.T, vb, scale, alphas)
        i = walk(kernel.val_error, alphas)
        err = kernel.val_error(i)
        if best is None or err < best[0]:
            w = a.T @ kernel.dual(i)
            best = (err, level, i, w if level == "raw" else step.to_raw(w))
    if best is None:
        raise ValueError("no ridge design to solve")
    err, level, i, w = best
    return RowFit(w, xm, ym, i, level, err)
