"""The model manifest (`model.json`): the one schema shared by the exporter and the server.

The exporter writes it, the server reads it and nothing else; so every fact the server needs to
run a model (graph names, dims, special tokens, generation defaults) lives here.
See docs/graph-contract.md for the graph contract it describes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.runtime.tasks import Task

MANIFEST_FILE = "model.json"
FORMAT_VERSION = 1
ARCHITECTURES = ("bart", "t5", "vision-encoder-decoder", "blip")
DTYPES = ("fp32", "fp16", "int8")


class ManifestError(ValueError):
    """The model directory is missing a file or its manifest is malformed."""


@dataclass
class GraphSpec:
    """One ONNX graph: its file (relative to the model directory) and io names."""

    file: str
    inputs: list[str]
    outputs: list[str]


@dataclass
class ModelDims:
    num_layers: int  # decoder layers (one past/cross K/V pair each)
    num_heads: int  # decoder attention heads
    head_dim: int
    hidden_size: int
    vocab_size: int


@dataclass
class SpecialTokens:
    pad: int
    eos: list[int]  # any of these ends a sequence
    decoder_start: int  # first decoder token
    bos: int | None = None


@dataclass
class GenerationDefaults:
    """The checkpoint's generation defaults, in transformers' generation_config terms."""

    max_length: int = 20  # total decoder length, decoder_start included (transformers' meaning)
    min_length: int = 0
    max_new_tokens: int | None = None  # wins over max_length when set
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    # Tokens generate() never produces (transformers' bad_words_ids, single-token entries only:
    # Marian bans its <pad>, which is also its decoder start).
    bad_words_ids: list[list[int]] | None = None

    def banned_tokens(self) -> list[int]:
        """The token ids no sequence may contain (the one-token bad words)."""
        return [ids[0] for ids in self.bad_words_ids or []]


@dataclass
class ImagePreprocessing:
    """How to turn an RGB image into `pixel_values` (done in numpy by the server)."""

    height: int
    width: int
    mean: list[float]
    std: list[float]
    rescale_factor: float = 1.0 / 255.0
    resample: str = "bilinear"  # PIL resample filter name


@dataclass
class CrossAttentionSpec:
    """The decoder's cross-attention output: which layers it averages and, for images, how its
    encoder positions map onto the image (see docs/graph-contract.md)."""

    layers: list[int]  # decoder layers averaged (0-based)
    output: str = "cross_attention"  # the decoder output name
    reduction: str = "mean over heads and layers"
    source_prefix: int = 0  # image models: encoder positions before the patch grid (class tokens)
    patch_grid: list[int] | None = None  # image models: [rows, cols], row-major after the prefix

    def validate(self, num_layers: int, max_input_tokens: int, image_model: bool) -> None:
        if not self.layers:
            raise ManifestError("cross_attention.layers is empty")
        if len(set(self.layers)) != len(self.layers):
            raise ManifestError(f"cross_attention.layers has duplicates: {self.layers}")
        if any(not 0 <= layer < num_layers for layer in self.layers):
            raise ManifestError(
                f"cross_attention.layers {self.layers} must lie in 0..{num_layers - 1}"
            )
        if not image_model:
            return
        if self.patch_grid is None or len(self.patch_grid) != 2 or min(self.patch_grid) < 1:
            raise ManifestError(
                "cross_attention.patch_grid must be [rows, cols] for an image model"
            )
        rows, cols = self.patch_grid
        if self.source_prefix < 0 or self.source_prefix + rows * cols != max_input_tokens:
            raise ManifestError(
                f"cross_attention: source_prefix {self.source_prefix} + patch_grid {rows}x{cols} "
                f"!= the encoder length max_input_tokens {max_input_tokens}"
            )


@dataclass
class ModelManifest:
    name: str
    version: str
    task: str
    architecture: str
    model_type: str  # the checkpoint's config.model_type (e.g. "bart", "pegasus", "t5")
    dtype: str
    opset: int
    encoder: GraphSpec
    decoder: GraphSpec
    dims: ModelDims
    special_tokens: SpecialTokens
    generation: GenerationDefaults
    max_input_tokens: int  # text models: longest accepted input; image models: encoder length
    decoder_prompt: list[int] = field(default_factory=list)  # tokens after decoder_start (BLIP)
    # Longest decoder sequence (decoder_start and prompt included) the position table allows;
    # None: no hard limit (T5's relative positions) or a manifest written before this field.
    max_decoder_positions: int | None = None
    tokenizer_file: str = "tokenizer.json"
    image: ImagePreprocessing | None = None
    # None: exported without the cross_attention output (older model directories stay servable)
    cross_attention: CrossAttentionSpec | None = None
    exporter: dict[str, str] = field(default_factory=dict)  # tool versions used for the export
    parity: dict[str, Any] = field(default_factory=dict)  # the export-time parity report
    format_version: int = FORMAT_VERSION

    def validate(self) -> None:
        """Reject a manifest the server could not run, with a message naming the field."""
        if self.format_version != FORMAT_VERSION:
            raise ManifestError(f"unsupported manifest format_version {self.format_version}")
        if self.task not in tuple(Task):
            raise ManifestError(f"task must be one of {[str(t) for t in Task]}, got {self.task!r}")
        if self.architecture not in ARCHITECTURES:
            raise ManifestError(f"architecture must be one of {ARCHITECTURES}")
        if self.dtype not in DTYPES:
            raise ManifestError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.task == Task.CAPTIONING and self.image is None:
            raise ManifestError("a captioning model needs image preprocessing settings")
        if not self.special_tokens.eos:
            raise ManifestError("special_tokens.eos is empty")
        if any(len(ids) != 1 for ids in self.generation.bad_words_ids or []):
            raise ManifestError(
                "generation.bad_words_ids: only single-token entries are supported, got "
                f"{self.generation.bad_words_ids}"
            )
        prompt_len = 1 + len(self.decoder_prompt)
        if self.max_decoder_positions is not None and self.max_decoder_positions <= prompt_len:
            raise ManifestError(
                f"max_decoder_positions ({self.max_decoder_positions}) leaves no room after the "
                f"{prompt_len} decoder prompt tokens"
            )
        attention = self.cross_attention
        if attention is not None:
            attention.validate(
                self.dims.num_layers, self.max_input_tokens, self.task == Task.CAPTIONING
            )
            if attention.output not in self.decoder.outputs:
                raise ManifestError(
                    f"cross_attention.output {attention.output!r} is not a decoder output"
                )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    def save(self, model_dir: Path) -> None:
        (Path(model_dir) / MANIFEST_FILE).write_text(self.to_json() + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelManifest:
        try:
            image, attention = data.get("image"), data.get("cross_attention")
            manifest = cls(
                **{
                    **data,
                    "encoder": GraphSpec(**data["encoder"]),
                    "decoder": GraphSpec(**data["decoder"]),
                    "dims": ModelDims(**data["dims"]),
                    "special_tokens": SpecialTokens(**data["special_tokens"]),
                    "generation": GenerationDefaults(**data["generation"]),
                    "image": ImagePreprocessing(**image) if image else None,
                    "cross_attention": CrossAttentionSpec(**attention) if attention else None,
                }
            )
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"malformed manifest: {exc}") from exc
        manifest.validate()
        return manifest

    @classmethod
    def load(cls, model_dir: Path) -> ModelManifest:
        """Read and check `model.json` and the files it names."""
        model_dir = Path(model_dir)
        path = model_dir / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(f"{model_dir} has no {MANIFEST_FILE}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
        manifest = cls.from_dict(data)
        for rel in (manifest.encoder.file, manifest.decoder.file, manifest.tokenizer_file):
            if not (model_dir / rel).is_file():
                raise ManifestError(f"{model_dir} is missing {rel}, named in its manifest")
        return manifest
