"""Prometheus ``/metrics``: request counts and latencies, claim outcomes, outbox backlog, consumer lag,
cache hit ratios per level."""

from __future__ import annotations

import contextlib

from litestar import Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from picool import metrics
from picool.kernel import Kernel


async def refresh_gauges(kernel: Kernel) -> None:
    """Update the gauges that are sampled at scrape time."""
    with contextlib.suppress(Exception):
        metrics.OUTBOX_BACKLOG.set(await kernel.relay.backlog())
    for consumer in kernel.consumers:
        with contextlib.suppress(Exception):
            metrics.CONSUMER_LAG.labels(consumer.name).set(await consumer.lag())
    for name, cache in kernel.caches.items():
        st = cache.stats
        total = st.local_hits + st.redis_hits + st.misses
        for level, n in (("local", st.local_hits), ("redis", st.redis_hits), ("miss", st.misses)):
            metrics.CACHE_HITS.labels(name, level).set(n)
            metrics.CACHE_HIT_RATIO.labels(name, level).set(n / total if total else 0.0)


@get("/metrics", tags=["health"], include_in_schema=False)
async def metrics_endpoint(state: State) -> Response[bytes]:
    """The Prometheus text exposition of this process's metrics."""
    kernel: Kernel = state.kernel
    await refresh_gauges(kernel)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
