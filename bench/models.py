"""Benchmark models: real architectures and sizes with random weights, built from configs.

No model hub is needed: each checkpoint is made from its transformers config with a word-level
tokenizer of the real vocabulary size (words w0, w1, ...), so a text of n words is n tokens plus
the model's specials. Random weights decode the same amount of work as trained ones when the
output length is forced (min_new_tokens = max_new_tokens). Checkpoints and their exports are
cached under the output directory and reused.

torch and transformers are imported inside the builders: they are export-time dependencies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.runtime.manifest import MANIFEST_FILE

IMAGE_PREPROCESSOR = {
    "image_processor_type": "ViTImageProcessor",
    "do_resize": True,
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}


@dataclass(frozen=True)
class BenchModel:
    """A served model name, its task, and how to write its random-weight checkpoint."""

    name: str
    task: str
    build: Callable[[Path], None]
    description: str


def _word_tokenizer(model_dir: Path, vocab_size: int, specials: list[str], template: str) -> None:
    """A word-level tokenizer over `specials` then w0, w1, ... up to `vocab_size` entries;
    `template` is the post-processor's single-sequence template (e.g. "<s> $A </s>")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = [f"w{i}" for i in range(vocab_size - len(specials))]
    vocab = {token: i for i, token in enumerate(specials + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[-1]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(specials)
    used = [(t, vocab[t]) for t in template.split() if t in vocab]
    tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=used)
    tokenizer.save(str(model_dir / "tokenizer.json"))


def _save(model: Any, model_dir: Path, generation: dict[str, int]) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(model_dir)


def bart_builder(
    d_model: int, layers: int, heads: int, ffn: int, vocab: int, positions: int
) -> Callable[[Path], None]:
    """BART with these sizes; specials <s>=0 <pad>=1 </s>=2 <unk>=3 as in facebook/bart-*."""

    def build(model_dir: Path) -> None:
        import torch
        from transformers import BartConfig, BartForConditionalGeneration

        torch.manual_seed(0)
        ids = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}
        config = BartConfig(
            vocab_size=vocab,
            d_model=d_model,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=ffn,
            decoder_ffn_dim=ffn,
            max_position_embeddings=positions,
            decoder_start_token_id=2,
            **ids,
        )
        _save(
            BartForConditionalGeneration(config).eval(),
            model_dir,
            {"decoder_start_token_id": 2, **ids},
        )
        _word_tokenizer(model_dir, vocab, ["<s>", "<pad>", "</s>", "<unk>"], "<s> $A </s>")

    return build


def t5_builder(**sizes: int) -> Callable[[Path], None]:
    """T5 v1.0 with T5Config's defaults (t5-small's sizes) overridden by `sizes`."""

    def build(model_dir: Path) -> None:
        import torch
        from transformers import T5Config, T5ForConditionalGeneration

        torch.manual_seed(0)
        ids = {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}
        model = T5ForConditionalGeneration(T5Config(**ids, **sizes)).eval()
        _save(model, model_dir, ids)
        specials = ["<pad>", "</s>", "<unk>"]
        _word_tokenizer(model_dir, model.config.vocab_size, specials, "$A </s>")

    return build


def _build_vit_gpt2(model_dir: Path) -> None:
    """nlpconnect/vit-gpt2-image-captioning's shape: ViT-base 224/16 + GPT-2 small; the
    defaults of ViTConfig and GPT2Config are those sizes. <|endoftext|>=0 is bos, eos and pad."""
    import torch
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )

    torch.manual_seed(0)
    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "decoder_start_token_id": 0}
    decoder = GPT2Config(**{k: v for k, v in ids.items() if k != "decoder_start_token_id"})
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(), decoder)
    for key, value in ids.items():
        setattr(config, key, value)
    _save(VisionEncoderDecoderModel(config=config).eval(), model_dir, ids)
    _word_tokenizer(model_dir, decoder.vocab_size, ["<|endoftext|>"], "$A")
    size = {"height": 224, "width": 224}
    (model_dir / "preprocessor_config.json").write_text(
        json.dumps({**IMAGE_PREPROCESSOR, "size": size}, indent=2)
    )


BENCH_MODELS: dict[str, BenchModel] = {
    m.name: m
    for m in (
        BenchModel(
            "bart-base",
            "summarization",
            bart_builder(768, 6, 12, 3072, 50265, 1024),
            "facebook/bart-base shape: d_model 768, 6+6 layers, 12 heads, vocab 50265",
        ),
        BenchModel(
            "bart-large-cnn",
            "summarization",
            bart_builder(1024, 12, 16, 4096, 50264, 1024),
            "facebook/bart-large-cnn shape: d_model 1024, 12+12 layers, 16 heads, vocab 50264",
        ),
        BenchModel(
            "t5-small",
            "summarization",
            t5_builder(),
            "google-t5/t5-small shape: d_model 512, 6+6 layers, 8 heads, vocab 32128",
        ),
        BenchModel(
            "t5-base",
            "summarization",
            t5_builder(d_model=768, d_ff=3072, num_layers=12, num_heads=12),
            "google-t5/t5-base shape: d_model 768, 12+12 layers, 12 heads, vocab 32128",
        ),
        BenchModel(
            "vit-gpt2",
            "captioning",
            _build_vit_gpt2,
            "nlpconnect/vit-gpt2 shape: ViT-base 224x224/16 + GPT-2 small, vocab 50257",
        ),
        BenchModel(
            "bart-tiny",
            "summarization",
            bart_builder(64, 2, 4, 128, 1024, 1024),
            "BART, d_model 64, 2+2 layers, vocab 1024 (quick runs and tests)",
        ),
    )
}


def checkpoint_dir(out_dir: Path, name: str) -> Path:
    """The random-weight transformers checkpoint of bench model `name`, built once."""
    path = Path(out_dir) / "checkpoints" / name
    if not (path / "config.json").is_file():
        path.mkdir(parents=True, exist_ok=True)
        BENCH_MODELS[name].build(path)
    return path


def exported_model(out_dir: Path, name: str, progress: Callable[[str], None] = print) -> Path:
    """The attnserve model directory of bench model `name`, exported once (fp32) and reused.
    Each sits alone in `<out_dir>/served/<name>/` so a server can be pointed at just it."""
    from export.exporter import export_model

    model_dir = Path(out_dir) / "served" / name / name
    if not (model_dir / MANIFEST_FILE).is_file():
        checkpoint = checkpoint_dir(out_dir, name)
        export_model(checkpoint, BENCH_MODELS[name].task, model_dir, name=name, progress=progress)
    return model_dir
