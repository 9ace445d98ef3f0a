"""Planning policies (registry ``POLICIES``): where and in which slots each job runs.

Time is a grid of equal slots; a policy sees one job (``Request``) and, per site it may use,
the forecast intensity and the capacity still free in every slot. It answers a ``Choice`` (a
site and runs of slots) or ``Infeasible`` with the reason, so that a job that cannot meet its
deadline is reported, never dropped. ``place`` runs a policy over jobs in arrival order and
books capacity as it goes.

- ``run-now``: the first site, as early as capacity allows (the baseline).
- ``lowest-window``: Let's Wait Awhile's shifting of a non-interruptible job: the contiguous
  window with the lowest forecast mean between earliest start and deadline.
- ``greenest-chunks``: an interruptible job runs in the greenest slots before its deadline, in
  runs of at least ``min_chunk`` slots (each pause costs a checkpoint and a restart); with a
  one-slot minimum this is LWA's interruptible policy. Non-interruptible jobs are shifted.
- ``spatial``: ``greenest-chunks`` at every site the job may use; the cheapest site wins
  (ties go to the site listed first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from greentune.registry import Registry

__all__ = [
    "POLICIES",
    "Choice",
    "Infeasible",
    "Request",
    "SiteView",
    "best_chunks",
    "place",
]


@dataclass(frozen=True)
class Request:
    """A job on the slot grid: it needs ``slots`` slots in [first, deadline)."""

    name: str
    first: int
    deadline: int
    slots: int
    interruptible: bool = False
    min_chunk: int = 1
    sites: tuple[str, ...] = ("home",)
    units: int = 1


@dataclass(frozen=True)
class Choice:
    site: str
    runs: tuple[tuple[int, int], ...]
    """[start, end) slot runs in time order."""
    cost: float
    """Sum of the forecast intensity over the chosen slots (g/kWh x slots)."""

    @property
    def slot_indices(self) -> np.ndarray:
        return np.concatenate([np.arange(a, b) for a, b in self.runs])


@dataclass(frozen=True)
class Infeasible:
    reason: str


@dataclass
class SiteView:
    """A site's forecast intensity per slot and capacity still free (None: unlimited)."""

    intensity: np.ndarray
    free: np.ndarray | None = None


Outcome = Choice | Infeasible
Policy = Callable[[Request, dict[str, SiteView]], Outcome]
POLICIES = Registry[Policy]("scheduling policy")


def _window(req: Request, view: SiteView) -> tuple[np.ndarray, np.ndarray]:
    """(forecast, usable) over [first, deadline)."""
    cost = view.intensity[req.first : req.deadline].astype(float)
    usable = np.isfinite(cost)
    if view.free is not None:
        usable &= view.free[req.first : req.deadline] >= req.units
    return cost, usable


def _busy_reason(req: Request, site: str, usable: np.ndarray) -> Infeasible:
    return Infeasible(
        f"job {req.name} needs {req.slots} slot(s) at site {site} before its deadline "
        f"(slot {req.deadline}) but only {int(usable.sum())} have {req.units} free unit(s); "
        "move the deadline, add capacity or allow another site"
    )


def run_now(req: Request, sites: dict[str, SiteView]) -> Outcome:
    site = req.sites[0]
    cost, usable = _window(req, sites[site])
    blocked = np.cumsum(~usable)
    for start in range(0, len(cost) - req.slots + 1):
        before = blocked[start - 1] if start else 0
        if blocked[start + req.slots - 1] == before:
            runs = ((req.first + start, req.first + start + req.slots),)
            return Choice(site, runs, float(cost[start : start + req.slots].sum()))
    return _busy_reason(req, site, usable)


def _lowest_window_at(req: Request, site: str, view: SiteView) -> Outcome:
    cost, usable = _window(req, view)
    k = req.slots
    if len(cost) < k:
        return _busy_reason(req, site, usable)
    sums = np.convolve(np.where(usable, cost, 0.0), np.ones(k), mode="valid")
    bad = np.convolve((~usable).astype(float), np.ones(k), mode="valid") > 0
    sums[bad] = math.inf
    start = int(np.argmin(sums))  # the first minimum: the earliest of equally green windows
    if not math.isfinite(sums[start]):
        return _busy_reason(req, site, usable)
    return Choice(site, ((req.first + start, req.first + start + k),), float(sums[start]))


def lowest_window(req: Request, sites: dict[str, SiteView]) -> Outcome:
    return _lowest_window_at(req, req.sites[0], sites[req.sites[0]])


def best_chunks(cost: np.ndarray, usable: np.ndarray, k: int, m: int) -> list[int] | None:
    """Indices of exactly ``k`` usable slots with the least total cost, in runs of >= ``m``.

    Dynamic programme over slots; state = length of the run in progress (0 idle, 1 .. m-1 too
    short to stop, m long enough). Ties go to earlier slots. None when no such choice exists.
    """
    m = max(1, min(m, k))
    c = np.where(usable, cost, math.inf)
    if m == 1:
        order = np.argsort(c, kind="stable")[:k]
        return sorted(order.tolist()) if len(order) == k and np.isfinite(c[order]).all() else None
    inf = math.inf
    n = len(c)
    if n == 0:
        return None
    hist = np.empty((n, m + 1, k + 1))
    dp = _start(m, k)
    for i in range(n):
        cur = hist[i]  # written in place: this loop runs for every job of a simulated year
        np.minimum(dp[0], dp[m], out=cur[0])
        cur[1:, 0] = inf
        np.add(dp[0, :-1], c[i], out=cur[1, 1:])
        for s in range(2, m):
            np.add(dp[s - 1, :-1], c[i], out=cur[s, 1:])
        np.minimum(dp[m - 1, :-1], dp[m, :-1], out=cur[m, 1:])
        cur[m, 1:] += c[i]
        dp = cur
    state = 0 if dp[0, k] <= dp[m, k] else m
    if not math.isfinite(dp[state, k]):
        return None
    chosen, j = [], k
    for i in range(n - 1, -1, -1):
        prev = hist[i - 1] if i else _start(m, k)
        if state == 0:
            state = 0 if prev[0, j] == hist[i, 0, j] else m
            continue
        chosen.append(i)
        if state == 1:
            state = 0
        elif state < m:
            state -= 1
        else:
            state = m if prev[m, j - 1] + c[i] == hist[i, m, j] else m - 1
        j -= 1
    return chosen[::-1]


def _start(m: int, k: int) -> np.ndarray:
    start = np.full((m + 1, k + 1), math.inf)
    start[0, 0] = 0.0
    return start


def _runs(indices: Sequence[int], offset: int) -> tuple[tuple[int, int], ...]:
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][1] == i + offset:
            runs[-1][1] += 1
        else:
            runs.append([i + offset, i + offset + 1])
    return tuple((a, b) for a, b in runs)


def _chunks_at(req: Request, site: str, view: SiteView) -> Outcome:
    if not req.interruptible:
        return _lowest_window_at(req, site, view)
    cost, usable = _window(req, view)
    picked = best_chunks(cost, usable, req.slots, req.min_chunk)
    if picked is None:
        return _busy_reason(req, site, usable)
    return Choice(site, _runs(picked, req.first), float(cost[picked].sum()))


def greenest_chunks(req: Request, sites: dict[str, SiteView]) -> Outcome:
    return _chunks_at(req, req.sites[0], sites[req.sites[0]])


def spatial(req: Request, sites: dict[str, SiteView]) -> Outcome:
    outcomes = [_chunks_at(req, site, sites[site]) for site in req.sites]
    choices = [o for o in outcomes if isinstance(o, Choice)]
    if not choices:
        return Infeasible("; ".join(o.reason for o in outcomes if isinstance(o, Infeasible)))
    return min(choices, key=lambda ch: ch.cost)  # min keeps the first of equal costs


POLICIES.add("run-now", run_now)
POLICIES.add("lowest-window", lowest_window)
POLICIES.add("greenest-chunks", greenest_chunks)
POLICIES.add("spatial", spatial)


def place(requests: Sequence[Request], policy: Policy, sites: dict[str, SiteView]) -> list[Outcome]:
    """Each request in (first, deadline) order through ``policy``; capacity is booked as it
    goes. Outcomes come back in the order of ``requests``."""
    order = sorted(range(len(requests)), key=lambda i: (requests[i].first, requests[i].deadline))
    out: list[Outcome | None] = [None] * len(requests)
    for i in order:
        req = requests[i]
        outcome = policy(req, sites)
        if isinstance(outcome, Choice):
            free = sites[outcome.site].free
            if free is not None:
                for a, b in outcome.runs:
                    free[a:b] -= req.units
        out[i] = outcome
    return [o for o in out if o is not None]
