"""Checkpoint -> model directory: load, wrap, trace, validate, convert, describe, publish.

Everything is written into a temporary directory beside the output and renamed into place only
when every step has passed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from export.artifacts import (
    generation_defaults,
    write_generation_config,
    write_preprocessor_config,
    write_tokenizer,
)
from export.attention_parity import attention_failures, check_cross_attention
from export.attention_spec import cross_attention_spec, resolve_layers
from export.beam_parity import NUM_BEAMS, check_beam
from export.checkpoint import Checkpoint, load_checkpoint
from export.errors import ExportError
from export.onnx_export import export_graphs
from export.ort_graphs import OrtGraphs, greedy_tokens
from export.parity import GREEDY_NEW_TOKENS, parity_failures, sample_encoder_feeds, validate
from export.precision import convert_graphs, token_agreement
from service.runtime.manifest import (
    DTYPES,
    GraphSpec,
    ManifestError,
    ModelManifest,
    check_name,
)
from service.runtime.tasks import Task

Progress = Callable[[str], None]

# The opsets this exporter and onnxruntime were checked with (13 and 21 exported, served and
# passed parity; 7 failed inside torch's exporter, after the model had loaded).
OPSETS = (13, 21)


def export_model(
    model_path: str | Path,
    task: str,
    output: Path,
    *,
    dtype: str = "fp32",
    opset: int = 17,
    name: str | None = None,
    version: str = "1",
    allow_mismatch: bool = False,
    attention_layers: Sequence[int] | None = None,
    progress: Progress = print,
) -> ModelManifest:
    """Export a transformers checkpoint (local directory or hub id) to an attnserve model
    directory at `output`; returns its manifest. The decoder's cross_attention output averages
    `attention_layers` (0-based; None: all layers). Raises ExportError with a message for the
    user."""
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    for label, value in (("--name", name), ("--version", version)):
        if value is not None:
            _check_servable(partial(check_name, label, value))
    if not OPSETS[0] <= opset <= OPSETS[1]:
        raise ExportError(
            f"opset must be in {OPSETS[0]}..{OPSETS[1]} (the ONNX opsets exported and served "
            f"here), got {opset}"
        )
    output = Path(output)
    _check_output(output)
    checkpoint = load_checkpoint(str(model_path), task, progress)
    num_layers = checkpoint.family.dims(checkpoint.model).num_layers
    layers = resolve_layers(attention_layers, num_layers)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    )
    try:
        manifest = _build(checkpoint, staging, dtype, opset, layers, allow_mismatch, progress)
        manifest.name = name or output.name
        manifest.version = version
        _check_servable(manifest.validate)
        manifest.save(staging)
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(f"wrote {output}")
    return manifest


def _check_servable(check: Callable[[], None]) -> None:
    """ExportError where the server would refuse the manifest (`check`: one of its validations;
    e.g. generation_config values no request could run with, token ids outside the
    vocabulary), naming the field."""
    try:
        check()
    except ManifestError as exc:
        raise ExportError(f"the checkpoint cannot be served as it is: {exc}") from exc


def _build(
    checkpoint: Checkpoint,
    out_dir: Path,
    dtype: str,
    opset: int,
    layers: list[int],
    allow_mismatch: bool,
    progress: Progress,
) -> ModelManifest:
    """The fp32 model is built and validated first (in out_dir, or out_dir/fp32 when converting),
    then converted; the manifest's parity records both."""
    family, model = checkpoint.family, checkpoint.model
    fp32_dir = out_dir if dtype == "fp32" else out_dir / "fp32"
    fp32_dir.mkdir(exist_ok=True)
    progress(f"exporting encoder and decoder graphs (opset {opset})")
    manifest = _describe(checkpoint, fp32_dir, opset, layers)
    _check_servable(manifest.validate_defaults)  # before any graph is built or run
    manifest.encoder, manifest.decoder = export_graphs(
        family, model, fp32_dir, opset, manifest.image, layers
    )
    _write_artifacts(checkpoint, fp32_dir, manifest.dims.vocab_size)
    manifest.save(fp32_dir)

    progress("checking parity: PyTorch vs ONNX Runtime, batched vs alone, greedy vs generate()")
    special, prefix = manifest.special_tokens, [manifest.special_tokens.decoder_start]
    prefix += manifest.decoder_prompt
    feeds = sample_encoder_feeds(family.task, special, manifest.dims.vocab_size, manifest.image)
    fp32_graphs = OrtGraphs(fp32_dir, manifest.dims)
    report = validate(family, model, fp32_graphs, feeds, special, prefix)
    progress(f"checking the engine's beam search (num_beams={NUM_BEAMS}) vs generate()")
    report |= check_beam(family, model, fp32_dir, manifest)
    progress(f"checking cross_attention (layers {layers}) vs transformers' output_attentions")
    report |= check_cross_attention(family, model, fp32_graphs, feeds, prefix, layers)
    failures = parity_failures(report) + attention_failures(report)
    report["passed"] = not failures
    if failures and not allow_mismatch:
        raise ExportError(
            "parity check failed: "
            + "; ".join(failures)
            + " (--allow-mismatch writes the model anyway)"
        )
    if failures:
        progress("WARNING: parity check failed: " + "; ".join(failures))

    if dtype != "fp32":
        progress(f"converting the graphs to {dtype}")
        convert_graphs(fp32_dir, out_dir, dtype, family.architecture)
        for artifact in fp32_dir.glob("*.json"):
            shutil.copyfile(artifact, out_dir / artifact.name)
        reference = greedy_tokens(fp32_graphs, feeds, prefix, special.eos, GREEDY_NEW_TOKENS)
        graphs = OrtGraphs(out_dir, manifest.dims)
        converted = greedy_tokens(graphs, feeds, prefix, special.eos, GREEDY_NEW_TOKENS)
        report[dtype] = token_agreement(reference, converted)
        progress(f"{dtype} agreement with fp32: {report[dtype]}")
        shutil.rmtree(fp32_dir)
    manifest.dtype, manifest.parity = dtype, report
    return manifest


def _describe(
    checkpoint: Checkpoint, model_dir: Path, opset: int, layers: list[int]
) -> ModelManifest:
    """The manifest of the fp32 model (graph specs and parity are filled in later)."""
    family, model = checkpoint.family, checkpoint.model
    image = family.image_preprocessing(checkpoint.path) if family.task == Task.CAPTIONING else None
    max_input_tokens = family.max_input_tokens(model)
    return ModelManifest(
        name=model_dir.name,
        version="1",
        task=family.task,
        architecture=family.architecture,
        model_type=model.config.model_type,
        dtype="fp32",
        opset=opset,
        encoder=GraphSpec("", [], []),
        decoder=GraphSpec("", [], []),
        dims=family.dims(model),
        special_tokens=family.special_tokens(model),
        generation=generation_defaults(family.generation_config(model)),
        max_input_tokens=max_input_tokens,
        decoder_prompt=family.decoder_prompt(model),
        max_decoder_positions=family.max_decoder_positions(model),
        image=image,
        cross_attention=cross_attention_spec(family, model, layers, max_input_tokens),
        exporter=_tool_versions(),
    )


def _write_artifacts(checkpoint: Checkpoint, model_dir: Path, vocab_size: int) -> None:
    write_tokenizer(checkpoint.path, model_dir, vocab_size)
    write_generation_config(checkpoint.family.generation_config(checkpoint.model), model_dir)
    if checkpoint.family.task == Task.CAPTIONING:
        write_preprocessor_config(checkpoint.path, model_dir)


def _check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportError(f"output {output} already exists and is not empty; choose a new path")


def _publish(staging: Path, output: Path) -> None:
    staging.chmod(0o755)  # mkdtemp made it private
    if output.is_dir():  # empty (checked before): rename cannot replace it everywhere
        output.rmdir()
    staging.rename(output)


def _tool_versions() -> dict[str, str]:
    versions = {}
    for package in ("attnserve", "torch", "transformers", "onnx", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions
