"""Prometheus metrics: `--metrics HOST:PORT` serves `/metrics` in the text format.

Owns the metric names and the small HTTP server that exposes them. Every
figure is read at scrape time from the same sources as `status.json` (the
status document, the FUSE adapter's request counters, the limiter's
per-operation counts), so metrics and status can never disagree and nothing
is counted twice. Formats come from the official `prometheus_client` library
(a custom collector and `generate_latest`); the server is Hypercorn on trio
(the emulator's stack), bound to loopback unless told otherwise.

Names follow Prometheus conventions: `rcfs_` prefix, base units (seconds,
bytes), `_total` on counters, labels for the rate-limit group, operation,
priority and errno. Example alerts are in the README.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from functools import partial
from typing import Any, cast

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class StatusCollector(Collector):
    """Builds every metric from the status document and two counter maps, per scrape."""

    def __init__(
        self,
        status: Callable[[], Mapping[str, Any]],
        fuse: Callable[[], tuple[Mapping[str, int], Mapping[tuple[str, str], int]]] = lambda: ({}, {}),
        operations: Callable[[], Mapping[tuple[str, str], int]] = dict,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._status = status
        self._fuse = fuse
        self._operations = operations
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        st = self._status()
        yield from _api(st, self._operations())
        yield from _cache(st)
        yield from _archive(st.get("archive") or {})
        yield from _index(st, self._clock())
        yield from _fuse(*self._fuse())
        up = GaugeMetricFamily("rcfs_up", "1 while the rcfs daemon serves")
        up.add_metric([], 1)
        yield up


def _gauge(name: str, doc: str, value: Any, labels: list[str] | None = None) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    if value is not None and labels is None:
        g.add_metric([], float(value))
    return g


def _api(st: Mapping[str, Any], operations: Mapping[tuple[str, str], int]) -> Iterator[Metric]:
    requests = st.get("requests") or {}
    sent = CounterMetricFamily("rcfs_requests", "API requests sent, by rate-limit group",
                               labels=["group"])
    throttled = CounterMetricFamily("rcfs_throttled", "HTTP 429 responses, by rate-limit group",
                                    labels=["group"])
    errors = CounterMetricFamily("rcfs_request_errors", "failed API requests (transport errors, "
                                 "4xx other than 429, 5xx), by rate-limit group", labels=["group"])
    received = CounterMetricFamily("rcfs_response_bytes", "bytes received, by rate-limit group",
                                   labels=["group"])
    waits = CounterMetricFamily("rcfs_rate_limit_waits", "requests that waited a second or more "
                                "for a rate-limit slot", labels=["group"])
    waited = CounterMetricFamily("rcfs_rate_limit_wait_seconds", "seconds those requests waited",
                                 labels=["group"])
    for group, r in sorted(requests.items()):
        sent.add_metric([group], r.get("sent", 0))
        throttled.add_metric([group], r.get("throttled_429", 0))
        errors.add_metric([group], r.get("errors", 0))
        received.add_metric([group], r.get("bytes", 0))
        waits.add_metric([group], r.get("waits", 0))
        waited.add_metric([group], r.get("waited_s", 0))
    yield from (sent, throttled, errors, received, waits, waited)
    by_op = CounterMetricFamily("rcfs_operation_requests", "API requests sent, by rate-limit "
                                "group and operation (operationId)", labels=["group", "operation"])
    for (group, op), n in sorted(operations.items()):
        by_op.add_metric([group, op], n)
    yield by_op
    limits = st.get("rate_limits") or {}
    limit = GaugeMetricFamily("rcfs_rate_limit", "requests allowed per window", labels=["group"])
    remaining = GaugeMetricFamily("rcfs_rate_limit_remaining", "requests left in the current window",
                                  labels=["group"])
    window = GaugeMetricFamily("rcfs_rate_limit_window_seconds", "the rate-limit window",
                               labels=["group"])
    paused = GaugeMetricFamily("rcfs_rate_limit_paused", "1 while the group waits out a 429",
                               labels=["group"])
    in_flight = GaugeMetricFamily("rcfs_requests_in_flight", "requests sent, not yet answered",
                                  labels=["group"])
    queued = GaugeMetricFamily("rcfs_queue_depth", "requests waiting for a rate-limit slot",
                               labels=["group", "priority"])
    for group, g in sorted(limits.items()):
        limit.add_metric([group], g.get("limit", 0))
        remaining.add_metric([group], g.get("remaining", 0))
        window.add_metric([group], g.get("window", 0))
        paused.add_metric([group], 1 if g.get("paused_until") else 0)
        in_flight.add_metric([group], g.get("in_flight", 0))
        for priority, n in sorted((g.get("queued_by_priority") or {}).items()):
            queued.add_metric([group, priority], n)
    yield from (limit, remaining, window, paused, in_flight, queued)


def _cache(st: Mapping[str, Any]) -> Iterator[Metric]:
    cache = st.get("cache") or {}
    dl = st.get("downloads") or {}
    yield _gauge("rcfs_cache_bytes", "bytes in the LRU content cache", cache.get("bytes", 0))
    yield _gauge("rcfs_cache_limit_bytes", "the LRU content cache's bound (--cache-size)",
                 cache.get("limit", 0))
    yield _gauge("rcfs_cache_entries", "recordings in the LRU content cache", cache.get("entries", 0))
    yield _gauge("rcfs_archive_store_entries", "recordings in the permanent archive store",
                 cache.get("archived", 0))
    yield _gauge("rcfs_archive_store_bytes", "bytes in the permanent archive store",
                 cache.get("archived_bytes", 0))
    for name, key, doc in (("rcfs_cache_hits", "hits", "opens served from the cache"),
                           ("rcfs_cache_misses", "misses", "opens that needed a download"),
                           ("rcfs_cache_damaged", "damaged", "cached recordings found damaged "
                            "(digest mismatch)")):
        c = CounterMetricFamily(name, doc)
        c.add_metric([], cache.get(key, 0))
        yield c
    yield _gauge("rcfs_downloads_active", "downloads receiving a body", dl.get("active", 0))
    yield _gauge("rcfs_downloads_queued", "downloads waiting for a rate-limit slot", dl.get("queued", 0))
    done = CounterMetricFamily("rcfs_downloads", "downloads ended, by result", labels=["result"])
    done.add_metric(["done"], dl.get("done", 0))
    done.add_metric(["failed"], dl.get("failed", 0))
    yield done
    body = CounterMetricFamily("rcfs_download_bytes", "recording bytes downloaded")
    body.add_metric([], dl.get("bytes", 0))
    yield body


def _archive(a: Mapping[str, Any]) -> Iterator[Metric]:
    yield _gauge("rcfs_archive_enabled", "1 when mounted with --archive", 1 if a.get("enabled") else 0)
    yield _gauge("rcfs_archive_pending", "recordings that exist upstream and are not archived yet",
                 a.get("pending", 0))
    yield _gauge("rcfs_archive_done", "recordings in the archive store", a.get("done", 0))
    yield _gauge("rcfs_archive_at_risk", "pending recordings that will be deleted upstream before "
                 "the archive reaches them at the measured rate (archive mode only)",
                 a.get("at_risk") or 0)
    yield _gauge("rcfs_archive_lost", "recordings deleted upstream before rcfs had their content",
                 a.get("lost", 0))
    yield _gauge("rcfs_archive_rate_per_minute", "archive downloads a minute, measured",
                 a.get("rate_per_min", 0))


def _index(st: Mapping[str, Any], now: float) -> Iterator[Metric]:
    idx = st.get("index") or {}
    progress = idx.get("progress") or {}
    yield _gauge("rcfs_index_records", "call-log records in the index", idx.get("records", 0))
    yield _gauge("rcfs_index_recordings", "recordings that exist upstream", idx.get("recordings", 0))
    yield _gauge("rcfs_index_deleted", "recordings deleted upstream", idx.get("deleted", 0))
    yield _gauge("rcfs_index_days_indexed", "days of the --since window indexed",
                 progress.get("days_indexed", 0))
    yield _gauge("rcfs_index_days_total", "days of the --since window", progress.get("days_total", 0))
    last = _epoch(idx.get("last_sync"))
    yield _gauge("rcfs_last_sync_timestamp_seconds", "when the index was last brought up to date",
                 last or 0)
    yield _gauge("rcfs_last_sync_age_seconds", "seconds since the index was last brought up to date",
                 max(0.0, now - last) if last else None)
    ref = st.get("refresh") or {}
    for name, key, doc in (("rcfs_refreshes", "refreshes", "refreshes done"),
                           ("rcfs_refresh_failures", "failures", "refreshes that failed")):
        c = CounterMetricFamily(name, doc)
        c.add_metric([], ref.get(key, 0))
        yield c


def _fuse(requests: Mapping[str, int], errors: Mapping[tuple[str, str], int]) -> Iterator[Metric]:
    req = CounterMetricFamily("rcfs_fuse_requests", "FUSE requests handled, by operation",
                              labels=["operation"])
    for op, n in sorted(requests.items()):
        req.add_metric([op], n)
    yield req
    err = CounterMetricFamily("rcfs_fuse_errors", "FUSE requests answered with an error, by "
                              "operation and errno name", labels=["operation", "errno"])
    for (op, name), n in sorted(errors.items()):
        err.add_metric([op, name], n)
    yield err


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def render(collector: Collector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


async def serve_metrics(
    host: str, port: int, collector: Collector,
    *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve GET /metrics on host:port until cancelled; `task_status.started(url)`."""
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def metrics(request: Request) -> Response:
        # Inline: the status document is built from in-memory counters and a few
        # index seeks (~1 ms), like a read of .rcfs/status.json.
        return Response(render(collector), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("rcfs.metrics.http")
    config.graceful_timeout = 1.0
    config.include_server_header = False
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, cast(Any, app), config))
        bound = binds[0] if binds else f"{host}:{port}"
        url = (bound if bound.startswith("http") else f"http://{bound}") + "/metrics"
        log.info("metrics at %s", url)
        task_status.started(url)
