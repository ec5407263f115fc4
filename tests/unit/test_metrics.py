"""Prometheus metrics from the status document: names, labels, values, the HTTP server."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from rcfs.metrics import StatusCollector, render, serve_metrics

STATUS: dict[str, Any] = {
    "requests": {"Heavy": {"sent": 12, "throttled_429": 1, "errors": 2, "bytes": 4096},
                 "Auth": {"sent": 1, "throttled_429": 0, "errors": 0, "bytes": 10}},
    "rate_limits": {"Heavy": {"limit": 10, "remaining": 3, "window": 60.0, "paused_until": 1e10,
                              "in_flight": 1,
                              "queued_by_priority": {"interactive": 1, "background": 0, "bulk": 4}}},
    "cache": {"bytes": 1000, "limit": 5000, "entries": 3, "hits": 7, "misses": 3, "archived": 2,
              "archived_bytes": 800, "damaged": 1},
    "downloads": {"active": 1, "queued": 2, "done": 5, "failed": 1, "bytes": 9000},
    "archive": {"enabled": True, "pending": 40, "done": 2, "at_risk": 3, "lost": 1,
                "rate_per_min": 9.5},
    "index": {"records": 50, "recordings": 45, "deleted": 2, "last_sync": "2026-12-01T00:00:00+00:00",
              "progress": {"days_indexed": 80, "days_total": 91}},
    "refresh": {"refreshes": 4, "failures": 1},
}


def families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_follow_the_status_document() -> None:
    collector = StatusCollector(
        lambda: STATUS,
        fuse=lambda: ({"lookup": 30, "read": 9}, {("lookup", "ENOENT"): 4}),
        operations=lambda: {("Heavy", "readCallRecordingContent"): 10, ("Heavy", "readCompanyCallLog"): 2},
        clock=lambda: 1_796_083_200.0 + 90,
    )
    m = families(render(collector).decode())
    assert m["rcfs_requests_total"][(("group", "Heavy"),)] == 12
    assert m["rcfs_throttled_total"][(("group", "Heavy"),)] == 1
    assert m["rcfs_request_errors_total"][(("group", "Heavy"),)] == 2
    content = (("group", "Heavy"), ("operation", "readCallRecordingContent"))
    assert m["rcfs_operation_requests_total"][content] == 10
    assert m["rcfs_rate_limit_remaining"][(("group", "Heavy"),)] == 3
    assert m["rcfs_rate_limit_paused"][(("group", "Heavy"),)] == 1
    assert m["rcfs_queue_depth"][(("group", "Heavy"), ("priority", "bulk"))] == 4
    assert m["rcfs_cache_hits_total"][()] == 7 and m["rcfs_cache_bytes"][()] == 1000
    assert m["rcfs_downloads_total"][(("result", "failed"),)] == 1
    assert m["rcfs_archive_pending"][()] == 40 and m["rcfs_archive_at_risk"][()] == 3
    assert m["rcfs_archive_lost"][()] == 1
    assert m["rcfs_index_records"][()] == 50
    assert m["rcfs_last_sync_timestamp_seconds"][()] == 1_796_083_200  # 2026-12-01T00:00:00Z
    assert m["rcfs_fuse_requests_total"][(("operation", "lookup"),)] == 30
    assert m["rcfs_fuse_errors_total"][(("errno", "ENOENT"), ("operation", "lookup"))] == 4
    assert m["rcfs_last_sync_age_seconds"][()] == 90
    assert m["rcfs_refresh_failures_total"][()] == 1
    assert m["rcfs_up"][()] == 1


def test_an_empty_status_still_renders() -> None:
    m = families(render(StatusCollector(dict)).decode())
    assert m["rcfs_up"][()] == 1 and m["rcfs_archive_enabled"][()] == 0


async def test_served_over_http_on_loopback() -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_metrics, "127.0.0.1", 0, StatusCollector(lambda: STATUS))
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        async with httpx.AsyncClient() as client:
            with trio.fail_after(10):
                r = await client.get(url)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            assert "rcfs_requests_total" in r.text
            with trio.fail_after(10):
                assert (await client.get(url.removesuffix("metrics") + "other")).status_code == 404
        nursery.cancel_scope.cancel()
