"""Values of the job file: times with zones and durations."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from greentune.errors import ScheduleError

__all__ = ["parse_duration_s", "parse_time"]


def parse_time(value: Any, now: dt.datetime, where: str) -> dt.datetime:
    """An aware datetime from YAML: an ISO time with zone, ``now`` or ``+DURATION`` after now."""
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str) and value.strip() == "now":
        return now
    elif isinstance(value, str) and value.strip().startswith("+"):
        return now + dt.timedelta(seconds=parse_duration_s(value.strip()[1:], where))
    elif isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ScheduleError(
                f"{where}: cannot read {value!r} as a time; write e.g. 2024-03-04T09:00Z, "
                "now, or +24h"
            ) from None
    else:
        raise ScheduleError(f"{where}: expected a time such as 2024-03-04T09:00Z, got {value!r}")
    if when.tzinfo is None:
        raise ScheduleError(
            f"{where}: {value!r} has no time zone; add one, e.g. 2024-03-04T09:00Z or +01:00"
        )
    return when.astimezone(dt.UTC)


def parse_duration_s(value: Any, where: str) -> float:
    """Seconds from '90min', '2h', '1 days', or a number of seconds."""
    if isinstance(value, bool):
        raise ScheduleError(f"{where}: expected a duration such as 2h, got {value!r}")
    try:
        seconds = (
            float(value)
            if isinstance(value, int | float)
            else pd.Timedelta(str(value).strip()).total_seconds()
        )
    except ValueError:
        raise ScheduleError(
            f"{where}: cannot read {value!r} as a duration; write e.g. 30min, 2h or 1D"
        ) from None
    if not seconds > 0:
        raise ScheduleError(f"{where}: duration must be positive, got {value!r}")
    return seconds
