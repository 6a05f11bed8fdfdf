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
HEAT_RGB = np.array([255, 0, 0], np.float32)
MAX_ALPHA = 0.7


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
    """The image once per caption token, its patch weights overlaid in red (normalised per
    token so that its most attended patch is the most opaque), the token written below."""
    rows, cols = attribution.grid_rows, attribution.grid_cols
    if not rows or not cols:
        raise ValueError("the attribution has no patch grid: heatmaps are for image models")
    base = Image.open(io.BytesIO(image_bytes)).convert("RGB").resize((PANEL, PANEL))
    base_pixels = np.asarray(base, np.float32)
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
        alpha = np.asarray(upsampled, np.float32)[..., None] / 255.0 * MAX_ALPHA
        blended = base_pixels * (1 - alpha) + HEAT_RGB * alpha
        x, y = (index % per_row) * PANEL, (index // per_row) * (PANEL + LABEL_HEIGHT)
        sheet.paste(Image.fromarray(blended.astype(np.uint8)), (x, y))
        label = token.token_text.strip() or repr(token.token_text)
        draw.text((x + PANEL / 2, y + PANEL + 4), label, fill="black", font=font, anchor="mt")
    return sheet


def write_heatmap(image_bytes: bytes, attribution: pb.Attribution, path: Path) -> None:
    heatmap_panels(image_bytes, attribution).save(path)
