"""Errors that greentune raises on purpose. Each message says what went wrong and what to do."""

from __future__ import annotations


class GreentuneError(Exception):
    """Base class: the CLI prints the message as one red line and exits with code 2."""


class ConfigError(GreentuneError):
    """A config key, value or file is wrong."""


class DataError(GreentuneError):
    """Input data cannot be used as given (file, column, row named in the message)."""


class ModelError(GreentuneError):
    """A backbone, encoder or saved model cannot be loaded or built."""


class CheckpointError(GreentuneError):
    """A checkpoint or run directory is missing, incomplete or incompatible."""


class EnergyError(GreentuneError):
    """An energy counter, carbon-intensity source or ledger cannot be used as configured."""


class ScheduleError(GreentuneError):
    """A job file, carbon forecast or schedule cannot be used (file, job and key named)."""


class TrainingError(GreentuneError):
    """Training cannot go on as configured (a diverged loss, a callback that refuses)."""


class CompressError(GreentuneError):
    """A run cannot be compressed as asked, or a variant failed its checks (method named)."""


class StorageError(GreentuneError):
    """A file cannot be written (disk full, read-only file system, permission denied); the
    files written before are left complete."""


class TrackingError(GreentuneError):
    """An experiment tracker that cannot start: its package is missing or its store cannot be
    reached (tracker and what to do named)."""
