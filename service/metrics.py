"""Every Prometheus collector of attnserve, and the /metrics HTTP endpoint that serves them.

The engine and the gRPC interceptor never touch prometheus_client: they call the small,
intention-named methods of `ServerMetrics` ("a decode step ran", "a request was rejected"), so
that names, labels and buckets are decided here, once.

Each `ServerMetrics` holds its collectors on its own CollectorRegistry, so that tests can run
several servers in one process. If the environment variable PROMETHEUS_MULTIPROC_DIR names a
directory when prometheus_client is first imported, values live in memory-mapped files there and
/metrics merges the files of every process (prometheus_client's multiprocess mode); the
process/platform/GC collectors are then left out, as they would describe one process only.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    multiprocess,
    platform_collector,
    process_collector,
)
from prometheus_client.metrics import MetricWrapperBase

from service.errors import status_name

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latencies of whole requests and their parts: from a millisecond (queue wait on an idle server,
# the encoder of a short text) to a minute (long beam-search generations on CPU).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
# One decode step, or the time between two output tokens: sub-millisecond for tiny models,
# up to a second for a full batch of a large model on CPU.
STEP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# The time between two tokens of one stream: a decode step, or up to seconds when the stream
# waited for newcomers' encoders (the stutter --max-encoder-tokens-per-step bounds).
INTER_TOKEN_BUCKETS = (*STEP_BUCKETS, 2.5, 5.0)
# Decode rows in one step (a beam request takes num_beams rows); max_batch_rows is at most 256.
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Encoder tokens one step runs for its newcomers: one short text to many long ones (a full-length
# BART input is 1,024 tokens, a ViT-base image 197 patches).
ENCODER_TOKENS_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)

MODEL = ("model", "version")


def multiprocess_mode() -> bool:
    """Whether values are shared through files in PROMETHEUS_MULTIPROC_DIR."""
    return bool(os.environ.get(MULTIPROC_ENV))


class ServerMetrics:
    """The collectors of one attnserve server, and what its parts report to them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        if not multiprocess_mode():
            process_collector.ProcessCollector(registry=self.registry)
            platform_collector.PlatformCollector(registry=self.registry)
            gc_collector.GCCollector(registry=self.registry)
        reg = self.registry
        self._per_version: list[tuple[MetricWrapperBase, tuple[str, ...]]] = []

        self._requests = self._versioned(
            Counter,
            "attnserve_requests_total",
            "RPCs finished, by method and gRPC status code.",
            ("method", "code"),
        )
        self._request_duration = self._versioned(
            Histogram,
            "attnserve_request_duration_seconds",
            "RPC duration from arrival to the last response message or error.",
            ("method",),
            buckets=LATENCY_BUCKETS,
        )
        self._queue_wait = self._versioned(
            Histogram,
            "attnserve_queue_wait_seconds",
            "Time a request waited in the queue before its first step ran.",
            buckets=LATENCY_BUCKETS,
        )
        self._encoder_duration = self._versioned(
            Histogram,
            "attnserve_encoder_duration_seconds",
            "Duration of one encoder run (over all requests it encoded together).",
            buckets=LATENCY_BUCKETS,
        )
        self._encoder_tokens = self._versioned(
            Histogram,
            "attnserve_encoder_tokens_per_step",
            "Encoder tokens one step ran for the requests it admitted (requests x the longest "
            "one's input tokens or image patches), before its decoder call.",
            buckets=ENCODER_TOKENS_BUCKETS,
        )
        self._time_to_first_token = self._versioned(
            Histogram,
            "attnserve_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
            buckets=LATENCY_BUCKETS,
        )
        self._time_per_output_token = self._versioned(
            Histogram,
            "attnserve_time_per_output_token_seconds",
            "Mean time between output tokens of a request, after the first.",
            buckets=STEP_BUCKETS,
        )
        self._inter_token = self._versioned(
            Histogram,
            "attnserve_inter_token_seconds",
            "Time between two consecutive tokens of one request, as the engine produced them "
            "(not beam search, whose answer arrives whole).",
            buckets=INTER_TOKEN_BUCKETS,
        )
        self._decode_batch_size = self._versioned(
            Histogram,
            "attnserve_decode_batch_size",
            "Decode rows in one step (a beam-search request takes num_beams rows).",
            buckets=BATCH_ROWS_BUCKETS,
        )
        self._decode_step_duration = self._versioned(
            Histogram,
            "attnserve_decode_step_duration_seconds",
            "Duration of one decode step over the whole batch.",
            buckets=STEP_BUCKETS,
        )
        self._step_host_seconds = self._versioned(
            Histogram,
            "attnserve_decode_step_host_seconds",
            "Part of one engine step spent outside ONNX Runtime runs (Python, numpy).",
            buckets=STEP_BUCKETS,
        )
        self._step_h2d_bytes = self._versioned(
            Counter,
            "attnserve_step_host_to_device_bytes",
            "Bytes of host arrays fed to the runtime's sessions and tensors.",
        )
        self._step_d2h_bytes = self._versioned(
            Counter,
            "attnserve_step_device_to_host_bytes",
            "Bytes of session outputs read on the host (logits, token ids, attention).",
        )
        self._kv_allocations = self._versioned(
            Counter,
            "attnserve_kv_allocations",
            "K/V buffers created (decoder presents, encoder outputs, row-move copies).",
        )
        self._session_runs = self._versioned(
            Counter,
            "attnserve_session_runs",
            "ONNX Runtime session runs (encoder, decoder, K/V row-op and token-choice graphs).",
        )
        self._event_loop_lag = Histogram(
            "attnserve_event_loop_lag_seconds",
            "How late the gRPC event loop ran a timer due now: work on the loop stalls every RPC.",
            buckets=STEP_BUCKETS,
            registry=reg,
        )
        self._requests_running = self._versioned(
            Gauge,
            "attnserve_requests_running",
            "Requests being decoded now.",
            multiprocess_mode="livesum",
        )
        self._requests_waiting = self._versioned(
            Gauge,
            "attnserve_requests_waiting",
            "Requests queued and not yet running.",
            multiprocess_mode="livesum",
        )
        self._input_tokens = self._versioned(
            Counter,
            "attnserve_input_tokens_total",
            "Input (prompt) tokens of finished requests.",
        )
        self._generated_tokens = self._versioned(
            Counter,
            "attnserve_generated_tokens_total",
            "Tokens generated for finished requests.",
        )
        self._kv_cache_bytes = self._versioned(
            Gauge,
            "attnserve_kv_cache_bytes",
            "Key/value cache memory held by running rows.",
            multiprocess_mode="livesum",
        )
        self._kv_cache_budget_bytes = self._versioned(
            Gauge,
            "attnserve_kv_cache_budget_bytes",
            "Key/value cache memory the running rows may hold (--kv-budget-mb).",
            multiprocess_mode="livesum",
        )
        self._rejected = Counter(
            "attnserve_rejected_requests_total",
            "Requests refused before running, by reason.",
            ("model", "reason"),
            registry=reg,
        )
        self._model_info = self._versioned(
            Gauge,
            "attnserve_model_info",
            "Always 1 for each served model; its labels describe the model.",
            ("dtype", "provider", "architecture"),
            multiprocess_mode="livemax",
        )
        self._model_load_duration = self._versioned(
            Gauge,
            "attnserve_model_load_duration_seconds",
            "Time it took to load the model (ONNX Runtime sessions, tokenizer, warm-up).",
            multiprocess_mode="livemax",
        )

    def _versioned(
        self,
        kind: type[MetricWrapperBase],
        name: str,
        documentation: str,
        labels: tuple[str, ...] = (),
        **options: Any,
    ) -> Any:
        """A collector labelled by model and version (then `labels`), whose series go when that
        version is unloaded."""
        labelnames = (*MODEL, *labels)
        collector = kind(name, documentation, labelnames, registry=self.registry, **options)
        self._per_version.append((collector, labelnames))
        return collector

    # -- gRPC transport (the metrics interceptor) --

    def request_finished(
        self, model: str, version: str, method: str, code: str, seconds: float
    ) -> None:
        """An RPC ended with the status code named `code` (e.g. "OK") after `seconds`."""
        self._requests.labels(model, version, method, code).inc()
        self._request_duration.labels(model, version, method).observe(seconds)

    # -- engine: one request's life --

    def rejected(self, model: str, reason: str) -> None:
        """A request was refused before running; `reason` comes from `rejection_reason`."""
        self._rejected.labels(model, reason).inc()

    def queue_wait(self, model: str, version: str, seconds: float) -> None:
        """A request left the queue for its first step after waiting `seconds`."""
        self._queue_wait.labels(model, version).observe(seconds)

    def first_token(self, model: str, version: str, seconds: float) -> None:
        """A request got its first token `seconds` after it arrived."""
        self._time_to_first_token.labels(model, version).observe(seconds)

    def token_interval(self, model: str, version: str, seconds: float) -> None:
        """A request finished with `seconds` between output tokens on average (after the
        first); observed once per request with two tokens or more, as TGI does."""
        self._time_per_output_token.labels(model, version).observe(seconds)

    def inter_token_gaps(self, model: str, version: str, gaps: list[float]) -> None:
        """One step gave each of several requests its next token, `gaps` seconds after its
        previous one: the stalls a client watching the stream sees."""
        if not gaps:
            return
        histogram = self._inter_token.labels(model, version)  # one label lookup per step
        for seconds in gaps:
            histogram.observe(seconds)

    def tokens(self, model: str, version: str, input_tokens: int, generated_tokens: int) -> None:
        """A request finished having read `input_tokens` and generated `generated_tokens`."""
        self._input_tokens.labels(model, version).inc(input_tokens)
        self._generated_tokens.labels(model, version).inc(generated_tokens)

    # -- engine: the step loop --

    def encoder_ran(self, model: str, version: str, seconds: float, tokens: int) -> None:
        """One encoder run of `tokens` tokens (for one request or several encoded together, in
        one step) took `seconds`."""
        self._encoder_duration.labels(model, version).observe(seconds)
        self._encoder_tokens.labels(model, version).observe(tokens)

    def event_loop_lag(self, seconds: float) -> None:
        self._event_loop_lag.observe(seconds)

    def decode_step(self, model: str, version: str, batch_rows: int, seconds: float) -> None:
        """One decode step over `batch_rows` rows took `seconds`."""
        self._decode_batch_size.labels(model, version).observe(batch_rows)
        self._decode_step_duration.labels(model, version).observe(seconds)

    def step_costs(
        self,
        model: str,
        version: str,
        host_seconds: float,
        host_to_device_bytes: int,
        device_to_host_bytes: int,
        kv_allocations: int,
        session_runs: int,
    ) -> None:
        """What one engine step cost the runtime (service.runtime.step_counters)."""
        self._step_host_seconds.labels(model, version).observe(host_seconds)
        self._step_h2d_bytes.labels(model, version).inc(host_to_device_bytes)
        self._step_d2h_bytes.labels(model, version).inc(device_to_host_bytes)
        self._kv_allocations.labels(model, version).inc(kv_allocations)
        self._session_runs.labels(model, version).inc(session_runs)

    def set_queue_state(self, model: str, version: str, running: int, waiting: int) -> None:
        """How many of the model's requests are running and waiting now."""
        self._requests_running.labels(model, version).set(running)
        self._requests_waiting.labels(model, version).set(waiting)

    def set_kv_cache(self, model: str, version: str, used_bytes: int, budget_bytes: int) -> None:
        """The key/value cache the model's running rows hold now, and how much they may hold."""
        self._kv_cache_bytes.labels(model, version).set(used_bytes)
        self._kv_cache_budget_bytes.labels(model, version).set(budget_bytes)

    # -- engine: loading --

    def model_loaded(
        self,
        model: str,
        version: str,
        *,
        dtype: str,
        provider: str,
        architecture: str,
        seconds: float,
    ) -> None:
        """A model is served from now on; loading it took `seconds`. Its queue-wait series
        starts at zero at once: the HPA scales on it, and a pod with no series yet (no request
        so far) left the HPA without its metric, unable to scale down."""
        self._model_info.labels(model, version, dtype, provider, architecture).set(1)
        self._model_load_duration.labels(model, version).set(seconds)
        self._queue_wait.labels(model, version)

    def model_unloaded(self, model: str, version: str) -> None:
        """A model version is no longer served (a reload replaced it): every series of it goes,
        counters and histograms too, so that a server rolling versions for months does not
        keep a set of series per version it ever served. In multiprocess mode the values live
        in files prometheus_client cannot remove from, and they stay."""
        if multiprocess_mode():
            return
        for collector, labelnames in self._per_version:
            for labels in _label_sets(collector, labelnames):
                if labels[: len(MODEL)] == (model, version):
                    collector.remove(*labels)

    # -- exposition --

    def exposition_registry(self) -> CollectorRegistry:
        """The registry /metrics serves: this server's own, or in multiprocess mode one that
        merges the files of every process."""
        if not multiprocess_mode():
            return self.registry
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged


def _label_sets(collector: MetricWrapperBase, labelnames: tuple[str, ...]) -> set[tuple[str, ...]]:
    """The label values of every series `collector` holds now (a histogram's samples add `le`)."""
    return {
        tuple(sample.labels[name] for name in labelnames)
        for family in collector.collect()
        for sample in family.samples
        if all(name in sample.labels for name in labelnames)
    }


def rejection_reason(error: BaseException) -> str:
    """The `reason` label of a request refused with `error`: its status code in lower case
    ("resource_exhausted": queue full or K/V budget too small, "unavailable": draining,
    "deadline_exceeded", "invalid_argument"), so it reads like the error the client got."""
    return status_name(error).lower()
