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

Every run of slots a job is launched into starts with its ``restart_slots`` (a process start,
imports, the data and the checkpoint loaded again: time that does no work), so a job of ``k``
work slots cut into ``n`` runs takes ``k + n x restart_slots`` slots, and a pause is only worth
taking where the greener hours pay for the restart. With ``restart_slots = 0`` (LWA's model)
pauses are free.
- ``greenest-chunks-unpriced``: ``greenest-chunks`` planned as if pauses were free, then
  executed paying the restart of every run (what LWA's plan costs where restarts are not free).
- ``spatial``: ``greenest-chunks`` at every site the job may use; the cheapest site wins
  (ties go to the site listed first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

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
    restart_slots: int = 0
    """Slots at the start of every run that do no work (the job starting or resuming)."""

    @property
    def single_run(self) -> int:
        """Slots the job takes in one run: its work and one start."""
        return self.slots + self.restart_slots


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
        f"job {req.name} needs {req.single_run} slot(s) at site {site} before its deadline "
        f"(slot {req.deadline}) but only {int(usable.sum())} have {req.units} free unit(s); "
        "move the deadline, add capacity or allow another site"
    )


def run_now(req: Request, sites: dict[str, SiteView]) -> Outcome:
    site = req.sites[0]
    cost, usable = _window(req, sites[site])
    blocked = np.cumsum(~usable)
    k = req.single_run
    for start in range(0, len(cost) - k + 1):
        before = blocked[start - 1] if start else 0
        if blocked[start + k - 1] == before:
            runs = ((req.first + start, req.first + start + k),)
            return Choice(site, runs, float(cost[start : start + k].sum()))
    return _busy_reason(req, site, usable)


def _lowest_window_at(req: Request, site: str, view: SiteView) -> Outcome:
    cost, usable = _window(req, view)
    k = req.single_run
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


def best_chunks(
    cost: np.ndarray, usable: np.ndarray, k: int, m: int, restart: int = 0
) -> list[int] | None:
    """Indices of usable slots with the least total cost that hold ``k`` slots of work, in runs
    of >= ``m`` slots whose first ``restart`` slots do no work.

    Dynamic programme over slots; state = length of the run in progress (0 idle, 1 .. m-1 too
    short to stop, m long enough). Ties go to earlier slots. None when no such choice exists.
    """
    if restart > 0:
        m = max(1, min(m, k + restart))
        return _chunks_with_restart(np.where(usable, cost, math.inf), k, m, restart)
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


def _chunks_with_restart(c: np.ndarray, k: int, m: int, r: int) -> list[int] | None:
    """``best_chunks`` where every run begins with ``r`` slots of restart: state s = position in
    the run (capped at ``top``); a slot at position > r adds one slot of work; a run may stop
    once it is ``m`` long and has done some work. Predecessors are kept to read the choice
    back (this path is for plans, not for the yearly replays)."""
    top = max(m, r + 1)
    n = len(c)
    inf = math.inf
    dp = np.full((top + 1, k + 1), inf)
    dp[0, 0] = 0.0
    back = np.zeros((n, top + 1, k + 1), dtype=np.int32)
    for i in range(n):
        new = np.full_like(dp, inf)
        idle = dp[0] <= dp[top]  # ties: stay idle (work later) only if no cheaper
        new[0] = np.where(idle, dp[0], dp[top])
        back[i, 0] = np.where(idle, 0, top)
        for s in range(1, top + 1):
            prev, src = dp[s - 1], np.full(k + 1, s - 1)
            if s == top:  # the run goes on once it is long enough
                longer = dp[top] < prev
                prev, src = np.where(longer, dp[top], prev), np.where(longer, top, src)
            work = 1 if s > r else 0
            new[s, work:] = prev[: k + 1 - work] + c[i]
            back[i, s, work:] = src[: k + 1 - work]
        dp = new
    state = 0 if dp[0, k] <= dp[top, k] else top
    if not math.isfinite(dp[state, k]):
        return None
    chosen, j = [], k
    for i in range(n - 1, -1, -1):
        prev_state = int(back[i, state, j])
        if state:
            chosen.append(i)
            j -= 1 if state > r else 0
        state = prev_state
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
    picked = best_chunks(cost, usable, req.slots, req.min_chunk, req.restart_slots)
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


def greenest_chunks_unpriced(req: Request, sites: dict[str, SiteView]) -> Outcome:
    """The plan of a scheduler whose pauses are free (LWA's interruptible model), carried out
    where they are not: each planned run starts when planned (or when the run before it ends),
    first pays the job's ``restart_slots``, then does its planned work. The baseline against
    which pricing the restart (``greenest-chunks``) is measured."""
    out = greenest_chunks(replace(req, restart_slots=0), sites)
    if not isinstance(out, Choice) or not req.restart_slots:
        return out
    runs, end = [], -1
    for a, b in out.runs:
        start = max(a, end)
        end = start + req.restart_slots + (b - a)
        runs.append((start, end))
    return Choice(out.site, tuple(runs), out.cost)


POLICIES.add("run-now", run_now)
POLICIES.add("lowest-window", lowest_window)
POLICIES.add("greenest-chunks", greenest_chunks)
POLICIES.add("greenest-chunks-unpriced", greenest_chunks_unpriced)
POLICIES.add("spatial", spatial)


def _no_room(req: Request) -> Infeasible | None:
    """A deadline that has passed, or is nearer the plan's start than one run of the job:
    no policy can place it (and slicing the slots up to a negative deadline would count from
    the end)."""
    if req.deadline - req.first >= req.single_run:
        return None
    return Infeasible(
        f"job {req.name} needs {req.single_run} slot(s) but its deadline (slot {req.deadline} "
        f"of the plan) leaves {max(0, req.deadline - req.first)} after its earliest start "
        f"(slot {req.first}): the deadline has passed or is too near; move it later"
    )


def place(requests: Sequence[Request], policy: Policy, sites: dict[str, SiteView]) -> list[Outcome]:
    """Each request in (first, deadline) order through ``policy``; capacity is booked as it
    goes. Outcomes come back in the order of ``requests``."""
    order = sorted(range(len(requests)), key=lambda i: (requests[i].first, requests[i].deadline))
    out: list[Outcome | None] = [None] * len(requests)
    for i in order:
        req = requests[i]
        outcome = _no_room(req) or policy(req, sites)
        if isinstance(outcome, Choice):
            free = sites[outcome.site].free
            if free is not None:
                for a, b in outcome.runs:
                    free[a:b] -= req.units
        out[i] = outcome
    return [o for o in out if o is not None]
