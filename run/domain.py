"""Pure rules of running tasks: geodesy, track encoding, destinations and verification.

No I/O and no framework here: everything is a function of its arguments, so the service
layer, the tests and the benchmarks all exercise the same rules.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import shapely

EARTH_RADIUS_M: Final = 6_371_008.8
"""Mean Earth radius (IUGG), the sphere all distances here are measured on."""

# --------------------------------------------------------------------------- geodesy


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS84 points given in degrees.

    Exact on a sphere of radius `EARTH_RADIUS_M` (within ~0.5 % of the ellipsoid),
    symmetric, never negative, and well-behaved across the antimeridian and at the
    poles.
    """
    phi1 = math.radians(lat1)
    phi2 = math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, max(0.0, a))))


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """One GPS fix: device time in epoch milliseconds, position in degrees, and the
    device-reported horizontal accuracy in metres (None when the device gave none)."""

    ts_ms: int
    lat: float
    lon: float
    accuracy_m: float | None = None


def path_length_m(points: Iterable[TrackPoint]) -> float:
    """Sum of the great-circle legs between consecutive points, in the order given.

    Raw geometry: GPS jitter is counted as movement. Use `track_length_m` for the
    distance a run is credited with.
    """
    total = 0.0
    prev: TrackPoint | None = None
    for p in points:
        if prev is not None:
            total += haversine_m(prev.lat, prev.lon, p.lat, p.lon)
        prev = p
    return total


def track_length_m(points: Sequence[TrackPoint], min_step_m: float = 10.0, smooth_window_s: float = 5.0) -> float:
    """Distance in metres credited to a track (taken in timestamp order), robust to GPS
    jitter.

    Promise: a device standing still with a few metres of jitter accrues (almost)
    nothing, while a real path is measured to within about `min_step_m` plus some corner
    cutting. It never counts more than `path_length_m` of the smoothed positions.

    Definition: each position is first replaced by the mean of the positions recorded
    within `smooth_window_s` seconds of it (a centred moving average in time, narrowed
    near the ends of the track so that it stays centred). Then an
    anchor walks the smoothed track: a point is credited, and becomes the new anchor,
    only once it is at least max(`min_step_m`, that point's reported accuracy) from the
    current anchor. The remainder from the last anchor to the last point is credited at
    the end.
    """
    if len(points) < 2:
        return 0.0
    points = sorted(points, key=lambda p: p.ts_ms)
    smoothed = _smooth(points, smooth_window_s * 1000.0)
    a_lat, a_lon = smoothed[0]
    total = 0.0
    for (lat, lon), raw in zip(smoothed[1:], points[1:], strict=True):
        step = max(min_step_m, raw.accuracy_m or 0.0)
        d = haversine_m(a_lat, a_lon, lat, lon)
        if d >= step:
            total += d
            a_lat, a_lon = lat, lon
    last_lat, last_lon = smoothed[-1]
    return total + haversine_m(a_lat, a_lon, last_lat, last_lon)


def _wrap_lon(lon: float) -> float:
    """Longitude folded into [-180, 180)."""
    return (lon + 180.0) % 360.0 - 180.0


def _smooth(points: Sequence[TrackPoint], window_ms: float) -> list[tuple[float, float]]:
    """Centred moving average in time of a time-ordered track; longitudes averaged as offsets so that a window
    straddling the antimeridian does not average to 0.

    Near the ends the window narrows so that it stays centred (the first and last points are kept as
    they are): a one-sided window would pull the ends inwards and shorten every track by about
    speed x window.
    """
    out: list[tuple[float, float]] = []
    lo = hi = 0
    n = len(points)
    t_first, t_last = points[0].ts_ms, points[-1].ts_ms
    for p in points:
        half = min(window_ms, p.ts_ms - t_first, t_last - p.ts_ms)
        # Both bounds only move forward as p does, so two cursors suffice.
        while points[lo].ts_ms < p.ts_ms - half:
            lo += 1
        while hi + 1 < n and points[hi + 1].ts_ms <= p.ts_ms + half:
            hi += 1
        window = points[lo : hi + 1]
        lat = sum(q.lat for q in window) / len(window)
        dlon = sum(_wrap_lon(q.lon - p.lon) for q in window) / len(window)
        out.append((lat, _wrap_lon(p.lon + dlon) if dlon else p.lon))
    return out


def max_sustained_speed_mps(points: Sequence[TrackPoint], window_s: float) -> float:
    """Highest speed in m/s sustained over `window_s` seconds by a time-ordered track
    with strictly increasing timestamps.

    Definition: for every point j, take the latest point i with t[j] - t[i] >= window_s;
    the window's speed is the great-circle distance from i to j divided by t[j] - t[i].
    The result is the maximum over all such windows. A track shorter than `window_s` is
    one window, first to last. Because only the window's end points count, one noisy fix
    can move at most the few windows that end or start on it, and only by its error
    divided by `window_s`; driving moves every window.
    """
    n = len(points)
    if n < 2:
        return 0.0
    w_ms = window_s * 1000.0
    first, last = points[0], points[-1]
    if last.ts_ms - first.ts_ms < w_ms:
        return _speed_mps(first, last)
    best = 0.0
    i = 0
    for j in range(n):
        tj = points[j].ts_ms
        while i + 1 < j and tj - points[i + 1].ts_ms >= w_ms:
            i += 1
        if tj - points[i].ts_ms >= w_ms:
            best = max(best, _speed_mps(points[i], points[j]))
    return best


def _speed_mps(a: TrackPoint, b: TrackPoint) -> float:
    dt_s = (b.ts_ms - a.ts_ms) / 1000.0
    d = haversine_m(a.lat, a.lon, b.lat, b.lon)
    if dt_s <= 0:
        return math.inf if d > 0 else 0.0
    return d / dt_s


# ------------------------------------------------------------------ track encoding

TRACK_FORMAT_VERSION: Final = 1
# v1 layout (little-endian): header = version u8, base_ts_ms i64 (the first point's
# time); then 14 bytes per point = ts offset from base ms i32 (+-24.8 days), lat i32 and
# lon i32 in 1e-7 degrees (~1 cm), accuracy u16 decimetres (0xFFFF = unknown, capped at
# 6553.4 m). Every record is absolute relative to the header, so appending a batch is
# concatenation (no decode, and the store could even append with `track || batch`).
_HEADER: Final = struct.Struct("<Bq")
_RECORD: Final = struct.Struct("<iiiH")
_I32_MIN: Final = -(2**31)
_I32_MAX: Final = 2**31 - 1
_ACC_NONE: Final = 0xFFFF
_ACC_MAX: Final = 0xFFFE
_DEG_SCALE: Final = 10_000_000


class TrackEncodingError(ValueError):
    """A track cannot be encoded (point out of range) or the bytes are not a track."""

    code = "invalid_track"


def encode_track(points: Iterable[TrackPoint]) -> bytes:
    """Compact binary form of a track: 9 header bytes plus 14 bytes per point.

    Decoding gives the points back in the same order with timestamps exact, lat/lon
    within 5e-8 degrees and accuracy within 0.05 m (larger than 6553.4 m is stored as
    6553.4). The empty track encodes to b"". Raises `TrackEncodingError` for a
    coordinate outside WGS84 ranges, a negative or NaN accuracy, or a point more than
    ~24.8 days from the first one.
    """
    pts = list(points)
    if not pts:
        return b""
    base = pts[0].ts_ms
    return _HEADER.pack(TRACK_FORMAT_VERSION, base) + _pack_records(base, pts)


def append_encoded(existing: bytes, new_points: Iterable[TrackPoint]) -> bytes:
    """Encoding of the existing track followed by `new_points`, without decoding it.

    Equal to `encode_track(decode_track(existing) + list(new_points))` whenever that
    call succeeds; only the header is read. Raises `TrackEncodingError` like
    `encode_track`, or when `existing` is not an encoded track.
    """
    if not existing:
        return encode_track(new_points)
    base = _read_header(existing)
    return existing + _pack_records(base, list(new_points))


TRACK_HEADER_SIZE: Final = _HEADER.size
"""Bytes of an encoded track's header: `append_suffix` needs only this prefix of a stored track."""


def append_suffix(header: bytes, new_points: Iterable[TrackPoint]) -> bytes:
    """The bytes that `append_encoded(existing, new_points)` adds after `existing`, given
    only `existing[:TRACK_HEADER_SIZE]` (b"" for an empty track).

    Lets a store append a batch with `track = track || suffix` without reading the stored
    track: `existing + append_suffix(existing[:TRACK_HEADER_SIZE], pts)` equals
    `append_encoded(existing, pts)`. Raises `TrackEncodingError` like `append_encoded`.
    """
    if not header:
        return encode_track(new_points)
    return _pack_records(_read_header(header[:TRACK_HEADER_SIZE]), list(new_points))


def decode_track(data: bytes) -> list[TrackPoint]:
    """The points of an encoded track, in stored order. Raises `TrackEncodingError` when
    `data` is not a track of a known version."""
    if not data:
        return []
    base = _read_header(data)
    points: list[TrackPoint] = []
    for off, qlat, qlon, qacc in _RECORD.iter_unpack(memoryview(data)[_HEADER.size :]):
        lat = qlat / _DEG_SCALE
        lon = qlon / _DEG_SCALE
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise TrackEncodingError("track contains a coordinate out of range")
        acc = None if qacc == _ACC_NONE else qacc / 10.0
        points.append(TrackPoint(base + off, lat, lon, acc))
    return points


def _read_header(data: bytes) -> int:
    if len(data) < _HEADER.size:
        raise TrackEncodingError("track is truncated")
    version, base = _HEADER.unpack_from(data)
    if version != TRACK_FORMAT_VERSION:
        raise TrackEncodingError(f"unknown track format version {version}")
    if (len(data) - _HEADER.size) % _RECORD.size:
        raise TrackEncodingError("track is truncated")
    return int(base)


def _pack_records(base: int, points: Sequence[TrackPoint]) -> bytes:
    out = bytearray(_RECORD.size * len(points))
    for k, p in enumerate(points):
        offset = p.ts_ms - base
        if not _I32_MIN <= offset <= _I32_MAX:
            raise TrackEncodingError("point is more than 24 days away from the track start")
        # Written as `not a <= x <= b` so that NaN is rejected too.
        if not (-90.0 <= p.lat <= 90.0 and -180.0 <= p.lon <= 180.0):
            raise TrackEncodingError(f"coordinate out of range: lat={p.lat}, lon={p.lon}")
        if p.accuracy_m is None:
            qacc = _ACC_NONE
        elif p.accuracy_m >= 0.0:
            qacc = round(min(p.accuracy_m * 10.0, _ACC_MAX))
        else:
            raise TrackEncodingError(f"accuracy must be >= 0 metres, got {p.accuracy_m}")
        _RECORD.pack_into(
            out,
            k * _RECORD.size,
            offset,
            round(p.lat * _DEG_SCALE),
            round(p.lon * _DEG_SCALE),
            qacc,
        )
    return bytes(out)


# --------------------------------------------------------------------- destinations

MAX_GEOFENCE_VERTICES: Final = 200


class GeofenceError(ValueError):
    """A geofence is not a polygon this service accepts; the message says why."""

    code = "invalid_geofence"


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a task ends: a point with an arrival radius in metres, optionally with a
    geofence (the exterior ring of a polygon as (lon, lat) pairs, GeoJSON order, as
    returned by `validate_geofence`)."""

    lat: float
    lon: float
    radius_m: float
    geofence: Sequence[tuple[float, float]] | None = None


def is_at_destination(dest: Destination, lat: float, lon: float) -> bool:
    """True when the position is inside or on the geofence (if any), or within
    `radius_m` metres of the destination point.

    The geofence is tested in plain lon/lat coordinates, which is exact enough for the
    small polygons `validate_geofence` accepts but not for one straddling the
    antimeridian.
    """
    if haversine_m(dest.lat, dest.lon, lat, lon) <= dest.radius_m:
        return True
    if dest.geofence is None:
        return False
    return bool(shapely.Polygon(dest.geofence).covers(shapely.Point(lon, lat)))


def validate_geofence(geojson: object) -> list[tuple[float, float]]:
    """The exterior ring, as (lon, lat) pairs ending with the first one again, of a
    GeoJSON Polygon that is fit to be a task's geofence.

    Raises `GeofenceError` with a message fit for the merchant unless `geojson` is a
    JSON object (dict) with "type": "Polygon" and "coordinates" holding exactly one ring (holes are
    not supported), the ring is closed, has 3 to `MAX_GEOFENCE_VERTICES` vertices (the
    closing repeat not counted), every position is [lon, lat] or [lon, lat, alt] with
    finite numbers, lon in [-180, 180], lat in [-90, 90], spans less than 180 degrees of
    longitude, and the polygon is valid and simple (no self-intersection) with non-zero
    area.
    """
    if not isinstance(geojson, dict):
        raise GeofenceError("geofence must be a GeoJSON object")
    if geojson.get("type") != "Polygon":
        raise GeofenceError('geofence must be a GeoJSON geometry with "type": "Polygon"')
    rings = geojson.get("coordinates")
    if not isinstance(rings, (list, tuple)) or not rings:
        raise GeofenceError("geofence coordinates must be a non-empty list of rings")
    if len(rings) > 1:
        raise GeofenceError("geofence polygons with holes are not supported")
    raw_ring = rings[0]
    if not isinstance(raw_ring, (list, tuple)):
        raise GeofenceError("geofence ring must be a list of [lon, lat] positions")
    if len(raw_ring) < 4:
        raise GeofenceError("geofence ring needs at least 3 vertices plus the closing one")
    if len(raw_ring) - 1 > MAX_GEOFENCE_VERTICES:
        raise GeofenceError(f"geofence has more than {MAX_GEOFENCE_VERTICES} vertices")
    ring = [_parse_position(pos, k) for k, pos in enumerate(raw_ring)]
    if ring[0] != ring[-1]:
        raise GeofenceError("geofence ring is not closed: last position must equal the first")
    lons = [lon for lon, _ in ring]
    if max(lons) - min(lons) >= 180.0:
        raise GeofenceError("geofence spans 180 degrees of longitude or more")
    polygon = shapely.Polygon(ring)
    if not polygon.is_valid:
        raise GeofenceError(f"geofence is not a simple polygon: {shapely.is_valid_reason(polygon)}")
    if not polygon.area > 0.0:
        raise GeofenceError("geofence has zero area")
    return ring


def _parse_position(pos: object, index: int) -> tuple[float, float]:
    if not isinstance(pos, (list, tuple)) or len(pos) not in (2, 3):
        raise GeofenceError(f"geofence position {index} must be [lon, lat]")
    values: list[float] = []
    for v in pos:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise GeofenceError(f"geofence position {index} must hold finite numbers")
        values.append(float(v))
    lon, lat = values[0], values[1]
    if not -180.0 <= lon <= 180.0:
        raise GeofenceError(f"geofence position {index}: longitude {lon} not in [-180, 180]")
    if not -90.0 <= lat <= 90.0:
        raise GeofenceError(f"geofence position {index}: latitude {lat} not in [-90, 90]")
    return (lon, lat)


# --------------------------------------------------------------------- verification

RejectReason = Literal[
    "too_few_points",
    "time_limit_exceeded",
    "gap_in_track",
    "too_fast",
    "too_short",
    "not_at_destination",
]


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    """Thresholds of run verification; the defaults suit running.

    `min_step_m` and `smooth_window_s` are the jitter filter of `track_length_m`; `gps_error_m` is how far
    two ordinary fixes may sit off the true path between them, which the spike filter forgives.
    """

    max_speed_mps: float = 7.0
    speed_window_s: float = 30.0
    max_gap_s: float = 120.0
    max_gap_jump_m: float = 500.0
    min_points: int = 10
    min_step_m: float = 10.0
    smooth_window_s: float = 5.0
    gps_error_m: float = 15.0


DEFAULT_VERIFY_CONFIG: Final = VerifyConfig()
# The longest run of consecutive wild fixes (multipath) the track cleaner drops as one spike.
MAX_SPIKE_FIXES: Final = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of verifying a run: `ok` with `reason` None, or not ok with the first
    rule broken. `distance_m` (credited distance) and `duration_s` (first to last point)
    are filled in either way, for display and statistics."""

    ok: bool
    reason: RejectReason | None
    distance_m: float
    duration_s: float


def verify_run(
    points: Iterable[TrackPoint],
    dest: Destination,
    *,
    min_distance_m: float,
    accepted_at_ms: int,
    deadline_ms: int,
    finished_at_ms: int,
    config: VerifyConfig = DEFAULT_VERIFY_CONFIG,
) -> Verdict:
    """Decide whether a finished run earns its reward.

    The track is first cleaned: points are ordered by timestamp (the first of equal
    timestamps is kept), points before `accepted_at_ms` are ignored (distance run before
    accepting does not count), and GPS spikes are dropped: up to `MAX_SPIKE_FIXES`
    consecutive fixes that could not be reached from the last good fix at `max_speed_mps`
    (give or take `gps_error_m`), after which the track resumes at a fix that could be (a
    wild first fix, disowned by the two after it, is dropped too). A track that is fast
    throughout never resumes, so nothing of it is dropped.

    The rules, checked in this order, the first broken one being the reason:

    1. `too_few_points`: fewer than `min_points` points remain (and never zero points).
    2. `time_limit_exceeded`: `finished_at_ms` or the last point is after `deadline_ms`.
    3. `gap_in_track`: two consecutive points more than `max_gap_s` apart in time *and*
       more than `max_gap_jump_m` apart in space (a teleport while the recording was
       off).
    4. `too_fast`: `max_sustained_speed_mps(track, speed_window_s)` > `max_speed_mps`.
    5. `too_short`: `track_length_m` (jitter-filtered) < `min_distance_m`.
    6. `not_at_destination`: the last point is not `is_at_destination`.

    Integrity and cheating rules come before the "not there yet" ones, so a runner is
    told the most fundamental problem and a cheat is recorded as such.
    """
    track = _clean_track(points, accepted_at_ms, config.max_speed_mps, config.gps_error_m)
    distance_m = track_length_m(track, config.min_step_m, config.smooth_window_s)
    duration_s = (track[-1].ts_ms - track[0].ts_ms) / 1000.0 if track else 0.0

    def verdict(reason: RejectReason | None) -> Verdict:
        return Verdict(reason is None, reason, distance_m, duration_s)

    if len(track) < max(config.min_points, 1):
        return verdict("too_few_points")
    if finished_at_ms > deadline_ms or track[-1].ts_ms > deadline_ms:
        return verdict("time_limit_exceeded")
    if _has_gap(track, config.max_gap_s, config.max_gap_jump_m):
        return verdict("gap_in_track")
    if max_sustained_speed_mps(track, config.speed_window_s) > config.max_speed_mps:
        return verdict("too_fast")
    if distance_m < min_distance_m:
        return verdict("too_short")
    if not is_at_destination(dest, track[-1].lat, track[-1].lon):
        return verdict("not_at_destination")
    return verdict(None)


def _clean_track(
    points: Iterable[TrackPoint], accepted_at_ms: int, max_speed_mps: float, gps_error_m: float
) -> list[TrackPoint]:
    ordered: list[TrackPoint] = []
    for p in sorted(points, key=lambda q: q.ts_ms):
        if p.ts_ms >= accepted_at_ms and (not ordered or p.ts_ms != ordered[-1].ts_ms):
            ordered.append(p)
    if len(ordered) < 3:
        return ordered

    def reachable(a: TrackPoint, b: TrackPoint) -> bool:
        # Two noisy fixes of an honest track: no farther apart than max speed allows, plus GPS error.
        dt_s = (b.ts_ms - a.ts_ms) / 1000.0
        return haversine_m(a.lat, a.lon, b.lat, b.lon) <= max_speed_mps * dt_s + gps_error_m

    # A wild first fix: the next two agree with each other but not with it.
    while len(ordered) >= 3 and not reachable(ordered[0], ordered[1]) and reachable(ordered[1], ordered[2]):
        ordered.pop(0)
    kept = [ordered[0]]
    k = 1
    while k < len(ordered) - 1:
        cur = ordered[k]
        if not reachable(kept[-1], cur):
            # An excursion of up to MAX_SPIKE_FIXES wild fixes, after which the track resumes where it
            # could have got to from the last good fix: drop the excursion. The last fix is never dropped.
            resume = next(
                (
                    m
                    for m in range(k + 1, min(k + 1 + MAX_SPIKE_FIXES, len(ordered)))
                    if reachable(kept[-1], ordered[m])
                ),
                None,
            )
            if resume is not None:
                k = resume
                continue
        kept.append(cur)
        k += 1
    kept.append(ordered[-1])
    return kept


def _has_gap(track: Sequence[TrackPoint], max_gap_s: float, max_jump_m: float) -> bool:
    max_gap_ms = max_gap_s * 1000.0
    return any(
        b.ts_ms - a.ts_ms > max_gap_ms and haversine_m(a.lat, a.lon, b.lat, b.lon) > max_jump_m
        for a, b in itertools.pairwise(track)
    )
