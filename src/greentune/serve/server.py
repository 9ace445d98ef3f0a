"""Run the app on uvicorn: one process, or ``workers`` processes that each load the model
(Prometheus samples merged through ``PROMETHEUS_MULTIPROC_DIR``)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from greentune.serve.settings import SETTINGS_ENV, ServeSettings

log = logging.getLogger("greentune.serve")


def _configure_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,  # ours logs the route template and masks; never the body
        "timeout_graceful_shutdown": int(settings.timeout_s) + 1,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
        "log_level": "info",
    }


def serve(settings: ServeSettings) -> None:
    """Serve until SIGTERM/SIGINT (then drain); model, keys and run are checked before the
    port is bound, so a bad start is one clear error."""
    check_startable(settings)  # before the seconds of importing torch and the app
    import uvicorn

    from greentune.serve.app import build_service, create_app

    _configure_logging()
    if settings.workers == 1:
        uvicorn.run(create_app(build_service(settings)), **_uvicorn_options(settings))
        return
    metrics_dir = tempfile.mkdtemp(prefix="greentune-prometheus-")
    os.environ[SETTINGS_ENV] = settings.to_json()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "greentune.serve.app:app_from_env",
            factory=True,
            workers=settings.workers,
            **_uvicorn_options(settings),
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def check_startable(settings: ServeSettings) -> None:
    """What ``build_service`` would refuse, without loading the model in this process."""
    from greentune.ensemble_file import check_members, is_ensemble_of_runs, refuse_variant
    from greentune.errors import CheckpointError
    from greentune.rundir import RunDir
    from greentune.serve.keys import open_keys

    open_keys(settings)
    run = RunDir.open(settings.run)
    run.check_finished("serve it")
    if is_ensemble_of_runs(run):
        refuse_variant(run, settings.variant)
        check_members(run, settings.row)
        return
    model_dir = run.variant(settings.variant).model_dir
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir} is missing; the run did not save its model")
    if settings.row is not None:
        from greentune.tasks.forecast.rows import row_for

        row_for(run, settings.variant or "fp32", settings.row)
