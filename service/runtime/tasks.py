"""The task vocabulary: what a model does. One enum used by the manifest, the engine, both APIs,
the exporter and the tools; a StrEnum, so it is also the string written in model.json and sent
by clients."""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    SUMMARIZATION = "summarization"
    CAPTIONING = "captioning"
