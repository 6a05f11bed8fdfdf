"""ServerMetrics as Prometheus sees it: names, types, labels and values in the exposition."""

from __future__ import annotations

import socket
import time

import pytest
from prometheus_client import generate_latest

from service.api import metrics_http
from service.api.metrics_http import start_metrics_server
from service.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, Unavailable
from service.metrics import ServerMetrics, rejection_reason
from tests.metrics.conftest import MODEL, VERSION, report_one_of_everything
from tests.metrics.exposition import families, scrape, value

M = ("model", "version")
# The names and labels the dashboard, the alert rules and the autoscaler are written against.
CATALOGUE = {
    "attnserve_requests": ("counter", {*M, "method", "code"}),
    "attnserve_request_duration_seconds": ("histogram", {*M, "method"}),
    "attnserve_queue_wait_seconds": ("histogram", set(M)),
    "attnserve_encoder_duration_seconds": ("histogram", set(M)),
    "attnserve_encoder_tokens_per_step": ("histogram", set(M)),
    "attnserve_inter_token_seconds": ("histogram", set(M)),
    "attnserve_time_to_first_token_seconds": ("histogram", set(M)),
    "attnserve_time_per_output_token_seconds": ("histogram", set(M)),
    "attnserve_decode_batch_size": ("histogram", set(M)),
    "attnserve_decode_step_duration_seconds": ("histogram", set(M)),
    "attnserve_decode_step_host_seconds": ("histogram", set(M)),
    "attnserve_step_host_to_device_bytes": ("counter", set(M)),
    "attnserve_step_device_to_host_bytes": ("counter", set(M)),
    "attnserve_kv_allocations": ("counter", set(M)),
    "attnserve_session_runs": ("counter", set(M)),
    "attnserve_requests_running": ("gauge", set(M)),
    "attnserve_requests_waiting": ("gauge", set(M)),
    "attnserve_input_tokens": ("counter", set(M)),
    "attnserve_generated_tokens": ("counter", set(M)),
    "attnserve_kv_cache_bytes": ("gauge", set(M)),
    "attnserve_kv_cache_budget_bytes": ("gauge", set(M)),
    "attnserve_rejected_requests": ("counter", {"model", "reason"}),
    "attnserve_model_info": ("gauge", {*M, "dtype", "provider", "architecture"}),
    "attnserve_model_load_duration_seconds": ("gauge", set(M)),
}


def exposition(metrics: ServerMetrics) -> str:
    return generate_latest(metrics.registry).decode()


@pytest.mark.parametrize("family", sorted(CATALOGUE))
def test_every_catalogued_metric_has_its_type_and_labels(metrics: ServerMetrics, family: str):
    report_one_of_everything(metrics)
    kind, labels = CATALOGUE[family]
    exposed = families(exposition(metrics))
    assert family in exposed, f"{family} is not exposed"
    exposed_kind, samples = exposed[family]
    assert exposed_kind == kind
    assert samples, f"{family} has no samples"
    for sample in samples:
        assert set(sample.labels) - {"le"} == labels


def test_requests_are_counted_per_method_and_code(metrics: ServerMetrics):
    for code in ("OK", "OK", "INVALID_ARGUMENT"):
        metrics.request_finished(MODEL, VERSION, "Summarize", code, 0.1)
    metrics.request_finished(MODEL, VERSION, "SummarizeStream", "OK", 0.2)
    text = exposition(metrics)
    count = "attnserve_requests_total"
    assert value(text, count, method="Summarize", code="OK") == 2
    assert value(text, count, method="Summarize", code="INVALID_ARGUMENT") == 1
    assert value(text, count, method="SummarizeStream", code="OK") == 1
    duration = "attnserve_request_duration_seconds"
    assert value(text, f"{duration}_count", method="Summarize") == 3
    assert value(text, f"{duration}_sum", method="Summarize") == pytest.approx(0.3)


def test_decode_step_observes_batch_rows_and_duration(metrics: ServerMetrics):
    metrics.decode_step(MODEL, VERSION, batch_rows=3, seconds=0.006)
    text = exposition(metrics)
    rows = "attnserve_decode_batch_size_bucket"
    assert value(text, rows, model=MODEL, le="2.0") == 0
    assert value(text, rows, model=MODEL, le="4.0") == 1
    step = "attnserve_decode_step_duration_seconds"
    assert value(text, f"{step}_sum", model=MODEL) == pytest.approx(0.006)


def test_batch_size_buckets_reach_256_rows(metrics: ServerMetrics):
    metrics.decode_step(MODEL, VERSION, batch_rows=256, seconds=0.5)
    text = exposition(metrics)
    assert value(text, "attnserve_decode_batch_size_bucket", le="128.0") == 0
    assert value(text, "attnserve_decode_batch_size_bucket", le="256.0") == 1


@pytest.mark.parametrize(
    ("seconds", "first_bucket"), [(0.0008, "0.001"), (0.3, "0.5"), (45.0, "60.0")]
)
def test_latency_buckets_span_milliseconds_to_a_minute(
    metrics: ServerMetrics, seconds: float, first_bucket: str
):
    metrics.first_token(MODEL, VERSION, seconds)
    text = exposition(metrics)
    buckets = {
        sample.labels["le"]: sample.value
        for sample in families(text)["attnserve_time_to_first_token_seconds"][1]
        if sample.name.endswith("_bucket")
    }
    filled = [le for le, count in buckets.items() if count == 1 and le != "+Inf"]
    assert min(filled, key=float) == first_bucket


def test_queue_state_gauges_hold_the_latest_values(metrics: ServerMetrics):
    metrics.set_queue_state(MODEL, VERSION, running=4, waiting=9)
    metrics.set_queue_state(MODEL, VERSION, running=2, waiting=0)
    text = exposition(metrics)
    assert value(text, "attnserve_requests_running", model=MODEL) == 2
    assert value(text, "attnserve_requests_waiting", model=MODEL) == 0


def test_kv_cache_gauges_hold_used_and_budget_bytes(metrics: ServerMetrics):
    metrics.set_kv_cache(MODEL, VERSION, used_bytes=1 << 20, budget_bytes=1 << 30)
    text = exposition(metrics)
    assert value(text, "attnserve_kv_cache_bytes", model=MODEL) == 1 << 20
    assert value(text, "attnserve_kv_cache_budget_bytes", model=MODEL) == 1 << 30


def test_tokens_accumulate_over_requests(metrics: ServerMetrics):
    metrics.tokens(MODEL, VERSION, input_tokens=10, generated_tokens=4)
    metrics.tokens(MODEL, VERSION, input_tokens=5, generated_tokens=6)
    text = exposition(metrics)
    assert value(text, "attnserve_input_tokens_total", model=MODEL) == 15
    assert value(text, "attnserve_generated_tokens_total", model=MODEL) == 10


def test_rejections_are_counted_by_reason(metrics: ServerMetrics):
    metrics.rejected(MODEL, "queue_full")
    metrics.rejected(MODEL, "queue_full")
    metrics.rejected(MODEL, "draining")
    text = exposition(metrics)
    assert value(text, "attnserve_rejected_requests_total", reason="queue_full") == 2
    assert value(text, "attnserve_rejected_requests_total", reason="draining") == 1


def test_model_info_is_one_with_the_model_described_in_labels(metrics: ServerMetrics):
    metrics.model_loaded(
        MODEL,
        VERSION,
        dtype="fp16",
        provider="CUDAExecutionProvider",
        architecture="T5ForConditionalGeneration",
        seconds=2.25,
    )
    text = exposition(metrics)
    info = value(text, "attnserve_model_info", model=MODEL, version=VERSION, dtype="fp16")
    assert info == 1
    assert value(text, "attnserve_model_info", provider="CUDAExecutionProvider") == 1
    assert value(text, "attnserve_model_load_duration_seconds", model=MODEL) == 2.25
    # the HPA's series exists before the first request, at zero
    assert value(text, "attnserve_queue_wait_seconds_count", model=MODEL, version=VERSION) == 0


def test_an_unloaded_version_leaves_no_series_and_its_successor_keeps_its_own(
    metrics: ServerMetrics,
):
    """A server rolling versions for months must not keep a set of series per version it ever
    served: counters and histograms go with the gauges, the next version's stay."""
    report_one_of_everything(metrics)
    successor = str(int(VERSION) + 1)
    metrics.model_loaded(
        MODEL, successor, dtype="fp32", provider="CPUExecutionProvider",
        architecture="BartForConditionalGeneration", seconds=1.0,
    )  # fmt: skip
    metrics.request_finished(MODEL, successor, "Summarize", "OK", 0.05)
    metrics.model_unloaded(MODEL, VERSION)
    exposed = families(exposition(metrics))
    left = [
        (name, sample.labels)
        for name, (_, samples) in exposed.items()
        for sample in samples
        if sample.labels.get("version") == VERSION
    ]
    assert not left
    text = exposition(metrics)
    assert value(text, "attnserve_requests_total", model=MODEL, version=successor) == 1
    assert value(text, "attnserve_model_info", version=successor) == 1
    assert value(text, "attnserve_queue_wait_seconds_count", version=successor) == 0
    assert value(text, "attnserve_rejected_requests_total", model=MODEL) == 1  # per model


def test_two_servers_in_one_process_keep_separate_counts():
    first, second = ServerMetrics(), ServerMetrics()
    first.request_finished(MODEL, VERSION, "Summarize", "OK", 0.1)
    assert value(exposition(first), "attnserve_requests_total") == 1
    assert value(exposition(second), "attnserve_requests_total") is None


def test_process_metrics_of_the_library_are_exposed(metrics: ServerMetrics):
    exposed = families(exposition(metrics))
    assert "python_info" in exposed
    assert exposed["process_resident_memory_bytes"][1][0].value > 0


def test_metrics_endpoint_serves_the_exposition_over_http(served_metrics_port: int):
    text = scrape(served_metrics_port)
    assert value(text, "attnserve_requests_total", method="Summarize", code="OK") == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ResourceExhausted("the request queue is full"), "resource_exhausted"),
        (Unavailable("draining"), "unavailable"),
        (DeadlineExceeded("expired while waiting"), "deadline_exceeded"),
        (InvalidArgument("text is empty"), "invalid_argument"),
    ],
)
def test_rejection_reason_names_the_status_code_the_client_gets(error: Exception, reason: str):
    assert rejection_reason(error) == reason


def test_the_ipv4_wildcard_serves_ipv6_scrapers_too(metrics: ServerMetrics):
    """On `0.0.0.0` (the container default) the endpoint also answers on IPv6, as the gRPC port
    does, where the machine has IPv6: an IPv6 cluster scrapes the pod's IPv6 address."""
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    metrics.request_finished(MODEL, VERSION, "Summarize", "OK", 0.1)
    server, port = start_metrics_server(metrics, "0.0.0.0", 0)
    try:
        for host in ("127.0.0.1", "[::1]"):
            assert value(scrape(port, host), "attnserve_requests_total") == 1, host
    finally:
        server.shutdown()
        server.server_close()


def _has_ipv6_loopback() -> bool:
    """Whether ::1 can be bound here (socket.has_ipv6 only says how Python was built)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_a_connection_that_says_nothing_or_trickles_is_closed_at_the_deadline(
    metrics: ServerMetrics, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
):
    """Each idle or trickling connection held one of the endpoint's threads for good; now it
    is closed at the deadline, without a traceback, and scrapes go on."""
    monkeypatch.setattr(metrics_http, "CONNECTION_S", 0.5)
    metrics.request_finished(MODEL, VERSION, "Summarize", "OK", 0.1)
    server, port = start_metrics_server(metrics, "127.0.0.1", 0)
    try:
        for sent in (b"", b"GET /metrics HTTP/1.1\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
                idle.sendall(sent)
                assert idle.recv(4096) == b""  # closed by the server, not a socket.timeout
        with socket.create_connection(("127.0.0.1", port), timeout=10) as trickling:
            started = time.monotonic()
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n" * 10:  # 0.1 s a byte
                    trickling.sendall(bytes([byte]))
                    time.sleep(0.1)
            assert time.monotonic() - started < 5
        assert value(scrape(port), "attnserve_requests_total") == 1
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capfd.readouterr().err
