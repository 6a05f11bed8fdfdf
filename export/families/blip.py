"""BlipForConditionalGeneration (ViT-style vision model, BERT-style text decoder), e.g.
Salesforce/blip-image-captioning-base.

Its generate() (transformers 5.24) starts the text decoder with [bos_token_id] (the [DEC] token)
for unconditional captioning and stops at sep_token_id, not eos_token_id. Its other generation
settings come from `model.text_decoder.generation_config`, not the checkpoint's
generation_config.json.
"""

from __future__ import annotations

from typing import Any

import torch

from export.families.image_captioning import ImageCaptioningFamily
from service.runtime.manifest import SpecialTokens


class BlipVisionStates(torch.nn.Module):
    """pixel_values -> the vision model's last hidden state (post-LayerNorm), as generate() feeds
    the text decoder's cross-attention."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.vision_model = model.vision_model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values=pixel_values).last_hidden_state


class BlipFamily(ImageCaptioningFamily):
    architecture = "blip"
    model_types = ("blip",)

    def vision_encoder(self, model: Any) -> torch.nn.Module:
        return BlipVisionStates(model)

    def text_decoder_model(self, model: Any) -> torch.nn.Module:
        return model.text_decoder

    def vision_config(self, model: Any) -> Any:
        return model.config.vision_config

    def reference_cross_attentions(
        self, model: Any, inputs: dict[str, torch.Tensor], decoder_input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """BLIP's own forward drops its text decoder's cross_attentions: ask the text decoder,
        over the image states BLIP's forward gives it."""
        image_states = self.vision_encoder(model)(inputs["pixel_values"])
        outputs = model.text_decoder(
            input_ids=decoder_input_ids,
            encoder_hidden_states=image_states,
            output_attentions=True,
        )
        return outputs.cross_attentions

    def generation_config(self, model: Any) -> Any:
        """BLIP's generate() hands over to its text decoder, which reads its own config."""
        return model.text_decoder.generation_config

    def special_tokens(self, model: Any) -> SpecialTokens:
        text = model.config.text_config
        return SpecialTokens(
            pad=int(text.pad_token_id),
            eos=[int(text.sep_token_id)],
            decoder_start=int(text.bos_token_id),
            bos=int(text.bos_token_id),
        )
