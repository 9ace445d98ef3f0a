"""Graceful pause on SIGTERM: the contract schedulers and torchrun rely on.

While the training loop runs, a first SIGTERM only sets a flag. The loop samples the flag once
per optimizer step (it rides on the loss all-reduce, so every rank sees the same answer at no
extra collective), finishes that step, rank 0 writes a checkpoint at it, and the run ends with
status ``paused`` and exit code 143. Outside the training loop (data preparation, evaluation,
saving), or on a second SIGTERM, the process leaves at once with the same exit code; ``--resume``
then continues from the newest checkpoint.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

EXIT_CODE = 128 + signal.SIGTERM
"""143, the shell's code for 'terminated by SIGTERM': what a scheduler expects to see."""


class TrainingPaused(Exception):
    """Raised on every rank once the ranks agreed to pause and the checkpoint is written.

    Not a GreentuneError: it is no error, and the CLI must not turn it into exit code 2.
    """

    every_rank = True
    """The ranks stop together, so collectives on the way out (the ledger's gather) are safe."""

    def __init__(self, step: int) -> None:
        super().__init__(f"paused by SIGTERM after optimizer step {step}")
        self.step = step


class SignalStop(SystemExit):
    """SIGTERM outside the training loop, or a second one: leave now (exit code 143)."""


@dataclass
class _Requests:
    requested: bool = False
    pausable_depth: int = 0
    """> 0 while a training loop that can checkpoint runs in the main thread."""


_state = _Requests()


def install() -> None:
    """Route SIGTERM through this module (main thread only; elsewhere Python cannot)."""
    _state.requested = False
    _state.pausable_depth = 0
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handler)


def _handler(signum: int, frame: object) -> None:
    if _state.requested or _state.pausable_depth == 0:
        raise SignalStop(EXIT_CODE)
    _state.requested = True


def requested() -> bool:
    """True once SIGTERM arrived during a pausable training loop."""
    return _state.requested


@contextmanager
def pausable() -> Iterator[None]:
    """Mark the training loop: a SIGTERM inside it asks for a pause instead of an exit.

    A request the loop could not act on any more (it arrived after the loop's last check) ends
    the run on the way out, as a SIGTERM outside the loop would.
    """
    _state.pausable_depth += 1
    try:
        yield
    finally:
        _state.pausable_depth -= 1
    if _state.requested:
        raise SignalStop(EXIT_CODE)


def is_stop(exc: BaseException) -> bool:
    """Did SIGTERM end the run (paused, resumable) rather than an error?"""
    return isinstance(exc, TrainingPaused | SignalStop)
