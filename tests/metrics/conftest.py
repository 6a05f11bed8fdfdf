"""Fixtures of the metrics tests: a ServerMetrics that every kind of event was reported to, and
its /metrics endpoint on a free port."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from service.api.metrics_http import start_metrics_server
from service.metrics import ServerMetrics
from tests.metrics.live_server import LiveServer, live_server_after_traffic

MODEL, VERSION = "summarizer", "3"


def report_one_of_everything(metrics: ServerMetrics) -> None:
    """What the engine and the interceptor report for one request served and one rejected."""
    metrics.model_loaded(
        MODEL,
        VERSION,
        dtype="fp32",
        provider="CPUExecutionProvider",
        architecture="BartForConditionalGeneration",
        seconds=1.5,
    )
    metrics.rejected(MODEL, "queue_full")
    metrics.queue_wait(MODEL, VERSION, 0.004)
    metrics.encoder_ran(MODEL, VERSION, 0.02, tokens=24)
    metrics.decode_step(MODEL, VERSION, batch_rows=3, seconds=0.006)
    metrics.step_costs(MODEL, VERSION, 0.001, 96, 4 * 3 * 50, 12, 1)
    metrics.first_token(MODEL, VERSION, 0.03)
    metrics.token_interval(MODEL, VERSION, 0.006)
    metrics.inter_token_gaps(MODEL, VERSION, [0.006, 0.25])
    metrics.set_queue_state(MODEL, VERSION, running=1, waiting=2)
    metrics.set_kv_cache(MODEL, VERSION, used_bytes=4096, budget_bytes=1 << 30)
    metrics.tokens(MODEL, VERSION, input_tokens=12, generated_tokens=7)
    metrics.request_finished(MODEL, VERSION, "Summarize", "OK", 0.08)


@pytest.fixture
def metrics() -> ServerMetrics:
    return ServerMetrics()


@pytest.fixture
def served_metrics_port(metrics: ServerMetrics) -> Iterator[int]:
    """The port of a live /metrics endpoint serving `metrics`, after one of everything."""
    report_one_of_everything(metrics)
    server, port = start_metrics_server(metrics, "127.0.0.1", 0)
    yield port
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: `make tools` installs Debian's prometheus package")
    return path


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    """A real server on the demo models, after the traffic of `live_server.send_traffic`."""
    with live_server_after_traffic() as server:
        yield server
