"""The report's error profile scores each group of target times as the run scores its test."""

import numpy as np
import pandas as pd
import pytest

from greentune.evaluate.metrics import point_metrics
from greentune.report.plots import error_profile


@pytest.mark.parametrize("metric", ["mape", "smape", "mae", "rmse", "mase"])
def test_one_group_scores_what_the_run_scores_and_groups_split_it(metric: str) -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(100, 20, 48)
    y[5] = 0.0  # left out of MAPE, as the score leaves it out
    yhat = y + rng.normal(0, 5, 48)
    p = pd.DataFrame({"y_true": y, "y_pred": yhat})
    scale = 3.5
    whole = error_profile(p, metric, pd.Series(np.zeros(48, dtype=int)), scale)
    assert whole.iloc[0] == pytest.approx(point_metrics(y, yhat, scale)[metric], rel=1e-12)
    hours = pd.Series(np.arange(48) % 24)
    by_hour = error_profile(p, metric, hours, scale)
    assert list(by_hour.index) == list(range(24))
    two = [0, 24] if metric != "mape" else [1, 25]
    expected = point_metrics(y[two], yhat[two], scale)[metric]
    assert by_hour.loc[two[0]] == pytest.approx(expected, rel=1e-12)
