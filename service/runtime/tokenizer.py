"""The model's `tokenizers` tokenizer: checked input encoding, incremental output decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from service.errors import InvalidArgument

REPLACEMENT_CHAR = "\ufffd"  # what a partial UTF-8 character decodes to


class TextTokenizer:
    """Encodes request text (never silently truncated) and decodes generated tokens."""

    def __init__(self, path: Path, max_input_tokens: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_truncation()  # too long is an error for the client, not a cut
        self._tokenizer.no_padding()
        self.max_input_tokens = max_input_tokens

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64, special tokens added as the model was trained)."""
        if not text or not text.strip():
            raise InvalidArgument("text is empty")
        ids = self._tokenizer.encode(text).ids
        if len(ids) > self.max_input_tokens:
            raise InvalidArgument(
                f"text is {len(ids)} tokens long; this model accepts at most "
                f"{self.max_input_tokens} input tokens"
            )
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def detokenizer(self) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self)


class IncrementalDetokenizer:
    """Turns a growing token list into text deltas that concatenate to the final text.

    Each delta is the difference between decoding a short window of recent tokens with and
    without the new ones, so word-joining decoders (SentencePiece's leading space, BPE merges)
    see the same context both times; a delta ending in a partial character waits for more tokens.
    """

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._emitted: list[str] = []

    def push(self, ids: list[int]) -> str:
        """Add new tokens; return the text they complete (may be empty)."""
        self._ids.extend(ids)
        prefix = self._tokenizer.decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._tokenizer.decode(self._ids[self._prefix_offset :])
        if len(text) <= len(prefix) or text.endswith(REPLACEMENT_CHAR):
            return ""
        delta = text[len(prefix) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        self._emitted.append(delta)
        return delta

    def finish(self) -> tuple[str, str]:
        """(the last delta, the full text): everything not yet emitted, and the whole decode."""
        text = self._tokenizer.decode(self._ids)
        emitted = "".join(self._emitted)
        tail = text[len(emitted) :] if text.startswith(emitted) else ""
        self._emitted.append(tail)
        return tail, text
