"""The per-step encoder budget on a real server: newcomers that wait together are encoded a
budget's worth per step while a running stream goes on, instead of all inside one step.

Asserted on which encoder runs the steps made (the server's attnserve_encoder_tokens_per_step),
not on wall time: three newcomers queue behind a beam request that fills the batch, so all three
are waiting at the step its rows free up, whatever the machine's speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest

from service.client import AttnserveClient
from tests.fixtures.inprocess_server import serving
from tests.integration.models import LONG_REQUEST_ROWS, LONG_TOKENS, TEXT, wait_until
from tests.metrics.exposition import value

STREAM_TOKENS = 1000  # outlasts the blocker and the newcomers
STREAM = {"max_new_tokens": STREAM_TOKENS, "min_new_tokens": STREAM_TOKENS}
BLOCKER_TOKENS = 300  # with beams, about a second: the newcomers queue meanwhile
BLOCKER = {"max_new_tokens": BLOCKER_TOKENS, "min_new_tokens": BLOCKER_TOKENS, "num_beams": 4}
NEWCOMER_TEXT = " ".join(f"w{i}" for i in range(30))  # + <s> and </s>: 32 encoder tokens
NEWCOMER_TOKENS, NEWCOMERS, BUDGET = 32, 3, 32
TEXT_TOKENS = len(TEXT.split()) + 2


@pytest.mark.parametrize(
    ("budget", "newcomer_runs"), [(0, 1), (BUDGET, NEWCOMERS)], ids=["no-budget", "budget"]
)
def test_newcomers_waiting_together_are_encoded_a_budget_per_step_while_a_stream_runs(
    models_dir: Path, budget: int, newcomer_runs: int
):
    with (
        serving(
            models_dir,
            max_new_tokens_cap=LONG_TOKENS,
            max_batch_rows=1 + LONG_REQUEST_ROWS,
            max_num_beams=LONG_REQUEST_ROWS,
            max_encoder_tokens_per_step=budget,
        ) as server,
        AttnserveClient(server.target) as client,
    ):
        engine = server.engine
        assert engine is not None
        stream = client.summarize_stream(TEXT, **STREAM)
        wait_until(lambda: engine.running_rows() == 1, what="the stream to run")
        blocker = client.summarize_stream(TEXT, **BLOCKER)
        wait_until(lambda: engine.running_rows() == 1 + LONG_REQUEST_ROWS, what="a full batch")
        newcomers = [client.summarize_stream(NEWCOMER_TEXT) for _ in range(NEWCOMERS)]
        wait_until(lambda: engine.queue_length() == NEWCOMERS, what="the newcomers to queue")
        answers = [list(newcomer)[-1] for newcomer in newcomers]
        stream_still_running = not stream.done()
        final = list(stream)[-1]
        assert list(blocker)[-1].output_tokens == BLOCKER_TOKENS
        exposition = generate_latest(server.metrics.registry).decode()

    assert all(answer.finish_reason for answer in answers)
    assert stream_still_running and final.output_tokens == STREAM_TOKENS
    runs = value(exposition, "attnserve_encoder_tokens_per_step_count")
    encoded = value(exposition, "attnserve_encoder_tokens_per_step_sum")
    assert runs == 2 + newcomer_runs, "the stream's, the blocker's, then the newcomers'"
    assert encoded == 2 * TEXT_TOKENS + NEWCOMERS * NEWCOMER_TOKENS, "the same work either way"
    if budget:
        within = value(exposition, "attnserve_encoder_tokens_per_step_bucket", le=f"{budget}.0")
        assert within == runs, "no step ran more encoder tokens than the budget"
