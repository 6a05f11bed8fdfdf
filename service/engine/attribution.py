"""Turn a request's per-token cross-attention into what a client can read.

The decoder returns, for each generated token, one weight per encoder position (see
docs/graph-contract.md). For text those positions are source tokens, which a reader knows as
words of the text they sent: weights are summed per word and the best words are returned with
their character offsets. For images the positions after the class token(s) are the patches of
the vision encoder's grid, returned row-major so a client can draw a heatmap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.engine.types import Attribution, SourceSpan, TokenAttribution
from service.runtime.manifest import CrossAttentionSpec
from service.runtime.tokenizer import EncodedText


def describe_reduction(spec: CrossAttentionSpec, num_layers: int) -> str:
    """E.g. "mean over heads and layers of decoder layers 0, 1, 2 (of 3)"."""
    layers = ", ".join(str(layer) for layer in spec.layers)
    return f"{spec.reduction} of decoder layers {layers} (of {num_layers})"


@dataclass
class TextSource:
    """The source text's tokens and words, as character spans of the request's text."""

    token_spans: list[SourceSpan]  # one per encoder position; special tokens: empty spans
    word_spans: list[SourceSpan]  # one per word
    word_of_token: np.ndarray  # int64 [S]: the word each token belongs to, -1 for specials
    top_k: int
    full: bool

    @classmethod
    def from_encoding(cls, text: str, encoded: EncodedText, top_k: int, full: bool) -> TextSource:
        token_spans = [
            _trimmed(text, start, end) if word is not None else SourceSpan(0, 0, "")
            for (start, end), word in zip(encoded.offsets, encoded.word_ids, strict=True)
        ]
        word_ids = sorted({word for word in encoded.word_ids if word is not None})
        index_of = {word: index for index, word in enumerate(word_ids)}
        word_of_token = np.array(
            [-1 if word is None else index_of[word] for word in encoded.word_ids], np.int64
        )
        word_spans = []
        for index in range(len(word_ids)):
            members = np.flatnonzero(word_of_token == index)
            start = min(token_spans[i].start for i in members)
            end = max(token_spans[i].end for i in members)
            word_spans.append(_trimmed(text, start, end))
        return cls(token_spans, word_spans, word_of_token, top_k, full)

    def header(self, reduction: str) -> Attribution:
        spans = [SourceSpan(s.start, s.end, s.text) for s in self.token_spans] if self.full else []
        return Attribution(reduction=reduction, tokens=[], source_tokens=spans)

    def spans_and_weights(self, weights: np.ndarray) -> tuple[list[SourceSpan], list[float]]:
        """The top-k words by summed weight, and (explain_full) every token's weight."""
        words = self.word_of_token >= 0
        per_word = np.bincount(
            self.word_of_token[words], weights=weights[words], minlength=len(self.word_spans)
        )
        best = np.argsort(-per_word, kind="stable")[: self.top_k]
        top = [
            SourceSpan(span.start, span.end, span.text, float(per_word[i]))
            for i in best
            for span in (self.word_spans[i],)
        ]
        return top, weights.tolist() if self.full else []


@dataclass
class ImageSource:
    """The vision encoder's patch grid: encoder positions [prefix, prefix + rows * cols)."""

    rows: int
    cols: int
    prefix: int  # class (and distillation) tokens before the grid

    def header(self, reduction: str) -> Attribution:
        return Attribution(reduction=reduction, tokens=[], grid_rows=self.rows, grid_cols=self.cols)

    def spans_and_weights(self, weights: np.ndarray) -> tuple[list[SourceSpan], list[float]]:
        return [], weights[self.prefix : self.prefix + self.rows * self.cols].tolist()


SourceLayout = TextSource | ImageSource


class Attributor:
    """Builds one request's Attribution messages, the source description on the first only."""

    def __init__(
        self, source: SourceLayout, reduction: str, token_text: Callable[[int], str]
    ) -> None:
        self._source = source
        self._reduction = reduction
        self._token_text = token_text
        self._described = False

    def attribute(self, token_ids: list[int], attention: np.ndarray) -> Attribution:
        """The attribution of `token_ids`, whose cross-attention rows are `attention` [n, S]."""
        if len(token_ids) != attention.shape[0]:
            raise ValueError(f"{len(token_ids)} tokens but {attention.shape[0]} attention rows")
        if self._described:
            out = Attribution(reduction=self._reduction, tokens=[])
        else:
            out = self._source.header(self._reduction)
            self._described = True
        for token_id, weights in zip(token_ids, attention, strict=True):
            top, full = self._source.spans_and_weights(np.asarray(weights, np.float64))
            text = self._token_text(int(token_id))
            out.tokens.append(TokenAttribution(int(token_id), text, top, full))
        return out


def _trimmed(text: str, start: int, end: int) -> SourceSpan:
    """The span without surrounding whitespace (SentencePiece tokens include the space before)."""
    piece = text[start:end]
    start += len(piece) - len(piece.lstrip())
    end -= len(piece) - len(piece.rstrip())
    return SourceSpan(start, max(start, end), text[start : max(start, end)])
