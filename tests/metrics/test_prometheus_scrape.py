"""A real Prometheus server scrapes a real attnserve server and answers queries on its counters.

Measured here (2 shared CPU cores): Prometheus 2.42 is ready in well under a second, and its first
scrape lands about 6 s after start (target discovery is synced every 5 s), so the test takes
~6 s beyond the server's own start.
"""

from __future__ import annotations

from pathlib import Path

from tests.metrics.live_server import LiveServer
from tests.metrics.prometheus_server import running_prometheus, wait_for_query

QUERY_TIMEOUT_S = 30


def test_prometheus_scrapes_the_request_counter(live_server: LiveServer, tmp_path: Path):
    method = live_server.traffic.unary_method
    sent_ok = live_server.traffic.sent[method, "OK"]
    query = f'sum(attnserve_requests_total{{method="{method}",code="OK"}})'
    with running_prometheus(f"127.0.0.1:{live_server.metrics_port}", tmp_path) as prometheus:
        result = wait_for_query(prometheus, query, QUERY_TIMEOUT_S)
    assert float(result[0]["value"][1]) == sent_ok
