"""Request preparation: a client's text or image and settings -> a queued-ready SequenceGroup.

Validates the settings against the model's generation defaults and the server's caps, tokenizes
the text (or decodes and resizes the image, and tokenizes a captioning prompt), and reserves the
request's peak K/V bytes. It runs before the request reaches the scheduler, never on the step
thread. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from service.engine.attribution import ImageSource, SourceLayout, TextSource
from service.engine.config import EngineConfig
from service.engine.sequence import SequenceGroup, StepEvent
from service.engine.types import GenerationParams
from service.engine.validation import resolve_params
from service.errors import InvalidArgument
from service.runtime.images import load_pixel_values
from service.runtime.model import LoadedModel
from service.runtime.tasks import Task


class RequestPreparer:
    """Prepares requests for one model."""

    def __init__(self, model: LoadedModel, config: EngineConfig) -> None:
        self.model = model
        self.config = config
        self.manifest = model.manifest
        self.prompt_len = 1 + len(self.manifest.decoder_prompt)

    def prepare(
        self,
        text: str | None,
        image: bytes | None,
        params: GenerationParams,
        emit: Callable[[StepEvent], None],
        deadline: float | None = None,
        prompt: str | None = None,
    ) -> SequenceGroup:
        """Validate and encode one request's input; InvalidArgument for anything wrong in it."""
        prompt_ids = self._prompt_ids(prompt)
        resolved = resolve_params(
            params,
            self.manifest.generation,
            self.config,
            self.prompt_len + prompt_ids.size,
            self.manifest.max_decoder_positions,
            explainable=self.model.explainable,
        )
        source: SourceLayout | None = None
        if self.manifest.task == Task.CAPTIONING:
            if not image:
                raise InvalidArgument("image is empty")
            prep = self.manifest.image
            assert prep is not None  # the manifest guarantees it for captioning
            pixels = load_pixel_values(
                image, prep, self.config.max_image_pixels, self.config.max_image_bytes
            )
            feeds = {"pixel_values": pixels.astype(self.model.kv_dtype)}
            input_tokens = encoder_length = self.manifest.max_input_tokens
            truncated = False
            if resolved.explain:
                source = self._image_source()
        else:
            encoded = self.model.tokenizer.encode_with_offsets(text or "", resolved.truncate)
            truncated = encoded.truncated
            feeds = {"input_ids": encoded.ids[None, :]}
            input_tokens = encoder_length = int(encoded.ids.size)
            if resolved.explain:
                source = TextSource.from_encoding(
                    text or "", encoded, resolved.explain_top_k, resolved.explain_full
                )
        reservation = (
            resolved.num_beams
            * (resolved.max_length + encoder_length)
            * self.model.kv_bytes_per_position
        )
        return SequenceGroup(
            params=resolved,
            encoder_feeds=feeds,
            input_tokens=input_tokens,
            emit=emit,
            deadline=deadline,
            kv_reservation=reservation,
            explain_source=source,
            truncated=truncated,
            prompt_ids=prompt_ids,
        )

    def _prompt_ids(self, prompt: str | None) -> np.ndarray:
        """A captioning prompt's decoder tokens (none without a prompt): the model's tokenizer
        without its special tokens, as BLIP's processor + generate() give them (its [CLS] is
        replaced by the decoder start and its [SEP] dropped). The prompt must leave the decoder
        room for one new token; each of its tokens costs a decoder step, so the server's
        max_new_tokens cap bounds it too."""
        if not prompt:
            return np.zeros(0, np.int64)
        if self.manifest.task != Task.CAPTIONING:
            raise InvalidArgument("prompt is for captioning models; this model summarizes text")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(
                "prompt is not valid UTF-8 text (it holds a lone surrogate)"
            ) from None
        if not any(char.isprintable() and not char.isspace() for char in prompt):
            raise InvalidArgument("prompt has no printable character")
        ids = np.asarray(self.model.tokenizer.encode_prompt(prompt), np.int64)
        if ids.size == 0:
            raise InvalidArgument("prompt has no tokens in this model's vocabulary")
        outside = ids[ids >= self.manifest.dims.vocab_size]
        if outside.size:
            raise InvalidArgument(
                f"prompt token {int(outside[0])} is outside this model's vocabulary "
                f"({self.manifest.dims.vocab_size} tokens)"
            )
        positions = self.manifest.max_decoder_positions
        limit = self.config.max_new_tokens_cap
        if positions is not None:
            limit = min(limit, positions - self.prompt_len - 1)
        if ids.size > limit:
            raise InvalidArgument(
                f"prompt is {ids.size} tokens long; this model accepts at most {limit} prompt "
                f"tokens (its decoder holds {positions} positions, {self.prompt_len} taken by its "
                f"start tokens and one kept for the caption; the server caps prompts at "
                f"--max-new-tokens-cap {self.config.max_new_tokens_cap})"
            )
        return ids

    def _image_source(self) -> ImageSource:
        spec = self.manifest.cross_attention
        assert spec is not None and spec.patch_grid is not None  # checked by the manifest
        rows, cols = spec.patch_grid
        return ImageSource(rows=rows, cols=cols, prefix=spec.source_prefix)
