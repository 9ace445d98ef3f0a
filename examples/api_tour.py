"""greentune from Python: run, read the results and the energy, predict from a DataFrame.

    python examples/api_tour.py            # MiniLM on the Victoria 2014 demo, a short budget
    python examples/api_tour.py --tiny     # a tiny random model: seconds (what the tests run)

docs/api.md walks through it with the output of a real run.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

import greentune as gt
from greentune.config import DataConfig
from greentune.data.sources import load_vic2014


class BestSoFar(gt.Callback):
    """A callback: note each validation that improved on the best so far."""

    def __init__(self) -> None:
        self.improved: list[tuple[int, float]] = []

    def on_validation(self, state, val_loss):
        if state.best_epoch == state.val_history[-1]["epoch"]:
            self.improved.append((state.step, round(val_loss, 5)))
        return False  # True would stop training here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="tiny random model (seconds)")
    parser.add_argument("--out", default=None, help="output_dir (default: a temporary folder)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="greentune-api-")
    gt.quiet_libraries()  # no hub progress bars or deprecation chatter

    # 1. a run, from Python: the same config system as the CLI, plus a callback object
    overrides = [
        f"output_dir={out}",
        "name=tour",
        "train.epochs=2",
        "eval.baselines=[seasonal_naive_weekly,linear]",
    ]
    if args.tiny:
        # two days of context: the ridge start on 336 steps is most of a minute on 2 cores
        overrides += ["model.backbone=tiny-bert", "train.max_steps=20", "data.context_length=96"]
    cfg = gt.load_config("configs/forecast/vic_lora.yaml", overrides)
    watcher = BestSoFar()
    run = gt.run(cfg, echo=lambda message: None, callbacks=[watcher])
    print("run:", run.path, run.status)
    print("validations that improved (step, loss):", watcher.improved)

    # 2. open it again later, anywhere: typed metrics, the energy ledger by phase
    run = gt.RunDir.open(run.path)
    metrics = run.metrics
    print(metrics.table()[["mape", "pinball", "energy_wh", "emissions_g"]].round(4))
    print("greenest within 2 % of the best:", metrics.energy.greenest)
    print(run.energy_by_phase(command="run")[["duration_s", "energy_wh", "emissions_g"]].round(5))

    # 3. load the model once, predict from a DataFrame: a week of history, the next day's
    #    temperature forecast and work-day flag known, its demand not
    demo = load_vic2014(DataConfig()).frame
    frame = demo.iloc[-8 * 48 :].copy()
    frame.loc[frame.index[-48:], "Demand"] = np.nan
    model = gt.Predictor.from_run(run)
    forecast = model.predict(frame)
    columns = ["time", "Demand_q0.1", "Demand_forecast", "Demand_q0.9"]
    print(forecast[columns].head(3).round(dict.fromkeys(columns[1:], 3)).to_string(index=False))
    truth = demo["Demand"].iloc[-48:].to_numpy()
    mape = 100 * np.mean(np.abs(forecast["Demand_forecast"].to_numpy() - truth) / truth)
    print(f"next-day MAPE {mape:.2f} % from {len(forecast)} half-hours")


if __name__ == "__main__":
    main()
