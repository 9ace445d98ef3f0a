"""Carbon forecasts from a greentune forecasting run: the same machinery as the demand forecasts.

Train once on an intensity trace, e.g. the Electricity Maps export::

    greentune run data.source=csv data.path=GB_2023_hourly.csv "data.time_col=Datetime (UTC)" \\
        "data.target=Carbon Intensity gCO₂eq/kWh (LCA)" data.context_length=168 data.horizon=48 \\
        name=carbon-gb

then plan with ``schedule.forecast: greentune:runs/carbon-gb`` (the run's network), or
``greentune:runs/carbon-gb@recommended`` / ``@lightgbm`` / ``@ensemble-weighted`` for another row
of its table (``Predictor.with_row``). The run must use calendar
features only (no covariates whose future is unknown here) and the trace's step must equal the
plan's slot. Horizons longer than the run's are forecast recursively, each forecast fed back as
history, with the model loaded once; the plan reports the error against what happened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from greentune.errors import GreentuneError, ScheduleError
from greentune.schedule.forecaster import FORECASTERS


class GreentuneRunForecaster:
    uses_future = False

    def __init__(self, spec: str) -> None:
        # RUN@ROW, unless the whole spec is a run folder (a path may hold '@')
        whole = "@" not in spec or (Path(spec) / "config.yaml").is_file()
        run, _, row = (spec, "", "") if whole else spec.rpartition("@")
        if not run or (not whole and not row):
            raise ScheduleError("the greentune forecast needs a run: greentune:RUN_DIR[@ROW]")
        from greentune.tasks import Predictor
        from greentune.tasks.ensemble_predictor import RunsPredictor
        from greentune.tasks.forecast import ForecastPredictor

        try:
            predictor = Predictor.from_run(run, row=row or None)
            # an ensemble of runs reads its members' data: the first one's layout is theirs
            own = predictor
            while isinstance(own, RunsPredictor):  # an ensemble may have ensembles as members
                own = own.first
            if not isinstance(own, ForecastPredictor) or own.run is None:
                raise ScheduleError(f"{run} is a {predictor.task} run, not a forecast")
            self.step = pd.Timedelta((own.run.metrics.data or {})["step"])
        except (GreentuneError, KeyError) as exc:
            raise ScheduleError(f"schedule.forecast greentune:{spec}: {exc}") from None
        columns = own.columns
        if len(columns.targets) != 1 or columns.past:
            raise ScheduleError(
                f"greentune:{run} forecasts {columns.targets} from past covariates "
                f"{columns.past}; a carbon forecast needs one target and calendar features only"
            )
        self.predictor = predictor
        self.config = own.cfg
        row_name = getattr(predictor, "row", None)
        self.name = f"greentune:{predictor.run}" + (f"@{row_name}" if row_name else "")

    def fit(self, values: np.ndarray, times: pd.DatetimeIndex, slots_per_day: int) -> None:
        """Trained already: ``greentune run`` fitted it (and its baselines) on its own split."""

    def predict(
        self, values: np.ndarray, times: pd.DatetimeIndex, issue: int, horizon: int
    ) -> np.ndarray:
        d = self.config.data
        step = times[1] - times[0]
        if step != self.step:
            raise ScheduleError(
                f"{self.name} was trained on data every {self.step}; set schedule.slot to that "
                f"step (it is {step})"
            )
        target = str(d.target)
        history = pd.Series(np.asarray(values[:issue], float), index=times[:issue])
        out: list[float] = []
        while len(out) < horizon:
            frame = pd.DataFrame({d.time_col or "time": history.index, target: history.to_numpy()})
            try:
                fc = self.predictor.predict(frame, origins="last", source=self.name)
            except GreentuneError as exc:
                raise ScheduleError(f"{self.name}: {exc}") from None
            new = fc[f"{target}_forecast"].to_numpy(float)
            out.extend(new)
            got = pd.DatetimeIndex(pd.to_datetime(fc["time"], utc=True))
            history = pd.concat([history, pd.Series(new, index=got)])
        return np.asarray(out[:horizon])


FORECASTERS.add("greentune", lambda arg="": GreentuneRunForecaster(arg))
