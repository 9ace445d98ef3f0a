"""Synthetic traces and job files for the schedule tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# Hourly intensity: 100 for 3 h, 500 for 3 h, then 200, repeating daily, from this start.
START = pd.Timestamp("2024-01-01T00:00Z")
DAY = np.array([100, 100, 100, 500, 500, 500] + [200] * 18, float)


def write_trace(path: Path, days: int = 10, start: pd.Timestamp = START, day=DAY) -> Path:
    times = pd.date_range(start, periods=24 * days, freq="1h")
    values = np.tile(day, days)
    pd.DataFrame({"timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "intensity": values}).to_csv(
        path, index=False
    )
    return path


def write_jobs(path: Path, body: str) -> Path:
    path.write_text(body)
    return path
