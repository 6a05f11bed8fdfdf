"""A line chart drawn with Pillow (no plotting library is a dependency): throughput against p99
latency, one line per server configuration, one point per load level."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 900, 560
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 90, 200, 50, 70
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
TICKS = 5


@dataclass(frozen=True)
class Point:
    x: float  # p99 latency, ms
    y: float  # throughput
    label: str  # the load level, written beside the point


def _nice_ticks(high: float) -> np.ndarray:
    """Round tick values from 0 to just above `high`."""
    raw = max(high, 1e-9) / TICKS
    magnitude = 10 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return np.arange(0, high + step, step)


def _format(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"


def plot_lines(
    series: dict[str, list[Point]], path: Path, title: str, x_label: str, y_label: str
) -> None:
    """Write a PNG with one line per entry of `series` (its points joined in the given order)."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    points = [p for line in series.values() for p in line]
    x_ticks = _nice_ticks(max((p.x for p in points), default=1.0))
    y_ticks = _nice_ticks(max((p.y for p in points), default=1.0))
    left, top = MARGIN_LEFT, MARGIN_TOP
    right, bottom = WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + (right - left) * x / x_ticks[-1],
            bottom - (bottom - top) * y / y_ticks[-1],
        )

    for tick in x_ticks:
        x, _ = at(tick, 0)
        draw.line([(x, top), (x, bottom)], fill="#e6e6e6")
        draw.text((x, bottom + 8), _format(tick), fill="black", font=small, anchor="mt")
    for tick in y_ticks:
        _, y = at(0, tick)
        draw.line([(left, y), (right, y)], fill="#e6e6e6")
        draw.text((left - 8, y), _format(tick), fill="black", font=small, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((WIDTH / 2, 18), title, fill="black", font=font, anchor="mt")
    draw.text(((left + right) / 2, HEIGHT - 22), x_label, fill="black", font=font, anchor="mm")
    label_width = int(draw.textlength(y_label, font=font)) + 4
    y_axis = Image.new("RGBA", (label_width, 24), (255, 255, 255, 0))
    ImageDraw.Draw(y_axis).text((2, 4), y_label, fill="black", font=font)
    y_axis = y_axis.rotate(90, expand=True)
    image.paste(y_axis, (14, (top + bottom - label_width) // 2), y_axis)

    for index, (name, line) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        xy = [at(p.x, p.y) for p in line]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=3)
        for (x, y), point in zip(xy, line, strict=True):
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=color)
            draw.text((x + 7, y - 7), point.label, fill=color, font=small, anchor="lb")
        legend_y = top + 10 + 24 * index
        draw.line([(right + 15, legend_y), (right + 40, legend_y)], fill=color, width=3)
        draw.text((right + 48, legend_y), name, fill="black", font=small, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
