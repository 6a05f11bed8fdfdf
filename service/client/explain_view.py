"""Show a response's attribution to a person: source words per summary token, or a heatmap per
caption token over the image (`attnserve client ... --explain [--heatmap out.png]`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service._pb.attnserve.v1 import attnserve_pb2 as pb

PANEL = 160  # heatmap panel side, pixels
LABEL_HEIGHT = 24
PANELS_PER_ROW = 6
# A heat colour scale from dark blue (no attention) through green and yellow to red (the most
# attended patch), drawn over a greyed copy of the image so that the image's own colours do not
# hide the heat.
HEAT_STOPS = np.array([0.0, 0.35, 0.65, 1.0])
HEAT_COLOURS = np.array([[20, 30, 140], [30, 170, 90], [250, 220, 40], [230, 30, 30]], np.float32)
HEAT_ALPHA = 0.6


def text_explanation(attribution: pb.Attribution) -> list[str]:
    """One line per generated token: the token, then its most attended source words."""
    lines = []
    width = max((len(t.token_text.strip()) for t in attribution.tokens), default=0)
    for token in attribution.tokens:
        words = "  ".join(f"{span.text} ({span.weight:.2f})" for span in token.top_spans)
        lines.append(f"{token.token_text.strip():>{width}}  <-  {words}")
    return lines


def image_explanation(attribution: pb.Attribution) -> list[str]:
    """One line per generated token: the token and the grid cell it attended to most."""
    lines = []
    for token in attribution.tokens:
        weights = np.asarray(token.weights, np.float32)
        row, col = divmod(int(np.argmax(weights)), attribution.grid_cols)
        lines.append(
            f"{token.token_text.strip() or repr(token.token_text)}: most attended patch "
            f"(row {row}, col {col}) of {attribution.grid_rows}x{attribution.grid_cols}, "
            f"weight {weights.max():.2f}, patches hold {weights.sum():.2f} of the attention"
        )
    return lines


def heatmap_panels(image_bytes: bytes, attribution: pb.Attribution) -> Image.Image:
    """The image once per caption token with its patch weights overlaid as heat (normalised
    per token: its most attended patch is red), the token written below."""
    rows, cols = attribution.grid_rows, attribution.grid_cols
    if not rows or not cols:
        raise ValueError("the attribution has no patch grid: heatmaps are for image models")
    base = Image.open(io.BytesIO(image_bytes)).convert("L").resize((PANEL, PANEL))
    grey = np.asarray(base, np.float32)[..., None].repeat(3, axis=2)
    count = len(attribution.tokens)
    per_row = min(count, PANELS_PER_ROW) or 1
    sheet = Image.new(
        "RGB",
        (per_row * PANEL, -(-count // per_row) * (PANEL + LABEL_HEIGHT)),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    for index, token in enumerate(attribution.tokens):
        weights = np.asarray(token.weights, np.float32).reshape(rows, cols)
        peak = float(weights.max())
        heat = weights / peak if peak > 0 else weights
        upsampled = Image.fromarray((heat * 255).astype(np.uint8)).resize(
            (PANEL, PANEL), Image.Resampling.BILINEAR
        )
        blended = (
            grey * (1 - HEAT_ALPHA) + _heat_colours(np.asarray(upsampled) / 255.0) * HEAT_ALPHA
        )
        x, y = (index % per_row) * PANEL, (index // per_row) * (PANEL + LABEL_HEIGHT)
        sheet.paste(Image.fromarray(blended.astype(np.uint8)), (x, y))
        label = token.token_text.strip() or repr(token.token_text)
        draw.text((x + PANEL / 2, y + PANEL + 4), label, fill="black", font=font, anchor="mt")
    return sheet


def _heat_colours(heat: np.ndarray) -> np.ndarray:
    """[H, W] values in [0, 1] -> [H, W, 3] colours of the heat scale."""
    channels = [np.interp(heat, HEAT_STOPS, HEAT_COLOURS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1)


def write_heatmap(image_bytes: bytes, attribution: pb.Attribution, path: Path) -> None:
    heatmap_panels(image_bytes, attribution).save(path)
