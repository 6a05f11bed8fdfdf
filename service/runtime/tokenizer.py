"""The model's `tokenizers` tokenizer: checked input encoding, incremental output decoding."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from service.errors import InvalidArgument

REPLACEMENT_CHAR = "\ufffd"  # what a partial UTF-8 character decodes to
# A text far longer than the model accepts is tokenized only as far as needed: its first
# (limit + 1) * PREFIX_CHARS_PER_TOKEN characters, cut at a whitespace, hold more tokens than the
# limit for any text of ordinary words, and their tokens are the first tokens of the whole text.
PREFIX_CHARS_PER_TOKEN = 32
# A byte-fallback SentencePiece model's byte pieces (`<0xE8>`): tokenizers' ByteFallback decoder
# turns a run of them into text only as a whole, and an invalid run into one U+FFFD per byte.
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass
class EncodedText:
    """A request text's tokens and where each came from (for attribution)."""

    ids: np.ndarray  # int64 [S]
    offsets: list[tuple[int, int]]  # character span of each token in the text
    word_ids: list[int | None]  # the word each token belongs to; None for special tokens
    truncated: bool = False  # the text was longer than allowed and was cut


class TextTokenizer:
    """Encodes request text (truncated only when the request asks) and decodes generated
    tokens."""

    def __init__(self, path: Path, max_input_tokens: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_truncation()  # too long is an error for the client, not a cut
        self._tokenizer.no_padding()
        self.max_input_tokens = max_input_tokens
        self._byte_pieces = _byte_fallback_pieces(self._tokenizer)
        unknown = getattr(self._tokenizer.model, "unk_token", None)  # None: byte-level BPE
        self._unknown_id = self._tokenizer.token_to_id(unknown) if unknown else None
        self._special_ids = frozenset(
            i for i, token in self._tokenizer.get_added_tokens_decoder().items() if token.special
        )

    @property
    def vocab_size(self) -> int:
        """Tokens the tokenizer can produce, added tokens included."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64, special tokens added as the model was trained)."""
        return self.encode_with_offsets(text).ids

    def encode_with_offsets(self, text: str, truncate: int = 0) -> EncodedText:
        """The text's tokens; a text longer than the model accepts is refused, or with
        `truncate` > 0 cut to its first min(truncate, max_input_tokens) tokens, keeping the
        closing special tokens (e.g. </s>) as transformers' truncation does."""
        if not text or not text.strip():
            raise InvalidArgument("text is empty")
        if not any(char.isprintable() and not char.isspace() for char in text):
            raise InvalidArgument("text has no printable character")
        limit = min(truncate, self.max_input_tokens) if truncate else self.max_input_tokens
        encoding, whole = self._encode_enough(text, limit)
        ids, offsets = encoding.ids, list(encoding.offsets)
        word_ids = [
            None if special else word
            for word, special in zip(encoding.word_ids, encoding.special_tokens_mask, strict=True)
        ]
        if len(ids) <= self.max_input_tokens and (not truncate or len(ids) <= limit):
            return EncodedText(np.asarray(ids, dtype=np.int64), offsets, word_ids)
        if not truncate:
            raise InvalidArgument(
                f"text is {'' if whole else 'at least '}{len(ids)} tokens long; this model accepts "
                f"at most "
                f"{self.max_input_tokens} input tokens (set truncate to cut it instead)"
            )
        closing = _closing_specials(encoding.special_tokens_mask)
        if limit <= closing:
            raise InvalidArgument(
                f"truncate ({truncate}) must leave room for text beside this model's "
                f"{closing} closing special tokens"
            )
        keep = [*range(limit - closing), *range(len(ids) - closing, len(ids))]
        return EncodedText(
            np.asarray([ids[i] for i in keep], dtype=np.int64),
            [offsets[i] for i in keep],
            [word_ids[i] for i in keep],
            truncated=True,
        )

    def _encode_enough(self, text: str, limit: int) -> tuple[Encoding, bool]:
        """The encoding of the text (and True), or of a whitespace-cut prefix of it when that
        already holds more than `limit` tokens (all a refusal or a truncation needs).
        `encode_batch` releases the GIL while it works, so a long text never stalls the
        server's other threads."""
        budget = (limit + 1) * PREFIX_CHARS_PER_TOKEN
        if len(text) > budget:
            cut = max(text.rfind(" ", 0, budget), text.rfind("\n", 0, budget))
            if cut > 0:
                prefix = self._tokenizer.encode_batch([text[:cut]])[0]
                if len(prefix.ids) > limit + _closing_specials(prefix.special_tokens_mask):
                    return prefix, False
        return self._tokenizer.encode_batch([text])[0], True

    def encode_prompt(self, text: str) -> list[int]:
        """A decoder prompt's token ids, without the special tokens the model's template adds:
        it continues after the decoder's own start token (transformers' BLIP drops
        [CLS]/[SEP]). Refused where the tokenizer can read a part of it only as its unknown
        token: the answer could not start with the prompt (a word-level "a photography of"
        came back as "a of ...")."""
        encoding = self._tokenizer.encode_batch([text], add_special_tokens=False)[0]
        unknown = [
            text[start:end].strip() or text[start:end]  # a run of whitespace: as it is
            for token, (start, end) in zip(encoding.ids, encoding.offsets, strict=True)
            if token == self._unknown_id
        ]
        if unknown:
            raise InvalidArgument(
                f"prompt holds {', '.join(map(repr, unknown[:5]))}, which this model's "
                "tokenizer does not know (it reads them as its unknown token): the answer could "
                "not start with the prompt"
            )
        return encoding.ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def ends_in_byte_run(self, ids: list[int]) -> bool:
        """The last token decode keeps (special tokens are skipped) is a byte-fallback piece:
        the text of its run may still change (one more byte can make the whole run invalid,
        and every byte of it U+FFFD)."""
        if not self._byte_pieces:
            return False
        for token_id in reversed(ids):
            if token_id not in self._special_ids:
                return token_id in self._byte_pieces
        return False

    def token_text(self, token_id: int) -> str:
        """One token as text, special tokens included (an EOS reads as what it is)."""
        return self._tokenizer.decode([token_id], skip_special_tokens=False)

    def detokenizer(self) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self)


class IncrementalDetokenizer:
    """Turns a growing token list into text deltas that concatenate to the final text.

    Each delta is the difference between decoding a short window of recent tokens with and
    without the new ones, so word-joining decoders (SentencePiece's leading space, BPE merges)
    see the same context both times; a delta ending in a partial character waits for more tokens,
    and so does one ending in a byte-fallback piece (its run decodes only as a whole), so window
    boundaries never split such a run.
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
        if (
            len(text) <= len(prefix)
            or text.endswith(REPLACEMENT_CHAR)
            or self._tokenizer.ends_in_byte_run(self._ids)
        ):
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


def _byte_fallback_pieces(tokenizer: Tokenizer) -> frozenset[int]:
    """The ids of the `<0x..>` pieces of a model with byte fallback (none otherwise)."""
    model = json.loads(tokenizer.to_str()).get("model", {})
    if not model.get("byte_fallback"):
        return frozenset()
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    return frozenset(i for token, i in vocab.items() if BYTE_PIECE.fullmatch(token))


def _closing_specials(special_mask: list[int]) -> int:
    """How many special tokens close the encoding (kept when it is truncated)."""
    count = 0
    for special in reversed(special_mask):
        if not special:
            break
        count += 1
    return count
