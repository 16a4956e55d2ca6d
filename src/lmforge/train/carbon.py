"""Energy and CO2 of a run: codecarbon's offline tracker, with a fallback that can never fail.

Default country: "USA" (ISO 3166 alpha-3, as codecarbon expects). codecarbon's offline mode needs
one country to pick a grid carbon intensity; the United States is where most of the published
models whose `co2_eq_emissions` cards we compare with were trained, and its intensity (~370 g/kWh)
is close to the world average (~440-480 g/kWh). Pass `--country FRA`, `DEU`, ... for yours.

The tracker measures this process only (`tracking_mode="process"`), so the values of all ranks of a
distributed run are summed without counting a machine twice. If codecarbon cannot start or stop
(no sensors, no network, a crash, or it takes longer than `TIMEOUT_S`), the energy is estimated as
FALLBACK_WATTS_PER_THREAD x torch threads x wall time, at the world-average intensity.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import torch

DEFAULT_COUNTRY = "USA"
TIMEOUT_S = 30.0
FALLBACK_WATTS_PER_THREAD = 10.0  # a 200 W server CPU over 20 cores; documented estimate, not a measurement
WORLD_G_CO2_PER_KWH = 475.0  # IEA world-average grid intensity, used only by the fallback


@dataclass
class EnergyReading:
    """Energy in kWh, emissions in kg CO2-equivalent, and how they were obtained."""

    kwh: float
    kg_co2: float
    source: str  # "codecarbon" or "estimate"
    country: str


def _call_with_timeout(function, timeout_s: float):
    """Run `function()` in a daemon thread; return its result, or raise TimeoutError / its exception."""
    box: dict = {}

    def target():
        try:
            box["value"] = function()
        except BaseException as error:  # reported to the caller, never raised in the thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"codecarbon took longer than {timeout_s:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def grid_country(country: str | None) -> str:
    """The ISO 3166 alpha-3 code of the electricity grid: `country`, or DEFAULT_COUNTRY when not given."""
    return (country or DEFAULT_COUNTRY).upper()


class EnergyMeter:
    """start() when training starts, stop() when it ends; stop() always returns an `EnergyReading`."""

    def __init__(self, country: str | None = None, use_codecarbon: bool = True, timeout_s: float = TIMEOUT_S):
        self.country = grid_country(country)
        self.use_codecarbon = use_codecarbon
        self.timeout_s = timeout_s
        self.tracker = None
        self.problem: str | None = None  # why the fallback was used
        self.started_at: float | None = None

    def start(self) -> None:
        self.started_at = time.perf_counter()
        if not self.use_codecarbon:
            self.problem = "codecarbon disabled"
            return
        try:
            self.tracker = _call_with_timeout(self._start_tracker, self.timeout_s)
        except BaseException as error:  # codecarbon must never stop training
            self.tracker, self.problem = None, f"codecarbon could not start ({error})"

    def _start_tracker(self):
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        tracker = OfflineEmissionsTracker(country_iso_code=self.country, save_to_file=False, log_level="error",
                                          tracking_mode="process", measure_power_secs=15,
                                          allow_multiple_runs=True)
        tracker.start()
        return tracker

    def stop(self) -> EnergyReading:
        elapsed = time.perf_counter() - (self.started_at or time.perf_counter())
        if self.tracker is not None:
            try:
                kg = _call_with_timeout(self.tracker.stop, self.timeout_s)
                data = self.tracker.final_emissions_data
                if kg is not None and data is not None:
                    return EnergyReading(float(data.energy_consumed), float(kg), "codecarbon", self.country)
                self.problem = "codecarbon returned no data"
            except BaseException as error:
                self.problem = f"codecarbon could not stop ({error})"
            self.tracker = None
        return estimate(elapsed, self.country)


def estimate(seconds: float, country: str) -> EnergyReading:
    """The fallback: FALLBACK_WATTS_PER_THREAD per torch thread for `seconds`, at the world-average intensity."""
    kwh = FALLBACK_WATTS_PER_THREAD * torch.get_num_threads() * seconds / 3.6e6
    return EnergyReading(kwh, kwh * WORLD_G_CO2_PER_KWH / 1000.0, "estimate", country)
