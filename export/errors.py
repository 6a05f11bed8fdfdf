"""The one error type of the exporter: a message fit to show the user as is."""

from __future__ import annotations


class ExportError(Exception):
    """The export cannot proceed or its result failed validation; the message says why."""
