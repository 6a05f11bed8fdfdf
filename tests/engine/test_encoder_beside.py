"""Newcomers' encoders beside the decode steps (--encoder-beside-decode): the same answers as
encoding inside the step, and a request that leaves while it is encoded never joins the batch."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from service.engine.config import EngineConfig
from service.engine.encoding import BackgroundEncoder
from service.engine.served_model import ServedModel
from service.engine.sync_driver import generate_offline
from service.engine.types import GenerationParams
from service.errors import Cancelled
from service.runtime.cores import cpus_of
from service.runtime.model import LoadedModel
from tests.fixtures.served_models import tiny_models_once
from tests.integration.models import SUMMARIZER

TEXTS = [" ".join(f"w{i}" for i in range(n)) for n in (5, 40, 12, 25)]
PARAMS = GenerationParams(max_new_tokens=12, min_new_tokens=12)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models_once(tmp_path_factory) / SUMMARIZER


def test_encoding_beside_the_steps_gives_the_same_answers(model_dir: Path):
    answers = {
        beside: generate_offline(
            model_dir, TEXTS, PARAMS, EngineConfig(encoder_beside_decode=beside)
        )
        for beside in (False, True)
    }
    assert [a.token_ids for a in answers[True]] == [a.token_ids for a in answers[False]]
    assert all(a.output_tokens == PARAMS.max_new_tokens for a in answers[True])


def test_a_request_cancelled_while_encoded_beside_never_joins_the_batch(model_dir: Path):
    served = ServedModel(LoadedModel.load(model_dir), EngineConfig(encoder_beside_decode=True))
    running = served.prepare(TEXTS[0], None, PARAMS, lambda event: None)
    served.scheduler.add(running)
    served.step()  # nothing else decodes: the step waits for its encoder
    assert served.runner.batch is not None and served.runner.batch.requests == [running]

    leaving = served.prepare(TEXTS[1], None, PARAMS, lambda event: None)
    served.scheduler.add(leaving)
    served.step()  # its encoder starts; it may or may not finish within this step
    leaving.cancelled = True
    events = served.step()

    assert [(g, type(e.error)) for g, e in events if g is leaving] == [(leaving, Cancelled)]
    assert served.runner.batch.requests == [running]
    assert served.scheduler.running == [running]
    while served.scheduler.has_work():
        served.step()
    assert len(running.generated) == PARAMS.max_new_tokens
    assert leaving.generated == [] or len(leaving.generated) == 1, "no token after it left"


def _thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_the_sessions_are_built_with_the_thread_settings(model_dir: Path):
    config = EngineConfig(intra_op_threads=2, encoder_threads=1, encoder_beside_decode=True)
    model = LoadedModel.load(model_dir, threads=config.session_threads())
    decoder, encoder = model.decoder.get_session_options(), model.encoder.get_session_options()
    assert (decoder.intra_op_num_threads, encoder.intra_op_num_threads) == (2, 1)
    spinning = "session.intra_op.allow_spinning"
    assert decoder.get_session_config_entry(spinning) == "0", "auto: off beside the steps"
    assert encoder.get_session_config_entry(spinning) == "0"
    inside = EngineConfig(encoder_beside_decode=False).session_threads()
    spinning_model = LoadedModel.load(model_dir, threads=inside)
    assert spinning_model.decoder.get_session_options().get_session_config_entry(spinning) == "1"


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread nice values")
def test_the_beside_encoder_runs_at_a_lower_priority_than_the_steps(model_dir: Path):
    step_thread_nice = _thread_nice()
    seen: list[int] = []

    def encode(groups):
        seen.append(_thread_nice())
        return [], []

    encoder = BackgroundEncoder(encode, lambda batch, waiting: None, nice=7)
    encoder.submit([])
    encoder.finished(wait=True)
    assert seen == [min(step_thread_nice + 7, 19)]
    assert _thread_nice() == step_thread_nice, "only the encoder's thread is lowered"


def _encoder_threads() -> set[int]:
    return {t.native_id for t in threading.enumerate() if t.name.startswith("attnserve-encoder")}


def test_the_beside_encoder_runs_on_its_own_cores_and_the_steps_keep_theirs(model_dir: Path):
    steps_cpus = os.sched_getaffinity(0)
    threads = EngineConfig(encoder_beside_decode=True).session_threads()
    if not threads.encoder_cpus:
        pytest.skip("auto does not pin here (one CPU, or CPUs shared through a CPU quota)")
    served = ServedModel(LoadedModel.load(model_dir, threads=threads), EngineConfig())
    before = _encoder_threads()
    group = served.prepare(TEXTS[1], None, PARAMS, lambda event: None)
    served.scheduler.add(group)
    while served.scheduler.has_work():
        served.step()
    assert len(group.generated) == PARAMS.max_new_tokens
    (encoder_thread,) = _encoder_threads() - before  # started by the first newcomer
    assert os.sched_getaffinity(encoder_thread) == cpus_of(threads.encoder_cpus)
    assert os.sched_getaffinity(0) == steps_cpus, "the steps' thread is not pinned"


def test_a_longer_newcomer_beside_the_steps_joins_into_room_made_on_the_encoders_thread(
    model_dir: Path,
):
    served = ServedModel(LoadedModel.load(model_dir), EngineConfig(encoder_beside_decode=True))
    running = GenerationParams(max_new_tokens=50, min_new_tokens=50)  # outlasts the encoder
    short = served.prepare(TEXTS[0], None, running, lambda event: None)
    served.scheduler.add(short)
    served.step()
    longer = served.prepare(TEXTS[1], None, PARAMS, lambda event: None)
    served.scheduler.add(longer)
    while longer not in served.runner.batch.requests:
        served.step()
    (run,) = served.runner.encoder_runs
    assert run.cross_room is not None, "the wider input needed new cross buffers"
    joined = served.runner.batch.cross
    assert all(np.shares_memory(x, r) for x, r in zip(joined, run.cross_room, strict=True))
    while served.scheduler.has_work():
        served.step()
    alone = generate_offline(model_dir, TEXTS[:2], [running, PARAMS])
    assert [short.generated, longer.generated] == [a.token_ids for a in alone]
