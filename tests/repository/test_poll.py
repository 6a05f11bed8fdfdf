"""Poll mode (--poll-seconds): new versions are loaded off the step thread and swapped in
atomically, broken or half-copied ones are refused while the serving version goes on, and
removed ones are unloaded once their requests are done. Figures go to the test report
(`record_property`), for docs/reliability.md."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as triton

from service.client import AttnserveClient
from service.engine.served_model import ServedModel
from service.runtime.heap import freeze_heap
from tests.fixtures.inprocess_server import InProcessServer
from tests.integration.models import LONG_TOKENS, TEXT, wait_until
from tests.integration.models import SUMMARIZER as EXPORTED_SUMMARIZER
from tests.repository.repository import (
    POLL_SECONDS,
    SUMMARIZER,
    SWITCH_WITHIN_S,
    answering_version,
    copy_model,
    loaded_versions,
    publish,
    series_of_version,
    served_versions,
    stage,
    status_of,
    version_dir,
    wait_for_versions,
)

CLIENTS = 4
AFTER_SWITCH_S = 1.0  # traffic kept up after the first answer from the new version
QUIET_POLLS = 5  # polls during which nothing may change
# Greedy to its full length: seconds of streamed tokens, so it runs across a switch.
LONG_STREAM = {"max_new_tokens": LONG_TOKENS, "min_new_tokens": LONG_TOKENS}

RepositoryLog = pytest.LogCaptureFixture


@dataclass
class Call:
    started: float
    ended: float
    version: str | None  # None: it failed
    error: grpc.StatusCode | None = None


def _traffic(client: AttnserveClient, calls: list[Call], stop: threading.Event) -> None:
    """Short requests naming no version, one after another, until `stop`."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            version, error = answering_version(client), None
        except grpc.RpcError as failure:
            version, error = None, failure.code()
        calls.append(Call(started, time.monotonic(), version, error))


@pytest.fixture
def repository_log(caplog: pytest.LogCaptureFixture) -> RepositoryLog:
    caplog.set_level(logging.INFO, logger="service.engine.model_repository")
    return caplog


def _wait_for_log(log: RepositoryLog, phrase: str) -> float:
    started = time.monotonic()
    wait_until(lambda: phrase in log.text, SWITCH_WITHIN_S, f"{phrase!r} in the log")
    return time.monotonic() - started


def test_a_new_version_takes_over_atomically_without_failing_a_request(
    client: AttnserveClient,
    repository: Path,
    summarizer_dir: Path,
    record_property: Callable[[str, object], None],
):
    running = client.summarize_stream(TEXT, model=SUMMARIZER, timeout=120, **LONG_STREAM)
    next(running)  # it is decoding on version 1
    calls: list[Call] = []
    stop = threading.Event()
    with ThreadPoolExecutor(CLIENTS) as pool:
        workers = [pool.submit(_traffic, client, calls, stop) for _ in range(CLIENTS)]
        wait_until(lambda: len(calls) >= CLIENTS, SWITCH_WITHIN_S, "traffic on version 1")
        published = time.monotonic()
        publish(summarizer_dir, repository, SUMMARIZER, 2)
        wait_until(lambda: any(c.version == "2" for c in calls), SWITCH_WITHIN_S, "version 2")
        switched = min(c.ended for c in calls if c.version == "2")
        time.sleep(AFTER_SWITCH_S)
        stop.set()
        for worker in workers:
            worker.result()
    *_, last = running
    long_done = time.monotonic()

    assert [c.error for c in calls if c.error] == []
    assert {c.version for c in calls} == {"1", "2"}
    assert {c.version for c in calls if c.started > switched} == {"2"}  # no way back to 1
    assert (last.model_version, last.output_tokens) == ("1", LONG_TOKENS)  # ran on across it
    assert switched < long_done
    record_property("switch_requests", len(calls))
    record_property("switch_requests_on_version_1", sum(c.version == "1" for c in calls))
    record_property("switch_failures", sum(c.error is not None for c in calls))
    record_property("switch_seconds_after_publish", round(switched - published, 3))


BROKEN = {
    "corrupt decoder.onnx": (
        lambda d: (d / "decoder.onnx").write_bytes(b"not an onnx graph " * 64),
        "decoder.onnx",
    ),
    "malformed model.json": (
        lambda d: (d / "model.json").write_text('{"name": "half a manifest'),
        "is not valid JSON",
    ),
    "graph named in the manifest missing": (
        lambda d: (d / "encoder.onnx").unlink(),
        "is missing encoder.onnx",
    ),
}


@pytest.mark.parametrize("damage, reason", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_version_is_refused_with_its_reason_and_the_old_one_keeps_serving(
    client: AttnserveClient,
    repository: Path,
    summarizer_dir: Path,
    repository_log: RepositoryLog,
    damage: Callable[[Path], None],
    reason: str,
    record_property: Callable[[str, object], None],
):
    staged = stage(summarizer_dir, repository, SUMMARIZER, 2)
    damage(staged)
    staged.rename(version_dir(repository, SUMMARIZER, 2))

    refused_after = _wait_for_log(repository_log, f"refused {SUMMARIZER} version 2")

    assert reason in repository_log.text
    assert served_versions(client, SUMMARIZER) == ["1"]
    assert answering_version(client) == "1"
    assert status_of(lambda: answering_version(client, "2")) == grpc.StatusCode.NOT_FOUND
    record_property("refused_seconds_after_publish", round(refused_after, 3))


def test_a_serving_version_stays_whatever_a_scan_says_of_its_name_and_version(
    client: AttnserveClient,
    repository: Path,
    summarizer_dir: Path,
    repository_log: RepositoryLog,
    caplog: pytest.LogCaptureFixture,
):
    """A loaded version is immutable. A broken copy claiming its name and version under another
    directory (which the scan, in name order, took for the real one), or a flat model's own
    model.json caught mid-rewrite (invalid JSON), took it out of service (NOT_FOUND)."""
    caplog.set_level(logging.INFO, logger="service.engine.engine")
    duplicate = copy_model(summarizer_dir, repository / ".staging" / "aaa-copy")
    manifest = json.loads((duplicate / "model.json").read_text())
    (duplicate / "model.json").write_text(json.dumps({**manifest, "name": SUMMARIZER}))
    (duplicate / "decoder.onnx").write_bytes(b"broken")
    duplicate.rename(repository / "aaa-copy")
    _wait_for_log(repository_log, "is already in")
    flat = copy_model(summarizer_dir, repository / ".staging" / "flat").rename(repository / "flat")
    wait_for_versions(client, EXPORTED_SUMMARIZER, ["1"])
    whole = (flat / "model.json").read_text()
    (flat / "model.json").write_text(whole[:100])  # the flat layout's name is in it
    _wait_for_log(repository_log, "is not valid JSON")
    time.sleep(QUIET_POLLS * POLL_SECONDS)

    assert served_versions(client, SUMMARIZER) == ["1"]
    assert served_versions(client, EXPORTED_SUMMARIZER) == ["1"]
    assert answering_version(client) == "1"
    assert "retiring" not in caplog.text and "refused" not in repository_log.text


def test_a_flat_model_json_that_is_no_manifest_is_skipped_by_name_and_reloads_go_on(
    client: AttnserveClient,
    repository: Path,
    summarizer_dir: Path,
    repository_log: RepositoryLog,
):
    """A model.json of `[]` (or null, or a name that is a number) raised past the scan: every
    poll failed with a traceback that named no directory, and no version published after it
    ever loaded."""
    bad = copy_model(summarizer_dir, repository / ".staging" / "not-a-manifest")
    (bad / "model.json").write_text("[]")
    bad.rename(repository / "not-a-manifest")
    _wait_for_log(repository_log, "not-a-manifest/model.json must hold a JSON object, not list")
    publish(summarizer_dir, repository, SUMMARIZER, 2)

    wait_for_versions(client, SUMMARIZER, ["2"])
    assert "reloading the models failed" not in repository_log.text


def test_a_version_without_model_json_waits_until_its_copy_completes(
    client: AttnserveClient,
    repository: Path,
    summarizer_dir: Path,
    repository_log: RepositoryLog,
):
    target = copy_model(summarizer_dir, version_dir(repository, SUMMARIZER, 2), skip=["model.json"])
    _wait_for_log(repository_log, f"{target}: no model.json yet")
    time.sleep(QUIET_POLLS * POLL_SECONDS)
    assert served_versions(client, SUMMARIZER) == ["1"]

    shutil.copyfile(summarizer_dir / "model.json", target / "model.json")

    wait_for_versions(client, SUMMARIZER, ["2"])
    assert answering_version(client) == "2"


def test_a_refused_version_is_retried_once_its_files_change(
    client: AttnserveClient,
    repository: Path,
    summarizer_dir: Path,
    repository_log: RepositoryLog,
):
    target = version_dir(repository, SUMMARIZER, 2)
    copy_model(summarizer_dir, target, skip=["decoder.onnx", "model.json"])
    decoder = (summarizer_dir / "decoder.onnx").read_bytes()
    (target / "decoder.onnx").write_bytes(decoder[: len(decoder) // 2])  # still being copied
    shutil.copyfile(summarizer_dir / "model.json", target / "model.json")
    _wait_for_log(repository_log, f"refused {SUMMARIZER} version 2")
    time.sleep(QUIET_POLLS * POLL_SECONDS)
    assert repository_log.text.count(f"refused {SUMMARIZER} version 2") == 1  # not reloaded

    (target / "decoder.onnx").write_bytes(decoder)  # the copy completes

    wait_for_versions(client, SUMMARIZER, ["2"])
    assert answering_version(client) == "2"


def test_a_removed_version_finishes_its_running_request_then_unloads(
    polling_server: InProcessServer,
    client: AttnserveClient,
    repository: Path,
    summarizer_dir: Path,
    record_property: Callable[[str, object], None],
):
    publish(summarizer_dir, repository, SUMMARIZER, 2)
    wait_for_versions(client, SUMMARIZER, ["2"])
    running = client.summarize_stream(TEXT, model=SUMMARIZER, timeout=120, **LONG_STREAM)
    next(running)  # it is decoding on version 2

    shutil.rmtree(version_dir(repository, SUMMARIZER, 2))

    wait_for_versions(client, SUMMARIZER, ["1"])  # back to the highest version left
    *_, last = running
    assert (last.model_version, last.output_tokens) == ("2", LONG_TOKENS)
    removed = time.monotonic()
    wait_until(
        lambda: loaded_versions(polling_server.metrics, SUMMARIZER) == ["1"],
        SWITCH_WITHIN_S,
        "version 2 unloaded",
    )
    record_property("unload_seconds_after_last_request", round(time.monotonic() - removed, 3))
    assert status_of(lambda: answering_version(client, "2")) == grpc.StatusCode.NOT_FOUND
    assert series_of_version(polling_server.metrics, SUMMARIZER, "2") == []  # counters too


def test_a_version_frozen_at_start_is_thawed_to_unload_then_the_heap_freezes_again(
    polling_server: InProcessServer,
    client: AttnserveClient,
    repository: Path,
    summarizer_dir: Path,
    repository_log: RepositoryLog,
):
    """`attnserve serve` freezes its start-up heap (service.runtime.heap), version 1 with it.
    Replaced by version 2 and unloaded, it is freed all the same, cycles included: the engine
    thaws the heap when it unloads, and freezes it again at a later poll."""
    served = next(
        o for o in gc.get_objects() if isinstance(o, ServedModel) and o.manifest.name == SUMMARIZER
    )
    served.test_cycle = [served]  # a cycle: only the collector can free it, once thawed
    version_1 = weakref.ref(served)
    del served
    repository_log.set_level(logging.INFO, logger="service.engine.engine")
    try:
        freeze_heap()
        publish(summarizer_dir, repository, SUMMARIZER, 2)
        wait_for_versions(client, SUMMARIZER, ["2"])
        _wait_for_log(repository_log, "heap thawed until the next poll")
        _wait_for_log(repository_log, "heap frozen again")
        assert gc.get_freeze_count() > 0
        assert version_1() is None
    finally:
        gc.unfreeze()  # this test process's heap is not a server's


def test_kserve_readiness_and_metadata_follow_a_switch(
    polling_server: InProcessServer,
    client: AttnserveClient,
    repository: Path,
    summarizer_dir: Path,
):
    triton_client = triton.InferenceServerClient(polling_server.target)
    publish(summarizer_dir, repository, SUMMARIZER, 2)
    wait_for_versions(client, SUMMARIZER, ["2"])
    wait_until(
        lambda: not triton_client.is_model_ready(SUMMARIZER, "1"),
        SWITCH_WITHIN_S,
        "version 1 unloaded",
    )

    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready(SUMMARIZER, "2")
    assert list(triton_client.get_model_metadata(SUMMARIZER).versions) == ["2"]
