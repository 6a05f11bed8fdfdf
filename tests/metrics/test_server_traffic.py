"""/metrics of a real server after real traffic: counts match what was sent, every part of the
latency was observed, and the gauges read as an idle server's should."""

from __future__ import annotations

import pytest

from tests.metrics.exposition import scrape, total, value
from tests.metrics.live_server import LiveServer


@pytest.fixture(scope="module")
def exposition(live_server: LiveServer) -> str:
    return scrape(live_server.metrics_port)


def model_labels(live_server: LiveServer) -> dict[str, str]:
    return {"model": live_server.traffic.model, "version": live_server.traffic.version}


def test_requests_are_counted_per_method_and_code_as_sent(live_server: LiveServer, exposition):
    for (method, code), sent in live_server.traffic.sent.items():
        counted = total(exposition, "attnserve_requests_total", method=method, code=code)
        assert counted == sent, f"{method} {code}"
    assert total(exposition, "attnserve_requests_total") == sum(live_server.traffic.sent.values())


def test_generation_requests_carry_the_model_that_answered(live_server: LiveServer, exposition):
    labels = model_labels(live_server)
    method = live_server.traffic.unary_method
    ok = value(exposition, "attnserve_requests_total", method=method, code="OK", **labels)
    assert ok == live_server.traffic.sent[method, "OK"]


def test_request_durations_are_observed_for_every_request(live_server: LiveServer, exposition):
    traffic = live_server.traffic
    for method in (traffic.unary_method, traffic.stream_method, "ListModels"):
        sent = sum(n for (m, _), n in traffic.sent.items() if m == method)
        observed = total(exposition, "attnserve_request_duration_seconds_count", method=method)
        assert observed == sent, method
    duration = total(exposition, "attnserve_request_duration_seconds_sum", method=method)
    assert duration > 0


@pytest.mark.parametrize(
    "histogram",
    ["attnserve_queue_wait_seconds", "attnserve_time_to_first_token_seconds"],
)
def test_each_answered_request_is_observed_once(live_server: LiveServer, exposition, histogram):
    labels = model_labels(live_server)
    assert value(exposition, f"{histogram}_count", **labels) == live_server.traffic.generations


@pytest.mark.parametrize(
    "histogram",
    [
        "attnserve_encoder_duration_seconds",
        "attnserve_encoder_tokens_per_step",
        "attnserve_inter_token_seconds",
        "attnserve_decode_step_duration_seconds",
        "attnserve_decode_batch_size",
        "attnserve_time_per_output_token_seconds",
    ],
)
def test_step_histograms_have_observations(live_server: LiveServer, exposition, histogram):
    labels = model_labels(live_server)
    assert value(exposition, f"{histogram}_count", **labels) >= 1
    assert value(exposition, f"{histogram}_sum", **labels) > 0


def test_decode_steps_ran_at_least_one_row_each(live_server: LiveServer, exposition):
    labels = model_labels(live_server)
    steps = value(exposition, "attnserve_decode_batch_size_count", **labels)
    rows = value(exposition, "attnserve_decode_batch_size_sum", **labels)
    assert rows >= steps


def test_each_encoder_run_counts_the_input_tokens_it_encoded(live_server: LiveServer, exposition):
    """The traffic sends one request at a time, so each step's encoder runs one input."""
    labels, traffic = model_labels(live_server), live_server.traffic
    runs = value(exposition, "attnserve_encoder_duration_seconds_count", **labels)
    assert value(exposition, "attnserve_encoder_tokens_per_step_count", **labels) == runs
    assert runs == traffic.generations
    encoded = value(exposition, "attnserve_encoder_tokens_per_step_sum", **labels)
    assert encoded == traffic.input_tokens


def test_every_token_after_a_requests_first_is_one_inter_token_gap(
    live_server: LiveServer, exposition
):
    labels, traffic = model_labels(live_server), live_server.traffic
    gaps = value(exposition, "attnserve_inter_token_seconds_count", **labels)
    assert gaps == traffic.output_tokens - traffic.generations, "greedy defaults: no beams"


def test_token_counters_match_the_answers(live_server: LiveServer, exposition):
    labels, traffic = model_labels(live_server), live_server.traffic
    assert value(exposition, "attnserve_input_tokens_total", **labels) == traffic.input_tokens
    assert value(exposition, "attnserve_generated_tokens_total", **labels) == traffic.output_tokens


def test_an_idle_server_has_nothing_running_waiting_or_cached(live_server: LiveServer, exposition):
    labels = model_labels(live_server)
    assert value(exposition, "attnserve_requests_running", **labels) == 0
    assert value(exposition, "attnserve_requests_waiting", **labels) == 0
    assert value(exposition, "attnserve_kv_cache_bytes", **labels) == 0


def test_kv_cache_budget_is_the_configured_one(live_server: LiveServer, exposition):
    budget = value(exposition, "attnserve_kv_cache_budget_bytes", **model_labels(live_server))
    assert budget == live_server.kv_budget_bytes


def test_requests_the_engine_refuses_are_counted_with_their_reason(
    live_server: LiveServer, exposition
):
    traffic = live_server.traffic
    assert traffic.refused, "the traffic has refusals"
    for reason, sent in traffic.refused.items():
        counted = value(
            exposition, "attnserve_rejected_requests_total", model=traffic.model, reason=reason
        )
        assert counted == sent, reason


def test_every_served_model_has_its_info_and_load_time(live_server: LiveServer, exposition):
    for model in live_server.models:
        labels = {"model": model.name, "version": model.version}
        info = value(
            exposition,
            "attnserve_model_info",
            dtype=model.dtype,
            provider=model.provider,
            **labels,
        )
        assert info == 1
        assert value(exposition, "attnserve_model_load_duration_seconds", **labels) > 0
