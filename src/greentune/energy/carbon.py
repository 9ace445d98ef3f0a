"""Grid carbon intensity: providers, a fallback wrapper and the emissions of one window.

Providers (registry ``CARBON_PROVIDERS``; build one with ``make_provider(name, **options)``):

- ``fixed``: one constant (tests, user overrides);
- ``static``: yearly country average from the table CodeCarbon ships;
- ``trace``: an hourly (or any regular) history in CSV files, generic or Electricity Maps export;
- ``electricitymaps``, ``uk``: live APIs (``energy.carbon_api``), with the network call injected.

Specs are the short form configs and the command line use (``parse_provider_spec``)::

    spec    := single ("|" single)*    later ones fill what the earlier ones do not cover
    single  := name [":" argument]
    fixed:250               250 g/kWh at all times
    static                  world average (same as static:WORLD)
    static:DE               country: ISO-3166 alpha-2 (DE, GB, AU) or alpha-3 (DEU), or WORLD
    trace:/path/file.csv    one CSV trace
    trace:/dir@GB           /dir/GB_*_hourly.csv, sorted and concatenated (zone after the last @)
    electricitymaps:DE      Electricity Maps API v3 (token in ELECTRICITYMAPS_TOKEN)
    uk                      National Grid ESO Carbon Intensity API (Great Britain)

All times are timezone-aware UTC inside; naive datetimes are refused with an EnergyError.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import json
import math
from collections.abc import Callable
from typing import Any, Protocol

from greentune.energy.base import J_PER_KWH, IntensityProvider, Segment, codecarbon_data_path
from greentune.energy.carbon_api import ElectricityMapsApi, UkCarbonIntensityApi
from greentune.energy.carbon_trace import TraceIntensity
from greentune.energy.intensity import (
    _US,
    CARBON_PROVIDERS,
    SPEC_ARGUMENTS,
    IntensityTrace,
    check_window,
    fmt_step,
    fmt_time,
    holes,
    log,
    require_utc,
)
from greentune.errors import ConfigError, EnergyError

__all__ = [
    "CARBON_PROVIDERS",
    "SPEC_ARGUMENTS",
    "ElectricityMapsApi",
    "FixedIntensity",
    "IntensityTrace",
    "StaticIntensity",
    "TraceIntensity",
    "UkCarbonIntensityApi",
    "WithFallback",
    "check_window",
    "emissions_g",
    "fmt_step",
    "fmt_time",
    "holes",
    "make_provider",
    "parse_provider_spec",
    "require_utc",
    "with_fallback",
]

# --- fixed and static ----------------------------------------------------------------------


class FixedIntensity:
    """One constant intensity at all times."""

    name = "fixed"

    def __init__(self, intensity_g_per_kwh: float) -> None:
        try:
            value = float(intensity_g_per_kwh)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"fixed carbon intensity must be a number >= 0 g/kWh, got {intensity_g_per_kwh!r}"
            )
        self.intensity_g_per_kwh = value

    def describe(self) -> str:
        return f"fixed: {self.intensity_g_per_kwh:g} g/kWh (set by the user)"

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        s, e = check_window(start, end)
        return [Segment(s, e, self.intensity_g_per_kwh)] if e > s else []


@functools.cache
def _codecarbon_table(name: str) -> dict[str, Any]:
    path = codecarbon_data_path("private_infra", name)
    try:
        table: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EnergyError(f"cannot read CodeCarbon's {path}: {exc}; reinstall codecarbon") from exc
    return table


def _alpha3(region: str) -> str:
    """'DE', 'deu', 'UK' -> 'DEU', 'DEU', 'GBR'; 'WORLD' stays."""
    code = region.strip().upper()
    if code == "UK":  # not ISO-3166 but what people write
        code = "GB"
    if len(code) == 2:
        import pycountry  # imported here: 40 ms that fixed and trace users need not pay

        country = pycountry.countries.get(alpha_2=code)
        if country is not None:
            code = country.alpha_3
    return code


class StaticIntensity:
    """Yearly average intensity of one country (or the world) from CodeCarbon's tables."""

    name = "static"

    def __init__(self, region: str = "WORLD") -> None:
        code = _alpha3(region)
        mix = _codecarbon_table("global_energy_mix.json")
        self.region = code
        if code == "WORLD":
            world = _codecarbon_table("carbon_intensity_per_source.json")
            self.intensity_g_per_kwh = float(world["world_average"])
            self.year: int | None = None
            self.country_name = "World"
            self.source = f"world average from {world['world_average_source']}"
        elif code in mix:
            row = mix[code]
            self.intensity_g_per_kwh = float(row["carbon_intensity"])
            self.year = int(row["year"])
            self.country_name = str(row["country_name"])
            self.source = f"yearly average {self.year}, Ember/Our World in Data"
        else:
            raise ConfigError(
                f"unknown region {region!r} for static carbon intensity; use an ISO-3166 "
                "alpha-2 or alpha-3 country code or WORLD, e.g. DE, DEU, GB, US, FR, AU, IN "
                f"({len(mix)} countries in CodeCarbon's global_energy_mix.json)"
            )

    def describe(self) -> str:
        table = "global_energy_mix.json" if self.year else "carbon_intensity_per_source.json"
        return (
            f"static {self.region}: {self.intensity_g_per_kwh:.2f} g/kWh "
            f"({self.source} via CodeCarbon's {table})"
        )

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        s, e = check_window(start, end)
        return [Segment(s, e, self.intensity_g_per_kwh)] if e > s else []


# --- fallback ----------------------------------------------------------------------------------


class PartialProvider(Protocol):
    """Providers that can say which parts of a window they cover without failing."""

    def covered_segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]: ...


def _covered_part(provider: IntensityProvider, s: dt.datetime, e: dt.datetime) -> list[Segment]:
    try:
        covered = getattr(provider, "covered_segments", None)
        return list(covered(s, e)) if covered else provider.segments(s, e)
    except EnergyError as exc:
        # A live API that is down must not stop the run when a fallback was configured.
        log.warning("carbon provider %s failed, using the fallback: %s", provider.name, exc)
        return []


class WithFallback:
    """``primary`` where it covers the window, ``fallback`` for the stretches it does not."""

    def __init__(self, primary: IntensityProvider, fallback: IntensityProvider) -> None:
        self.primary, self.fallback = primary, fallback
        self.name = f"{primary.name}+{fallback.name}"
        self.fallback_s = 0.0
        """Seconds priced by the fallback so far (the ledger can report the share)."""

    def describe(self) -> str:
        return f"{self.primary.describe()}; where it has no data: {self.fallback.describe()}"

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        s, e = check_window(start, end)
        if s == e:
            return []
        covered = _covered_part(self.primary, s, e)
        filled: list[Segment] = []
        for lo, hi in holes(covered, s, e):
            filled.extend(self.fallback.segments(lo, hi))
            self.fallback_s += (hi - lo).total_seconds()
        return sorted(covered + filled, key=lambda seg: seg.start)


def with_fallback(primary: IntensityProvider, fallback: IntensityProvider) -> IntensityProvider:
    return WithFallback(primary, fallback)


# --- registry, make_provider, specs -------------------------------------------------------------

CARBON_PROVIDERS.add("fixed", FixedIntensity)
CARBON_PROVIDERS.add("static", StaticIntensity)


def _options(factory: Callable[..., Any]) -> tuple[list[str], list[str]]:
    """(all option names, required option names) of a provider factory."""
    params = [
        p
        for p in inspect.signature(factory).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return [p.name for p in params], [p.name for p in params if p.default is p.empty]


def make_provider(name: str, **options: Any) -> IntensityProvider:
    """Provider ``name`` built with ``options``; ``fallback`` (a spec or a provider) wraps it."""
    fallback = options.pop("fallback", None)
    factory = CARBON_PROVIDERS.get(name)
    valid, required = _options(factory)
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"carbon provider {name!r} has no option {key!r}; valid options: "
                f"{', '.join([*valid, 'fallback'])}"
            )
    for key in required:
        if key not in options:
            raise ConfigError(f"carbon provider {name!r} needs the option {key!r}")
    provider = factory(**options)
    if fallback is None:
        return provider
    if isinstance(fallback, str):
        fallback = parse_provider_spec(fallback)
    return WithFallback(provider, fallback)


def _fixed_argument(arg: str) -> dict[str, Any]:
    try:
        return {"intensity_g_per_kwh": float(arg)}
    except ValueError:
        raise ConfigError(f"fixed needs a number of g/kWh, e.g. fixed:250, got {arg!r}") from None


SPEC_ARGUMENTS.add("fixed", _fixed_argument)
SPEC_ARGUMENTS.add("static", lambda arg: {"region": arg} if arg else {})


def _parse_single(spec: str) -> IntensityProvider:
    name, _, arg = spec.partition(":")
    name, arg = name.strip().lower(), arg.strip()
    if name not in CARBON_PROVIDERS:
        raise ConfigError(
            f"unknown carbon provider {name!r} in spec {spec!r}; valid: "
            f"{', '.join(CARBON_PROVIDERS.names())} (e.g. static:DE, fixed:250, trace:/dir@GB)"
        )
    if name in SPEC_ARGUMENTS:
        return make_provider(name, **SPEC_ARGUMENTS.get(name)(arg))
    if arg:
        raise ConfigError(f"carbon provider spec {spec!r}: {name} takes no argument")
    return make_provider(name)


def parse_provider_spec(spec: str) -> IntensityProvider:
    """A provider from a short spec (grammar in the module docstring)."""
    parts = [part.strip() for part in spec.split("|")]
    if not all(parts):
        raise ConfigError(
            f"empty carbon provider spec in {spec!r}; e.g. static:DE or trace:/dir@GB|static:GB"
        )
    provider = _parse_single(parts[-1])
    for part in reversed(parts[:-1]):
        provider = WithFallback(_parse_single(part), provider)
    return provider


# --- emissions ---------------------------------------------------------------------------------


def emissions_g(
    energy_j: float,
    start: dt.datetime,
    end: dt.datetime,
    provider: IntensityProvider,
    pue: float = 1.0,
) -> tuple[float, float]:
    """(emissions_g, time-weighted mean intensity_g_per_kwh) of energy spent evenly in a window.

    Spreading the energy uniformly over [start, end) means each segment gets its share of the
    time, so the grams are energy x PUE x the time-weighted mean intensity.
    """
    if not pue >= 1.0:
        raise ConfigError(f"PUE must be >= 1 (facility energy / IT energy), got {pue}")
    s, e = check_window(start, end)
    if s == e:
        intensity = provider.segments(s, s + _US)[0].intensity_g_per_kwh
    else:
        weighted_us = sum(
            ((seg.end - seg.start) // _US) * seg.intensity_g_per_kwh
            for seg in provider.segments(s, e)
        )
        intensity = weighted_us / ((e - s) // _US)
    return energy_j / J_PER_KWH * intensity * pue, intensity
