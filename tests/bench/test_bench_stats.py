"""What `attnserve bench load` makes of the streams it saw: inter-token gaps over every measured
stream, beside latency and time to first token."""

from __future__ import annotations

import pytest

from bench.driver import LoadRun, LoadSpec, RequestRecord
from bench.stats import summarize


def _stream(sent: float, *token_times: float) -> RequestRecord:
    return RequestRecord(
        sent=sent,
        first_token=token_times[0],
        token_times=list(token_times),
        finished=token_times[-1],
        output_tokens=len(token_times),
    )


def _run(*records: RequestRecord) -> LoadRun:
    load = LoadSpec("closed", 2, warmup_s=0, requests=len(records), arrival_interval_s=0.4)
    return LoadRun(load, list(records), 0.0, 10.0, window_tokens=0, window_completions=0)


def test_gaps_are_taken_within_each_stream_never_across_streams():
    # two streams: gaps 0.1, 0.1, 0.5 and 0.2; the 0.05 s between the streams is no gap
    result = summarize(_run(_stream(0.0, 1.0, 1.1, 1.2, 1.7), _stream(0.5, 1.75, 1.95)))
    gap = result.inter_token_ms
    assert gap.max == pytest.approx(500.0)
    assert gap.mean == pytest.approx((100 + 100 + 500 + 200) / 4)
    assert gap.p50 == pytest.approx(150.0)
    assert result.arrival_interval_s == 0.4


def test_a_failed_stream_and_one_token_streams_add_no_gaps():
    failed = _stream(0.0, 1.0, 3.0)
    failed.error = "CANCELLED"
    result = summarize(_run(failed, _stream(0.0, 2.0)))
    assert result.inter_token_ms.p50 is None and result.inter_token_ms.max is None
    assert result.ttft_ms.max == pytest.approx(2000.0)
