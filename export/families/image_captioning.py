"""What the image captioning families (VisionEncoderDecoder, BLIP) share.

Both are a vision transformer whose final states feed the cross-attention of a text decoder. A
family only says where its vision encoder and text decoder live and which special tokens
generate() uses; the export wrappers, dims, encoder length and image settings are common.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import AutoImageProcessor

from export.errors import ExportError
from export.families.base import ExportFamily
from export.families.decoder_inputs import DecoderLayerInputs, DecoderStepWrapper
from export.families.text_decoders import TextDecoder, text_decoder_for
from service.runtime.manifest import ImagePreprocessing, ModelDims
from service.runtime.tasks import Task


class ImageEncoderWrapper(torch.nn.Module):
    """forward(pixel_values) -> (encoder_hidden_states, cross_key_0, cross_value_0, ...)."""

    def __init__(self, vision_encoder: torch.nn.Module, decoder: TextDecoder) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder
        self.decoder = decoder.model  # a submodule, so eval() and the exporter reach its weights
        self._text_decoder = decoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        states = self.vision_encoder(pixel_values)
        cross: list[torch.Tensor] = []
        for layer_idx in range(len(self._text_decoder.layers)):
            cross += self._text_decoder.cross_key_value(layer_idx, states)
        return (states, *cross)


class CachedDecoderWrapper(DecoderStepWrapper):
    """A captioner's text decoder step, through its TextDecoder view."""

    def __init__(self, decoder: TextDecoder, attention_layers: Sequence[int] | None = None) -> None:
        super().__init__(attention_layers)
        self.decoder = decoder.model  # a submodule, so eval() and the exporter reach its weights
        self._text_decoder = decoder

    @property
    def num_layers(self) -> int:
        return len(self._text_decoder.layers)

    def cross_attention_modules(self) -> list[torch.nn.Module]:
        return [self._text_decoder.cross_attention(i) for i in range(self.num_layers)]

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self._text_decoder.embed(input_ids, position_ids)

    def run_layers(self, hidden: torch.Tensor, step: DecoderLayerInputs) -> torch.Tensor:
        for layer_idx in range(self.num_layers):
            hidden = self._text_decoder.run_layer(layer_idx, hidden, step)
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._text_decoder.logits(hidden)


class ImageCaptioningFamily(ExportFamily):
    task = Task.CAPTIONING

    @abstractmethod
    def vision_encoder(self, model: Any) -> torch.nn.Module:
        """A module pixel_values -> the encoder states the decoder's cross-attention reads."""

    @abstractmethod
    def text_decoder_model(self, model: Any) -> torch.nn.Module:
        """The decoder model with cross-attention (e.g. GPT2LMHeadModel)."""

    @abstractmethod
    def vision_config(self, model: Any) -> Any:
        """The vision encoder's config (its image_size and patch_size)."""

    def image_size(self, model: Any) -> tuple[int, int]:
        """(height, width) the vision encoder was built for."""
        return _pair(self.vision_config(model).image_size)

    def patch_grid(self, model: Any) -> tuple[int, int]:
        """(rows, cols) of non-overlapping patches the vision encoder cuts the image into."""
        height, width = self.image_size(model)
        patch_height, patch_width = _pair(self.vision_config(model).patch_size)
        return height // patch_height, width // patch_width

    def text_decoder(self, model: Any) -> TextDecoder:
        return text_decoder_for(self.text_decoder_model(model))

    def encoder_wrapper(self, model: Any) -> torch.nn.Module:
        return ImageEncoderWrapper(self.vision_encoder(model), self.text_decoder(model)).eval()

    def decoder_wrapper(
        self, model: Any, attention_layers: Sequence[int] | None = None
    ) -> torch.nn.Module:
        return CachedDecoderWrapper(self.text_decoder(model), attention_layers).eval()

    def dims(self, model: Any) -> ModelDims:
        return self.text_decoder(model).dims()

    def max_input_tokens(self, model: Any) -> int:
        """The encoder length (patches plus class/distillation tokens), found by running the
        vision encoder once rather than by a per-architecture formula."""
        height, width = self.image_size(model)
        parameter = next(model.parameters())
        blank = torch.zeros(1, 3, height, width, dtype=parameter.dtype, device=parameter.device)
        with torch.no_grad():
            return int(self.vision_encoder(model)(blank).shape[1])

    def max_decoder_positions(self, model: Any) -> int | None:
        """The text decoder's position table (GPT-2's n_positions is aliased to this name)."""
        return int(self.text_decoder_model(model).config.max_position_embeddings)

    def image_preprocessing(self, model_dir: str) -> ImagePreprocessing:
        return read_image_preprocessing(model_dir)


def read_image_preprocessing(model_dir: str) -> ImagePreprocessing:
    """The resize/rescale/normalise settings of the checkpoint's image processor, as
    transformers loads it (legacy feature-extractor files and class defaults included)."""
    try:
        processor = AutoImageProcessor.from_pretrained(model_dir)
    except Exception as exc:  # transformers raises many types for a missing or odd file
        raise ExportError(
            f"{model_dir}: its image processor (preprocessor_config.json) cannot be read: {exc}"
        ) from exc
    height, width = getattr(processor.size, "height", None), getattr(processor.size, "width", None)
    if not (processor.do_resize and height and width):
        raise ExportError(f"{model_dir}: the image processor must resize to a fixed height x width")
    if getattr(processor, "do_center_crop", False) or getattr(processor, "do_pad", False):
        raise ExportError(f"{model_dir}: image processors that crop or pad are not supported")
    normalize = processor.do_normalize
    return ImagePreprocessing(
        height=int(height),
        width=int(width),
        mean=_per_channel(processor.image_mean) if normalize else [0.0, 0.0, 0.0],
        std=_per_channel(processor.image_std) if normalize else [1.0, 1.0, 1.0],
        rescale_factor=float(processor.rescale_factor) if processor.do_rescale else 1.0,
        resample=Image.Resampling(int(processor.resample)).name.lower(),
    )


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    """A config size given as one int (square) or as (height, width)."""
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _per_channel(value: float | Sequence[float]) -> list[float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"expected 3 per-channel values, got {values}")
    return values
