"""VisionEncoderDecoderModel (ViT/DeiT encoder, GPT-2 or BERT-style decoder), e.g.
nlpconnect/vit-gpt2-image-captioning."""

from __future__ import annotations

from typing import Any

import torch

from export.families.base import first_set
from export.families.image_captioning import ImageCaptioningFamily
from service.runtime.manifest import SpecialTokens


class VisionEncoderStates(torch.nn.Module):
    """pixel_values -> the states the decoder's cross-attention reads: the encoder's last hidden
    state, through `enc_to_dec_proj` where the checkpoint has one (encoder and decoder widths
    differ), exactly as VisionEncoderDecoderModel.forward does."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.projection = getattr(model, "enc_to_dec_proj", None)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        states = self.encoder(pixel_values=pixel_values).last_hidden_state
        return states if self.projection is None else self.projection(states)


class VisionEncoderDecoderFamily(ImageCaptioningFamily):
    architecture = "vision-encoder-decoder"
    model_types = ("vision-encoder-decoder",)

    def vision_encoder(self, model: Any) -> torch.nn.Module:
        return VisionEncoderStates(model)

    def text_decoder_model(self, model: Any) -> torch.nn.Module:
        return model.decoder

    def vision_config(self, model: Any) -> Any:
        return model.config.encoder

    def special_tokens(self, model: Any) -> SpecialTokens:
        """The ids generate() uses: its generation_config first, then the model configs."""
        sources = (self.generation_config(model), model.config, model.config.decoder)
        decoder_start = first_set(sources, "decoder_start_token_id")
        if decoder_start is None:
            decoder_start = first_set(sources, "bos_token_id")
        eos = first_set(sources, "eos_token_id")
        if decoder_start is None or eos is None:
            raise ValueError("the checkpoint defines no decoder_start_token_id/eos_token_id")
        eos_ids = [int(eos)] if isinstance(eos, int) else [int(i) for i in eos]
        pad = first_set(sources, "pad_token_id")
        bos = first_set(sources, "bos_token_id")
        return SpecialTokens(
            pad=eos_ids[0] if pad is None else int(pad),
            eos=eos_ids,
            decoder_start=int(decoder_start),
            bos=None if bos is None else int(bos),
        )
