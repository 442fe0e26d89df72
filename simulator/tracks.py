"""Simulated GPS tracks: where a runner (or a cheater) is at each second, as a phone would report it.

Pure functions and plain data, no I/O: the scenario samples :meth:`Plan.fix` once per real second.

- **honest** runners follow a gently curved path to the destination at 2.5-4.5 m/s (with a slow
  pace wobble), fixes carry ~5 m of Gaussian noise and now and then a single wild fix (a GPS spike);
- **quitters** are honest but stop halfway and finish anyway;
- **drivers** take a car or a scooter (12-20 m/s) from further away;
- **teleporters** run for a while, then jump to the finish (a spoofed location).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Literal

EARTH_RADIUS_M = 6_371_008.8
Kind = Literal["honest", "quitter", "driver", "teleporter"]
KINDS: tuple[Kind, ...] = ("honest", "quitter", "driver", "teleporter")
GPS_SIGMA_M = 4.0  # per axis: ~5 m typical horizontal error
CORRELATION = 0.9  # of the error from one second to the next
SPIKE_CHANCE = 0.01
SPIKE_SIGMA_M = 40.0
SEGMENTS = 120


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m`` north and ``east_m`` east of (lat, lon) (local flat-earth, fine below ~50 km)."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lon) points."""
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def point_at(center: tuple[float, float], distance: float, bearing_deg: float) -> tuple[float, float]:
    """The point ``distance`` metres from ``center`` towards ``bearing_deg`` (0 = north)."""
    b = math.radians(bearing_deg)
    return offset(center[0], center[1], distance * math.cos(b), distance * math.sin(b))


@dataclass(frozen=True, slots=True)
class Fix:
    """One GPS fix as the API takes it."""

    ts_ms: int
    lat: float
    lon: float
    accuracy_m: float

    def as_json(self) -> dict[str, float | int]:
        """The API's point object."""
        lat, lon = round(self.lat, 7), round(self.lon, 7)
        return {"ts_ms": self.ts_ms, "lat": lat, "lon": lon, "accuracy_m": self.accuracy_m}


@dataclass
class Plan:
    """One runner's movement from ``start`` to ``end``: :meth:`fix` says where the phone thinks it is
    ``t`` seconds after the run was accepted; :attr:`duration_s` is when the runner presses finish."""

    kind: Kind
    start: tuple[float, float]
    end: tuple[float, float]
    speed_mps: float
    rng: random.Random
    stop_fraction: float = 1.0  # quitters stop part of the way
    jump_at_s: float | None = None  # teleporters jump to the end at this time
    dwell_s: float = 3.0  # standing at the end before pressing finish
    _path: list[tuple[float, float]] = field(default_factory=list, repr=False)
    _cum: list[float] = field(default_factory=list, repr=False)
    _phase: float = 0.0
    _err: tuple[float, float] = (0.0, 0.0)
    _last_t: float = 0.0

    def __post_init__(self) -> None:
        # A quadratic Bezier bowed sideways by up to 15 % of the distance: streets are not straight.
        d = distance_m(self.start, self.end)
        mid = ((self.start[0] + self.end[0]) / 2, (self.start[1] + self.end[1]) / 2)
        bow = self.rng.uniform(-0.15, 0.15) * d
        north = (self.end[0] - self.start[0]) * math.pi / 180 * EARTH_RADIUS_M
        east = (self.end[1] - self.start[1]) * math.pi / 180 * EARTH_RADIUS_M * math.cos(math.radians(mid[0]))
        norm = math.hypot(north, east) or 1.0
        ctrl = offset(mid[0], mid[1], -east / norm * bow, north / norm * bow)
        self._path = []
        for k in range(SEGMENTS + 1):
            u = k / SEGMENTS
            a, b, c = (1 - u) ** 2, 2 * (1 - u) * u, u**2
            self._path.append(
                (
                    a * self.start[0] + b * ctrl[0] + c * self.end[0],
                    a * self.start[1] + b * ctrl[1] + c * self.end[1],
                )
            )
        self._cum = [0.0]
        for p, q in itertools.pairwise(self._path):
            self._cum.append(self._cum[-1] + distance_m(p, q))
        self._phase = self.rng.uniform(0, 2 * math.pi)
        self._err = (self.rng.gauss(0, GPS_SIGMA_M), self.rng.gauss(0, GPS_SIGMA_M))

    @property
    def path_length_m(self) -> float:
        """Length of the intended path."""
        return self._cum[-1]

    @property
    def moving_s(self) -> float:
        """Seconds spent moving (until the stop, the jump or the end)."""
        if self.jump_at_s is not None:
            return self.jump_at_s
        return self.path_length_m * self.stop_fraction / self.speed_mps

    @property
    def duration_s(self) -> float:
        """Seconds from accept to pressing finish."""
        return self.moving_s + self.dwell_s + (8.0 if self.jump_at_s is not None else 0.0)

    def _along(self, s: float) -> tuple[float, float]:
        s = max(0.0, min(s, self.path_length_m))
        lo, hi = 0, len(self._cum) - 1
        while hi - lo > 1:
            m = (lo + hi) // 2
            if self._cum[m] <= s:
                lo = m
            else:
                hi = m
        seg = self._cum[hi] - self._cum[lo] or 1.0
        f = (s - self._cum[lo]) / seg
        (a_lat, a_lon), (b_lat, b_lon) = self._path[lo], self._path[hi]
        return a_lat + (b_lat - a_lat) * f, a_lon + (b_lon - a_lon) * f

    def true_position(self, t: float) -> tuple[float, float]:
        """Where the runner really is (or claims to be, for a teleporter) ``t`` seconds after accepting."""
        if self.jump_at_s is not None and t >= self.jump_at_s:
            return self.end
        # Pace wobbles by +-8 % over a minute or so; the integral keeps distance monotonic.
        wobble = 0.08 * 20.0 * (math.sin(t / 20.0 + self._phase) - math.sin(self._phase))
        s = self.speed_mps * (t + wobble)
        return self._along(min(s, self.path_length_m * self.stop_fraction))

    def fix(self, t: float, ts_ms: int) -> Fix:
        """The phone's fix at ``t`` (called with increasing ``t``): the true position plus GPS error, now
        and then a wild single fix (multipath)."""
        lat, lon = self.true_position(t)
        # A receiver's error wanders slowly (its filter correlates successive fixes): an AR(1) process
        # with a ~10 s memory and GPS_SIGMA_M per axis. Independent 5 m noise at 1 Hz would be a phone
        # no runner owns, and it looks like sprinting to any speed check.
        rho = CORRELATION ** max(0.0, t - self._last_t)
        keep = math.sqrt(max(0.0, 1 - rho * rho))
        self._err = (
            rho * self._err[0] + keep * self.rng.gauss(0, GPS_SIGMA_M),
            rho * self._err[1] + keep * self.rng.gauss(0, GPS_SIGMA_M),
        )
        self._last_t = t
        north, east = self._err
        # No spike while standing at the end: the server judges arrival by the last fix alone, and a wild
        # last fix would turn an honest run into not_at_destination (the spike filter needs a next fix).
        if t < self.moving_s and self.rng.random() < SPIKE_CHANCE:
            north, east = north + self.rng.gauss(0, SPIKE_SIGMA_M), east + self.rng.gauss(0, SPIKE_SIGMA_M)
        lat, lon = offset(lat, lon, north, east)
        return Fix(ts_ms, lat, lon, round(abs(self.rng.gauss(5.0, 1.5)) + 2.0, 1))


def speed_mps(kind: Kind, rng: random.Random) -> float:
    """A runner's pace (a driver's speed)."""
    return rng.uniform(12.0, 20.0) if kind == "driver" else rng.uniform(2.5, 4.5)


def start_distance_m(kind: Kind, speed: float, run_seconds: float, rng: random.Random) -> float:
    """How far from the destination a runner of ``kind`` starts, for a run lasting about ``run_seconds``.

    Honest runners (and quitters) start where ``run_seconds`` at their pace takes them to the door;
    drivers and teleporters start 0.3-3 km out, as someone who will not run it would."""
    if kind == "driver":
        return min(3000.0, max(300.0, speed * run_seconds * rng.uniform(0.6, 1.0)))
    if kind == "teleporter":
        return rng.uniform(1000.0, 2500.0)
    return speed * run_seconds / 1.05  # the bowed path is a few per cent longer than the straight line


def make_plan(
    kind: Kind,
    start: tuple[float, float],
    destination: tuple[float, float],
    radius_m: float,
    *,
    speed: float,
    rng: random.Random,
) -> Plan:
    """A plan of ``kind`` from ``start`` to a point well inside the arrival circle of ``destination``, on
    the circle's far side from ``start``: the run is never shorter than the way to the destination (an
    end point on the near side of a 120 m circle could leave a short run under the task's minimum)."""
    off, bearing = rng.uniform(0, 0.3 * radius_m), rng.uniform(0, 360)
    end = max(point_at(destination, off, bearing), point_at(destination, off, bearing + 180),
              key=lambda p: distance_m(start, p))  # fmt: skip
    plan = Plan(kind, start, end, speed, rng)
    if kind == "teleporter":
        plan.jump_at_s = rng.uniform(15.0, 25.0)
    elif kind == "quitter":
        # Stop part of the way, and at least two arrival radii short of the end: a quitter who gave up
        # inside the arrival circle has arrived.
        plan.stop_fraction = min(rng.uniform(0.35, 0.6), max(0.1, 1.0 - 2.0 * radius_m / plan.path_length_m))
    return plan
