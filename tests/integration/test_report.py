"""report.html at the end of a run, ``greentune report`` and ``greentune recommend``, and the
page opened in a real headless Chromium: offline, no console errors, every figure drawn."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import greentune as gt
from greentune.cli import app, compress, report  # noqa: F401  (registers the commands)
from greentune.rundir import RunDir
from tests.conftest import make_series, series_overrides, tiny_classify_run

runner = CliRunner()
ARTIFACTS = Path(
    os.environ.get("GREENTUNE_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _forecast_run(tmp: Path, name: str, *extra: str) -> RunDir:
    csv = tmp / "load.csv"
    if not csv.exists():
        make_series().to_csv(csv, index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(csv, tmp / "runs", name),
            "train.epochs=2",
            "eval.baselines=[seasonal_naive_weekly,linear,lightgbm]",
            "eval.report=true",
            *extra,
        ]
    )
    lines: list[str] = []
    run = gt.run(cfg, echo=lines.append)
    (run.path / "echo.txt").write_text("\n".join(lines))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, RunDir, Path]:
    tmp = tmp_path_factory.mktemp("report")
    return _forecast_run(tmp, "a"), _forecast_run(tmp, "b", "seed=1", "train.lr=0.003"), tmp


def _images(html: str) -> list[str]:
    return re.findall(r'<img src="data:image/svg\+xml;base64,[A-Za-z0-9+/=]+" alt="([^"]+)"', html)


def test_a_run_ends_with_its_report_and_meters_it(runs) -> None:
    a, _, _ = runs
    html = (a.path / "report.html").read_text()
    assert f"report: {a.path / 'report.html'}" in (a.path / "echo.txt").read_text()
    assert _images(html) == [
        "Quality against energy",
        "Energy by phase",
        "Forecast against actuals",
        "Error by hour and weekday",
        "Training",
        "Emissions over time",
    ]
    # self-contained: nothing to fetch, no script
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html
    m = a.metrics
    for row in m.test:  # every row of the comparison, the recommendation highlighted
        assert f"<td>{row}" in html
    assert f'<tr class="chosen"><td>{m.energy.greenest}' in html
    assert "<th>Wh (model)</th><th>gCO2e (model)</th>" in html  # no counters on CI machines
    assert [s["command"] for s in a.ledger.sessions] == ["run", "report"]
    assert a.info.status == "complete"


def test_a_report_that_fails_leaves_the_run_complete(tmp_path, monkeypatch) -> None:
    import greentune.report as report_module

    def broken(*args, **kwargs):
        raise ValueError("no figure today")

    monkeypatch.setattr(report_module, "write_report", broken)
    run = _forecast_run(tmp_path, "f", "eval.baselines=[seasonal_naive_weekly]")
    assert run.info.status == "complete"
    assert not (run.path / "report.html").exists()
    assert (
        f"report: report.html not written (no figure today); greentune report {run.path} "
        "tries again" in (run.path / "log.txt").read_text()
    )


def test_an_interrupted_report_leaves_the_run_complete(tmp_path, monkeypatch) -> None:
    import greentune.report as report_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module, "write_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _forecast_run(tmp_path, "i", "eval.baselines=[seasonal_naive_weekly]")
    run = RunDir(tmp_path / "runs" / "i")
    assert run.info.status == "complete" and (run.path / "metrics.json").is_file()


def test_a_classification_report_has_its_confusion_matrix_and_f1(tmp_path) -> None:
    run = tiny_classify_run(tmp_path)
    result = runner.invoke(app, ["report", str(run.path)])
    assert result.exit_code == 0, result.output
    html = (run.path / "report.html").read_text()
    assert {"Confusion matrix", "F1 per class", "Training"} <= set(_images(html))
    assert "macro-F1" in html


def test_several_runs_are_compared_on_one_page(runs) -> None:
    a, b, tmp = runs
    out = tmp / "both.html"
    result = runner.invoke(app, ["report", str(a.path), str(b.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "Runs compared" in html
    assert html.count('class="run"') == 2
    assert "a/lightgbm" in html and "b/lightgbm" in html
    assert _images(html)[:2] == ["Quality against energy", "Energy by phase"]


def test_compress_writes_the_report_again_with_its_variants(runs) -> None:
    a, _, _ = runs
    result = runner.invoke(app, ["compress", str(a.path), "-m", "int8-dynamic", "--rounds", "1"])
    assert result.exit_code == 0, result.output
    assert f"report: {a.path / 'report.html'}" in result.output
    html = (a.path / "report.html").read_text()
    assert "Compressed variants" in html and "<td>a-int8-dynamic</td><td>accepted</td>" in html
    # the variant's own page: its metrics keep the parent's verdict, naming the parent's rows
    variant = a.path.parent / "a-int8-dynamic"
    result = runner.invoke(app, ["report", str(variant)])
    assert result.exit_code == 0, result.output
    assert f"{a.metrics.model}+int8-dynamic" in (variant / "report.html").read_text()


def test_recommend_chooses_among_every_row_of_the_runs(runs) -> None:
    a, b, _ = runs
    result = runner.invoke(app, ["recommend", str(a.path), str(b.path), "--target", "2%", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    labels = {r["label"] for r in out["rows"]}
    assert labels == {f"a/{r}" for r in a.metrics.test} | {f"b/{r}" for r in b.metrics.test}
    assert out["chosen_on"] == "validation" and out["target"] == 0.02
    val = {r["label"]: r["val_mape"] for r in out["rows"]}
    best = min(val, key=val.get)
    assert out["best"] == best
    within = [k for k, v in val.items() if v <= val[best] * 1.02]
    grams = {r["label"]: r["emissions_g"] for r in out["rows"]}
    # rows that bill the same (a run's ensembles) are told apart by their validation score
    assert out["greenest"] == min(within, key=lambda k: (grams[k], val[k]))
    assert {r["energy_kind"] for r in out["rows"]} == {"model"}
    text = runner.invoke(app, ["recommend", str(a.path), str(b.path), "--target", "2%"]).output
    assert "Wh (model)" in text
    assert f"recommended: {out['greenest']}, the greenest within 2 % of the best" in text


def test_report_and_recommend_refuse_what_they_cannot_read(runs, tmp_path) -> None:
    a, _, _ = runs
    (tmp_path / "half").mkdir()
    shutil.copy(a.path / "config.yaml", tmp_path / "half" / "config.yaml")
    for command in ("report", "recommend"):
        result = runner.invoke(app, [command, str(tmp_path / "half")])
        assert result.exit_code == 2
        assert "has no metrics.json" in result.output and "a report needs a finished run" in (
            result.output.replace("\n", " ")
        )
    result = runner.invoke(app, ["recommend", str(a.path), "--target", "150%"])
    assert result.exit_code == 2 and "must lie in [0%, 100%)" in result.output


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (scripts/setup.sh --tests)")
def test_the_page_renders_offline_in_headless_chromium(runs) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    a, _, _ = runs
    page_path = a.path / "report.html"
    requests: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri(), wait_until="load")
            figures = page.eval_on_selector_all(
                "img",
                "els => els.map(e => ({alt: e.alt, done: e.complete, w: e.naturalWidth, "
                "h: e.getBoundingClientRect().height}))",
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    # only the page itself and its data: URIs; nothing from a network
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert len(figures) == 6
    for figure in figures:
        assert figure["done"] and figure["w"] > 0 and figure["h"] > 0, figure
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
