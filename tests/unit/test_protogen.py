"""tools/protogen.py: stubs import as a package wherever their protos sit, and --check works."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest


def _load_protogen():
    """tools/ is a folder of scripts, not a package: load the script as a module."""
    path = Path(__file__).resolve().parents[2] / "tools" / "protogen.py"
    spec = importlib.util.spec_from_file_location("protogen", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


protogen = _load_protogen()

NESTED = """syntax = "proto3";
package demo.v1;
import "google/protobuf/empty.proto";
message Ping { int32 n = 1; }
service Pinger { rpc Send(Ping) returns (google.protobuf.Empty); }
"""
ROOT = """syntax = "proto3";
package rooted;
import "demo/v1/ping.proto";
message Wrapper { demo.v1.Ping ping = 1; }
service Wrapping { rpc Wrap(Wrapper) returns (demo.v1.Ping); }
"""


@pytest.fixture
def generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stubs of a nested and a root-level proto, generated as package `service._pb` would be
    but under a temporary `pbtest` package."""
    proto_dir = tmp_path / "proto"
    (proto_dir / "demo" / "v1").mkdir(parents=True)
    (proto_dir / "demo" / "v1" / "ping.proto").write_text(NESTED)
    (proto_dir / "wrapper.proto").write_text(ROOT)
    monkeypatch.setattr(protogen, "PB_PACKAGE", "pbtest")
    protogen.generate(tmp_path / "pbtest", proto_dir)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "pbtest"
    for name in [m for m in sys.modules if m == "pbtest" or m.startswith("pbtest.")]:
        del sys.modules[name]


def test_stubs_import_each_other_through_the_package(generated: Path):
    wrapper_grpc = importlib.import_module("pbtest.wrapper_pb2_grpc")
    wrapper = importlib.import_module("pbtest.wrapper_pb2")
    ping_grpc = importlib.import_module("pbtest.demo.v1.ping_pb2_grpc")

    assert wrapper.Wrapper(ping={"n": 3}).ping.n == 3
    assert hasattr(wrapper_grpc, "WrappingStub") and hasattr(ping_grpc, "PingerStub")


def test_every_generated_file_says_it_is_generated(generated: Path):
    stubs = list(generated.rglob("*_pb2*.py*"))

    assert len(stubs) == 6
    assert all(path.read_text().startswith(protogen.HEADER) for path in stubs)


def test_check_names_a_stale_stub(
    generated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.setattr(protogen, "PROTO_DIR", generated.parent / "proto")
    monkeypatch.setattr(protogen, "PB_DIR", generated)
    assert protogen.check() == 0

    (generated / "wrapper_pb2.py").write_text("# edited by hand\n")

    assert protogen.check() == 1
    assert "wrapper_pb2.py" in capsys.readouterr().err
