"""Our KServe v2 protos are tritonclient's, byte for byte.

Byte identity is what the protocol needs (same field names, numbers and types) and also what
lets tritonclient and our stubs live in one process: protobuf accepts a file twice only if it
is the same file.
"""

from __future__ import annotations

import difflib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, text_format

REPO_ROOT = Path(__file__).resolve().parents[2]
PAIRS = [  # (our stub, tritonclient's)
    ("service._pb.grpc_service_pb2", "tritonclient.grpc.service_pb2"),
    ("service._pb.model_config_pb2", "tritonclient.grpc.model_config_pb2"),
]


def _serialized_in_own_process(module: str) -> bytes:
    """A fresh interpreter per module, so a mismatch shows as a diff, not a pool conflict."""
    code = f"import sys, {module} as m; sys.stdout.buffer.write(m.DESCRIPTOR.serialized_pb)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, check=True, timeout=60
    ).stdout


def _text(serialized: bytes) -> list[str]:
    message = descriptor_pb2.FileDescriptorProto.FromString(serialized)
    return text_format.MessageToString(message).splitlines()


@pytest.mark.parametrize(("ours", "theirs"), PAIRS)
def test_our_descriptor_is_tritonclients(ours: str, theirs: str):
    mine, shipped = _serialized_in_own_process(ours), _serialized_in_own_process(theirs)
    diff = difflib.unified_diff(_text(shipped), _text(mine), theirs, ours, lineterm="")
    assert mine == shipped, "\n".join(diff)


def test_tritonclient_and_our_stubs_load_in_one_process():
    code = "; ".join(f"import {ours}, {theirs}" for ours, theirs in PAIRS)
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


def test_proto_files_are_what_the_recovery_tool_renders():
    spec = importlib.util.spec_from_file_location(
        "recover_kserve_proto", REPO_ROOT / "tools" / "recover_kserve_proto.py"
    )
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for _, theirs in PAIRS:
        shipped = descriptor_pb2.FileDescriptorProto.FromString(_serialized_in_own_process(theirs))
        rendered = tool.render_proto(shipped, tool.source_name())
        assert (REPO_ROOT / "proto" / shipped.name).read_text() == rendered, shipped.name
