"""Prometheus metrics shared by every subsystem (one registry per process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "picool_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "picool_http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
CLAIMS = Counter(
    "picool_claims_total",
    "Coupon claim outcomes (ok, sold_out, limit_reached, not_open, rate_limited, denied)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "picool_rate_limited_total", "Requests refused by a rate limit", ["group", "by"], registry=REGISTRY
)
FAST_LANE = Counter(
    "picool_fast_lane_total",
    "Requests to fast routes, by route and the lane that answered (fast, or declined: litestar)",
    ["route", "lane"],
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge("picool_outbox_backlog", "Outbox rows waiting to be published", registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "picool_kafka_consumer_lag", "Messages not yet handled, per consumer", ["consumer"], registry=REGISTRY
)
CACHE_HITS = Gauge(
    "picool_cache_hits", "Cache lookups by cache and level (local, redis, miss)", ["cache", "level"], registry=REGISTRY
)
CACHE_HIT_RATIO = Gauge(
    "picool_cache_hit_ratio",
    "Share of lookups answered by each level, per cache",
    ["cache", "level"],
    registry=REGISTRY,
)


_CHILDREN: dict[tuple[int | str, ...], Any] = {}
_CHILDREN_MAX = 4096  # a client inventing methods must not grow this without end


def child(metric: Counter | Histogram, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per label set (``labels()`` takes a lock and builds a
    key): for series a hot path counts on every request. Past ``_CHILDREN_MAX`` label sets it looks up
    without keeping."""
    key: tuple[int | str, ...] = (id(metric), *labels)  # the metrics are module globals: their ids stay
    found = _CHILDREN.get(key)
    if found is None:
        found = metric.labels(*labels)
        if len(_CHILDREN) < _CHILDREN_MAX:
            _CHILDREN[key] = found
    return found
