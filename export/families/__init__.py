"""Which export family handles a checkpoint: one registry keyed by (task, config.model_type)."""

from __future__ import annotations

from export.families.bart import BartFamily
from export.families.base import ExportFamily
from export.families.blip import BlipFamily
from export.families.t5 import T5Family
from export.families.vision_encoder_decoder import VisionEncoderDecoderFamily
from service.runtime.tasks import Task

_FAMILIES: dict[str, list[ExportFamily]] = {
    Task.SUMMARIZATION: [BartFamily(), T5Family()],
    Task.CAPTIONING: [VisionEncoderDecoderFamily(), BlipFamily()],
}


class UnsupportedArchitecture(ValueError):
    """The checkpoint's model type has no export family for the task."""


def supported_model_types(task: str) -> list[str]:
    return sorted(t for family in _FAMILIES.get(task, []) for t in family.model_types)


def family_for(model_type: str, task: str) -> ExportFamily:
    """The family exporting `model_type` for `task`, or an error naming the supported types."""
    if task not in _FAMILIES:
        raise UnsupportedArchitecture(f"unknown task {task!r}; tasks: {', '.join(_FAMILIES)}")
    for family in _FAMILIES[task]:
        if model_type in family.model_types:
            return family
    supported = ", ".join(supported_model_types(task))
    raise UnsupportedArchitecture(
        f"model type {model_type!r} is not supported for {task}; supported: {supported}"
    )
