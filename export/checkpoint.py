"""Load a transformers checkpoint for export and pick its family, with errors fit for users."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.artifacts import GENERATION_CONFIG_FILE
from export.errors import ExportError
from export.families import UnsupportedArchitecture, family_for
from export.families.base import ExportFamily
from service.runtime.tasks import Task


@dataclass
class Checkpoint:
    path: str  # local directory or hub id, as given
    family: ExportFamily
    model: Any  # the transformers model, in eval mode


def load_checkpoint(path: str, task: str, progress: Callable[[str], None]) -> Checkpoint:
    """The model behind `path` (a local directory or a hub id) in float32 (lower precisions are
    made from the fp32 graphs), with eager attention: plain matmul + softmax traces to the
    simplest graph."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoModelForSeq2SeqLM

    if _looks_local(path) and not Path(path).is_dir():
        raise ExportError(f"checkpoint directory {path} does not exist")
    progress(f"loading {path}")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # OSError, ValueError, JSONDecodeError ... all mean the same here
        raise ExportError(f"cannot read the model config of {path}: {exc}") from exc
    try:
        family = family_for(config.model_type, task)
    except UnsupportedArchitecture as exc:
        raise ExportError(str(exc)) from exc
    _check_generation_config(path)
    loader = AutoModelForImageTextToText if task == Task.CAPTIONING else AutoModelForSeq2SeqLM
    try:
        model = loader.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    except Exception as exc:  # corrupt or missing weights surface as many exception types
        raise ExportError(f"cannot load the weights of {path}: {exc}") from exc
    return Checkpoint(path=path, family=family, model=model.eval())


def _check_generation_config(path: str) -> None:
    """A generation_config.json that transformers cannot read is an error: from_pretrained
    warns and falls back to the model config's defaults, and the export went on to serve
    defaults the model owner never chose."""
    from transformers import GenerationConfig

    file = Path(path) / GENERATION_CONFIG_FILE
    if not file.is_file():
        return
    try:
        GenerationConfig.from_pretrained(path)
    except Exception as exc:  # JSON, type or value errors: all the file's to fix
        raise ExportError(f"cannot read {file}: {exc}") from exc


def _looks_local(path: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else, or an existing path, is local."""
    return Path(path).exists() or path.startswith((".", "/", "~")) or path.count("/") > 1
