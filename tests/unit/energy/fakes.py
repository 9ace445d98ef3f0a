"""Deterministic clocks for meter tests."""

from __future__ import annotations

import datetime as dt


class FakeClock:
    """Monotonic seconds and a matching UTC wall clock, advanced by hand."""

    def __init__(self, start: str = "2023-01-01T00:00:00+00:00") -> None:
        self.t = 0.0
        self.origin = dt.datetime.fromisoformat(start)

    def __call__(self) -> float:
        return self.t

    def wall(self) -> dt.datetime:
        return self.origin + dt.timedelta(seconds=self.t)

    def advance(self, seconds: float) -> None:
        self.t += seconds
