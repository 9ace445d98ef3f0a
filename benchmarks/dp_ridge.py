"""A private ridge start from noised sufficient statistics, against the seasonal start that
private runs use (the privacy issue's item 2: "fit it privately, e.g. Gaussian noise on its
sufficient statistics, or start without it"). Not shipped: this measures whether it should be.

    .venv/bin/python benchmarks/dp_ridge.py [--datasets embedded,vic_elec] [--seeds 0,1,2]
        [--epsilons 8,3,1] [--full-epsilons 8] [--tag T]

The data as benchmarks/privacy.py's private arms see it: scaled by public ranges (Demand 0-12 GW
on the demo, 0-12,000 MW on vic_elec, Temperature -10-50 C), the same splits (embedded: Victoria
2014, test and validation 56 days; vic_elec: Victoria 2012-14, 92 days each). On every complete
training window (stride 1, as the skip path's ridge) the Gaussian mechanism releases once the
Gram matrix sum z z' of z = [x, r]: x the design's inputs, r the targets' residual
over the seasonal start a private run starts from (chosen on validation, `seasonal_skip`). Each
z is clipped to norm sqrt(len(z)) (every scaled raw input lies in [-1, 1]; a row of generated
features beyond that is clipped), so adding or removing one window moves the Gram by at most
len(z) in Frobenius norm; the noise multiplier is calibrated by Opacus' RDP accountant for one
release at sample rate 1 and delta 1/(10 n), as greentune's DP-SGD budget is. The noised Gram is
projected onto the positive semi-definite cone; the ridge has no intercept (see ``Ridge``); the
penalty (1e-6 .. 1e4 times the
mean diagonal) is chosen on the validation windows, which DP does not protect and nothing is
trained on (as early stopping under DP); the forecast is the seasonal start plus the ridge of
the residual, so a large penalty gives the start back.

Designs: "full", the network's flattened inputs (what the skip path's ridge reads: every channel
over the context and the known future), and "compact", the target's last day and its value one
week before each horizon step. Rows: the seasonal start; each design without noise (what the
noise costs: the same data, scaling, clipping and solver); each design at each epsilon (the
full design at --full-epsilons only: one eigendecomposition of a 6,000-square matrix per seed),
medians over the noise seeds with the range. Test MAPE, read once.

Writes benchmarks/results/dp-ridge[-T].json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import git_commit, machine_info, write_results
from victoria import VIC_ELEC, VIC_ELEC_ARGS

from greentune.cli import quiet_libraries
from greentune.config import build_config
from greentune.data.windows import ForecastData, prepare_forecast_data
from greentune.evaluate.baselines import steps_per
from greentune.evaluate.metrics import point_metrics
from greentune.evaluate.ridge import complete_origins, design_matrix
from greentune.privacy.accounting import calibrate, default_delta
from greentune.tasks.forecast.skip import seasonal_skip

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = {
    # the demo's own public ranges (data/sources.py: Demand 0-12 GW, its unit there)
    "embedded": ["data.source=vic2014", "data.test=56D", "data.val=56D", "data.scaler=bounds"],
    "vic_elec": [
        *VIC_ELEC_ARGS,
        "data.test=92D",
        "data.val=92D",
        "data.scaler=bounds",
        "data.bounds.Demand=[0,12000]",
        "data.bounds.Temperature=[-10,50]",
    ],
}
ALPHAS = tuple(10.0**k for k in range(-6, 5))
CHUNK = 2048


def compact_columns(data: ForecastData) -> np.ndarray:
    """Design columns of the target's last day of context and of its value one week before
    each horizon step (the target is channel 0 of each context step)."""
    L, H = data.context_length, data.horizon
    channels = len(data.columns)
    # one target, its channel first in each context step; a week back must lie in the context
    assert not data.channel_independent and data.n_targets == 1
    assert H <= steps_per(data, "7D") <= L
    day = steps_per(data, "1D")
    week_back = L - steps_per(data, "7D") + np.arange(H)
    return np.concatenate([np.arange(L - day, L), week_back]) * channels


def grams(
    data: ForecastData, season: np.ndarray, cols: np.ndarray
) -> tuple[dict[str, np.ndarray], int]:
    """The clipped Gram sums [x, r][x, r]' over the training windows, for the full and the
    compact design; and the number of windows."""
    L, H = data.context_length, data.horizon
    train = complete_origins(data, np.arange(L, data.val_start - H + 1))
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(train), CHUNK):
        x, y = (a.astype(np.float64) for a in design_matrix(data, train[i : i + CHUNK]))
        r = y - x @ season
        for name, part in (("full", x), ("compact", x[:, cols])):
            z = np.concatenate([part, r], axis=1)
            norm = np.sqrt(np.einsum("ij,ij->i", z, z))
            z *= np.minimum(1.0, np.sqrt(z.shape[1]) / norm)[:, None]
            out[name] = out.get(name, 0) + z.T @ z
    return out, len(train)


def noised(gram: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """The Gaussian mechanism on the upper triangle (the release), mirrored."""
    noise = np.random.default_rng(seed).normal(0.0, sigma * len(gram), gram.shape)
    noise = np.triu(noise)
    return gram + noise + np.triu(noise, 1).T


class Ridge:
    """The ridge of the residual through the origin from the Gram of [x, r] (d inputs, then
    the outputs), projected onto the PSD cone, solved for every penalty in one
    eigendecomposition. No intercept: the means a noised Gram gives carry one entry's noise
    over n (0.34 scaled units on Victoria 2014's full design at epsilon 8), and the residual
    over the seasonal start has no level to learn; a large penalty gives the start back."""

    def __init__(self, gram: np.ndarray, d: int) -> None:
        cxx = gram[:d, :d]
        self.cxr = gram[:d, d:]
        lam, self.v = np.linalg.eigh((cxx + cxx.T) / 2)
        self.lam = np.maximum(lam, 0.0)
        self.scale = float(self.lam.sum()) / d or 1.0
        self.vb = self.v.T @ self.cxr

    def weight(self, alpha: float) -> np.ndarray:
        return self.v @ (self.vb / (self.lam + alpha * self.scale)[:, None])

    def predict(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        return x @ w


def split_rows(data: ForecastData, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = design_matrix(data, complete_origins(data, origins))
    return x.astype(np.float64), y.astype(np.float64)


def mape(data: ForecastData, pred: np.ndarray, y: np.ndarray) -> float:
    """Test MAPE % in data units, as the run's table scores it."""
    n = len(y)
    p = data.unscale_target(pred.reshape(n, data.horizon, -1))
    t = data.unscale_target(y.reshape(n, data.horizon, -1))
    return point_metrics(t, p, 1.0)["mape"]


def fit_and_score(
    data: ForecastData,
    gram: np.ndarray,
    cols: np.ndarray | None,
    season: np.ndarray,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> dict[str, float]:
    """The penalty with the lowest validation MSE, and its test MAPE."""
    pick = (lambda x: x) if cols is None else (lambda x: x[:, cols])
    ridge = Ridge(gram, gram.shape[0] - season.shape[1])
    (xv, yv), (xt, yt) = val, test
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in ALPHAS:
        w = ridge.weight(alpha)
        mse = float(np.mean((xv @ season + ridge.predict(w, pick(xv)) - yv) ** 2))
        if best is None or mse < best[0]:
            best = (mse, alpha, w)
    assert best is not None
    mse, alpha, w = best
    pred = xt @ season + ridge.predict(w, pick(xt))
    return {"val_mse": mse, "alpha": alpha, "test_mape": mape(data, pred, yt)}


def one_dataset(name: str, seeds: list[int], epsilons: list[float], full_eps: list[float]) -> dict:
    t0 = time.perf_counter()
    data = prepare_forecast_data(build_config(overrides=DATASETS[name]).data)
    season = seasonal_skip(data, 1, lambda m: print(f"  [{name}] {m}", flush=True)).fit.weight
    cols = compact_columns(data)
    g, n = grams(data, season, cols)
    val, test = split_rows(data, data.val.origins), split_rows(data, data.test.origins)
    delta = default_delta(n)
    print(f"  [{name}] {n} windows, sums in {time.perf_counter() - t0:.0f} s", flush=True)
    rows: dict[str, dict] = {
        "seasonal start": {"test_mape": mape(data, test[0] @ season, test[1])},
    }
    for design, c in (("compact", cols), ("full", None)):
        rows[f"{design}, no noise"] = fit_and_score(data, g[design], c, season, val, test)
        print(f"  [{name}] {design}, no noise: {rows[f'{design}, no noise']}", flush=True)
        for eps in epsilons if design == "compact" else full_eps:
            sigma = calibrate(eps, delta, 1.0, 1, "rdp")
            runs = [
                fit_and_score(data, noised(g[design], sigma, s), c, season, val, test)
                for s in seeds
            ]
            mapes = [r["test_mape"] for r in runs]
            rows[f"{design}, epsilon {eps:g}"] = {
                "test_mape": statistics.median(mapes),
                "test_mape_min": min(mapes),
                "test_mape_max": max(mapes),
                "alphas": [r["alpha"] for r in runs],
                "noise_multiplier": sigma,
                "noise_sd": sigma * len(g[design]),
            }
            print(f"  [{name}] {design}, epsilon {eps:g}: {rows[f'{design}, epsilon {eps:g}']}")
    return {
        "windows": n,
        "delta": delta,
        "inputs": {"full": len(g["full"]) - season.shape[1], "compact": len(cols)},
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }


def markdown(results: dict) -> str:
    lines = [
        "# A private ridge start from noised sufficient statistics",
        "",
        f"Machine: {results['machine']['cpu']}; commit {results['commit']}. Noise seeds "
        f"{results['seeds']}: medians [range]. Test MAPE %, the penalty chosen on validation.",
        "",
    ]
    for name, ds in results["datasets"].items():
        lines += [
            f"## {name}: {ds['windows']} training windows, delta {ds['delta']:.2g}, inputs: "
            f"full {ds['inputs']['full']}, compact {ds['inputs']['compact']}",
            "",
            "| row | test MAPE % | penalty (x mean diagonal) | noise sd per Gram entry |",
            "|---|---|---|---|",
        ]
        for row, r in ds["rows"].items():
            rng = (
                f" [{r['test_mape_min']:.3f}–{r['test_mape_max']:.3f}]"
                if "test_mape_min" in r
                else ""
            )
            alpha = r.get("alpha", r.get("alphas", "–"))
            sd = f"{r['noise_sd']:.0f}" if "noise_sd" in r else "–"
            lines.append(f"| {row} | {r['test_mape']:.3f}{rng} | {alpha} | {sd} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="embedded,vic_elec")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epsilons", default="8,3,1")
    ap.add_argument("--full-epsilons", default="8")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    quiet_libraries()
    seeds = [int(s) for s in args.seeds.split(",")]
    eps = [float(e) for e in args.epsilons.split(",")]
    full_eps = [float(e) for e in args.full_epsilons.split(",") if e]
    results: dict = {
        "machine": machine_info(),
        "commit": git_commit(),
        "seeds": seeds,
        "datasets": {},
    }
    for name in args.datasets.split(","):
        if name == "vic_elec" and not VIC_ELEC.is_file():
            print(f"skipping vic_elec: {VIC_ELEC} not found")
            continue
        results["datasets"][name] = one_dataset(name, seeds, eps, full_eps)
    suffix = f"-{args.tag}" if args.tag else ""
    write_results(RESULTS / f"dp-ridge{suffix}", results, markdown(results))


if __name__ == "__main__":
    main()
