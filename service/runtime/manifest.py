"""The model manifest (`model.json`): the one schema shared by the exporter and the server.

The exporter writes it, the server reads it and nothing else; so every fact the server needs to
run a model (graph names, dims, special tokens, generation defaults) lives here.
See docs/graph-contract.md for the graph contract it describes.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from service.runtime.tasks import Task

MANIFEST_FILE = "model.json"
FORMAT_VERSION = 1
ARCHITECTURES = ("bart", "t5", "vision-encoder-decoder", "blip")
DTYPES = ("fp32", "fp16", "int8")
INT32_MAX = 2**31 - 1  # every integer of a manifest fits int32, as the APIs' fields do
# An image side larger than this is no vision encoder's input (ViT and BLIP take 224-384): a
# 100000x100000 model.json made the warm-up image alone 30 GB and the server was OOM-killed.
MAX_IMAGE_SIDE = 4096
# Bounds that keep decoding's float32 arithmetic finite, found by fuzzing the API; a request's
# values and a model's defaults are held to the same ones. Below MIN_SAMPLING_TEMPERATURE,
# logits / temperature overflow to inf and sampling breaks (it is greedy decoding by then). Beam
# search divides scores by length ** length_penalty, which overflows beyond LENGTH_PENALTY_RANGE.
# Repetition penalties outside their range turn a repeated token's score into inf or 0.
MIN_SAMPLING_TEMPERATURE = 1e-4
REPETITION_PENALTY_RANGE = (1e-4, 1e4)
LENGTH_PENALTY_RANGE = (-10.0, 10.0)
RESAMPLE_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")


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

    def validate(self) -> None:
        """Values generate() could not run with: every request taking a default would fail
        (or, as max_length -5 did, answer nothing) for a mistake of the model's."""
        _at_least("generation.max_length", self.max_length, 1)
        _at_least("generation.min_length", self.min_length, 0)
        if self.max_new_tokens is not None:
            _at_least("generation.max_new_tokens", self.max_new_tokens, 1)
        _at_least("generation.num_beams", self.num_beams, 1)
        _at_least("generation.top_k", self.top_k, 0)
        _at_least("generation.no_repeat_ngram_size", self.no_repeat_ngram_size, 0)
        if not 0 < self.top_p <= 1:
            raise ManifestError(f"generation.top_p must be in (0, 1], got {self.top_p}")
        for label, value, (low, high) in (
            ("repetition_penalty", self.repetition_penalty, REPETITION_PENALTY_RANGE),
            ("length_penalty", self.length_penalty, LENGTH_PENALTY_RANGE),
        ):
            if not low <= value <= high:
                raise ManifestError(f"generation.{label} must be in {low:g}..{high:g}, got {value}")
        if self.temperature < 0:
            raise ManifestError(f"generation.temperature must be >= 0, got {self.temperature}")
        if self.do_sample and self.temperature < MIN_SAMPLING_TEMPERATURE:
            raise ManifestError(
                f"generation.temperature must be > 0 (at least {MIN_SAMPLING_TEMPERATURE:g}) "
                f"when do_sample is on, got {self.temperature}"
            )
        if isinstance(self.early_stopping, str) and self.early_stopping != "never":
            raise ManifestError(
                'generation.early_stopping must be true, false or "never", got '
                f"{self.early_stopping!r}"
            )

    def token_ids(self) -> dict[str, list[int]]:
        """Every token id the defaults name, by field."""
        return {
            "generation.forced_bos_token_id": _present(self.forced_bos_token_id),
            "generation.forced_eos_token_id": _present(self.forced_eos_token_id),
            "generation.bad_words_ids": [i for ids in self.bad_words_ids or [] for i in ids],
        }


@dataclass
class ImagePreprocessing:
    """How to turn an RGB image into `pixel_values` (done in numpy by the server)."""

    height: int
    width: int
    mean: list[float]
    std: list[float]
    rescale_factor: float = 1.0 / 255.0
    resample: str = "bilinear"  # PIL resample filter name

    def validate(self) -> None:
        for side in ("height", "width"):
            value = getattr(self, side)
            if not 1 <= value <= MAX_IMAGE_SIDE:
                raise ManifestError(f"image.{side} must be in 1..{MAX_IMAGE_SIDE}, got {value}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, 3):
                raise ManifestError(f"image.{name} must hold 1 or 3 values (RGB)")
        if min(self.std) <= 0:
            raise ManifestError(f"image.std must be > 0 (it divides), got {self.std}")
        if self.rescale_factor <= 0:
            raise ManifestError(f"image.rescale_factor must be > 0, got {self.rescale_factor}")
        if self.resample.lower() not in RESAMPLE_FILTERS:
            raise ManifestError(
                f"image.resample must be one of {RESAMPLE_FILTERS}, got {self.resample!r}"
            )


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
        _check_types(self, "")
        if self.format_version != FORMAT_VERSION:
            raise ManifestError(f"unsupported manifest format_version {self.format_version}")
        if self.task not in tuple(Task):
            raise ManifestError(f"task must be one of {[str(t) for t in Task]}, got {self.task!r}")
        if self.architecture not in ARCHITECTURES:
            raise ManifestError(f"architecture must be one of {ARCHITECTURES}")
        if self.dtype not in DTYPES:
            raise ManifestError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        check_name("name", self.name)
        check_name("version", self.version)
        for label in ("num_layers", "num_heads", "head_dim", "hidden_size", "vocab_size"):
            _at_least(f"dims.{label}", getattr(self.dims, label), 1)
        _at_least("max_input_tokens", self.max_input_tokens, 1)
        if self.max_decoder_positions is not None:
            _at_least("max_decoder_positions", self.max_decoder_positions, 1)
        if self.task == Task.CAPTIONING and self.image is None:
            raise ManifestError("a captioning model needs image preprocessing settings")
        if self.image is not None:
            self.image.validate()
        if not self.special_tokens.eos:
            raise ManifestError("special_tokens.eos is empty")
        self._check_defaults()  # their types were checked with the rest, above
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

    def validate_defaults(self) -> None:
        """The values a checkpoint brings (generation defaults, special tokens), on their own:
        the exporter checks them before it builds any graph."""
        for part in ("dims", "special_tokens", "generation"):
            _check_types(getattr(self, part), f"{part}.")
        self._check_defaults()

    def _check_defaults(self) -> None:
        self.generation.validate()
        self._check_token_ids()

    def _check_token_ids(self) -> None:
        """Every token id the manifest names lies in the vocabulary: a negative one wrapped
        around to the vocabulary's end (forced_eos_token_id -7 forced the 7th from last)."""
        tokens = self.special_tokens
        named = {
            "special_tokens.pad": [tokens.pad],
            "special_tokens.eos": tokens.eos,
            "special_tokens.decoder_start": [tokens.decoder_start],
            "special_tokens.bos": _present(tokens.bos),
            "decoder_prompt": self.decoder_prompt,
            **self.generation.token_ids(),
        }
        vocab = self.dims.vocab_size
        for label, ids in named.items():
            outside = [i for i in ids if not 0 <= i < vocab]
            if outside:
                raise ManifestError(
                    f"{label}: token ids {outside} are outside the vocabulary (0..{vocab - 1})"
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
    def load(
        cls, model_dir: Path, name: str | None = None, version: str | None = None
    ) -> ModelManifest:
        """Read and check `model.json` and the files it names; `name` and `version`, where
        given (the repository layout's directory names), replace the file's before the check:
        the file's own are not used there, and may be anything an older export wrote."""
        model_dir = Path(model_dir)
        path = model_dir / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(f"{model_dir} has no {MANIFEST_FILE}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
        except OSError as exc:
            raise ManifestError(f"{path} cannot be read: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"{path} must hold a JSON object, not {type(data).__name__}")
        if name is not None:
            data["name"] = name
        if version is not None:
            data["version"] = version
        manifest = cls.from_dict(data)
        for rel in (manifest.encoder.file, manifest.decoder.file, manifest.tokenizer_file):
            if not (model_dir / rel).is_file():
                raise ManifestError(f"{model_dir} is missing {rel}, named in its manifest")
        return manifest


# Characters a name cannot hold: a path separator, or what a URL reads as its query, fragment,
# an escape or the path's end (/v2/models/NAME/infer), and whitespace.
_NOT_IN_NAMES = frozenset("/\\?#%")


def check_name(label: str, value: str) -> None:
    """A model's name or version: it names a directory and appears in URLs (/v2/models/NAME),
    so "." and ".." (which clients resolve away) and URL-reserved characters are refused."""
    if (
        value in ("", ".", "..")
        or not value.isprintable()
        or any(c.isspace() or c in _NOT_IN_NAMES for c in value)
    ):
        raise ManifestError(
            f"{label} must be a non-empty printable name without whitespace, '/', '\\', '?', "
            f"'#' or '%', and not '.' or '..', got {value!r}"
        )


def _at_least(label: str, value: int, least: int) -> None:
    if value < least:
        raise ManifestError(f"{label} must be >= {least}, got {value}")


def _present(token: int | None) -> list[int]:
    return [] if token is None else [token]


def _check_types(value: Any, path: str) -> None:
    """Every field of the dataclass `value` (nested ones too) holds its annotated type: an int
    within int32 (not a bool), a finite number, a list of them, ... A manifest with
    `"num_beams": "4"` loaded and failed every request that took the default with INTERNAL."""
    hints = get_type_hints(type(value))
    for item in fields(value):
        found, hint = getattr(value, item.name), hints[item.name]
        label = f"{path}{item.name}"
        if not _holds(found, hint):
            raise ManifestError(f"{label} must be {_describe(hint)}, got {found!r}")
        if is_dataclass(found):
            _check_types(found, f"{label}.")


def _holds(value: Any, hint: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_holds(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= INT32_MAX
    if hint is float:
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        return numeric and math.isfinite(value)
    if origin is list:
        return isinstance(value, list) and all(_holds(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and _holds(v, args[1]) for k, v in value.items()
        )
    return isinstance(value, hint)


def _describe(hint: Any, plural: bool = False) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg, plural) for arg in args)
    if origin is list:
        return f"{'lists' if plural else 'a list'} of {_describe(args[0], plural=True)}"
    if origin is dict:
        return "objects" if plural else "an object"
    singular, many = {
        int: ("an integer (int32)", "integers (int32)"),
        float: ("a finite number", "finite numbers"),
        bool: ("true or false", "true or false"),
        str: ("a string", "strings"),
        type(None): ("null", "null"),
    }.get(hint, (getattr(hint, "__name__", str(hint)),) * 2)
    return many if plural else singular
