"""The two synthetic demo tasks of ../shared/demo-tasks.md, generated exactly as specified.

Other programs generate held-out cases from the same spec, so every constant and rule here is
the spec's, not a tuning choice. The only free choices are the sampling distributions the spec
leaves open (how often one or two shapes appear, how many fillers a report has).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# --- captioning: "shapes" -------------------------------------------------------------------

CANVAS = 64
BACKGROUND = (255, 255, 255)
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
MIN_SIDE, MAX_SIDE = 14, 22
MIN_GAP = 4  # between the boxes along the arrangement axis
MAX_OFFSET = 6  # largest centre difference across the arrangement axis
ARRANGEMENTS = ("single", "horizontal", "vertical")


_CANDIDATE_PAIRS = 256  # pairs `_two_boxes` draws at once: about 1 in 56 is valid


def _random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """[count, 3] boxes (x0, y0, side), each a square fully inside the canvas."""
    sides = rng.integers(MIN_SIDE, MAX_SIDE + 1, size=count)
    corners = rng.integers(0, CANVAS - sides[:, None] + 1, size=(count, 2))
    return np.column_stack([corners, sides])


def _box(boxes: np.ndarray, index: int) -> tuple[int, int, int]:
    x0, y0, side = (int(v) for v in boxes[index])
    return x0, y0, side


def _arranged(first: np.ndarray, second: np.ndarray, along: int) -> np.ndarray:
    """For each pair, whether the `second` box lies after the `first` along axis `along`
    (0 = x, 1 = y) as the spec requires.

    Centres are compared doubled (2*x0 + s) to stay in integers.
    """
    across = 1 - along
    gap = (2 * second[:, along] + second[:, 2]) - (2 * first[:, along] + first[:, 2])
    offset = (2 * second[:, across] + second[:, 2]) - (2 * first[:, across] + first[:, 2])
    return (gap >= first[:, 2] + second[:, 2] + 2 * MIN_GAP) & (np.abs(offset) <= 2 * MAX_OFFSET)


def _two_boxes(rng: np.random.Generator, along: int) -> list[tuple[int, int, int]]:
    """Two boxes, the first left of (along=0) or above (along=1) the second. Rejection sampling
    keeps the pair uniform over the valid placements: the first valid pair of independent
    candidates, drawn in batches because one pair at a time made scene generation a quarter of
    the captioner's training time."""
    while True:
        first, second = (_random_boxes(rng, _CANDIDATE_PAIRS) for _ in range(2))
        valid = np.flatnonzero(_arranged(first, second, along))
        if valid.size:
            return [_box(first, valid[0]), _box(second, valid[0])]


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    box: tuple[int, int, int]  # (x0, y0, side) at 64x64: pixels [x0, x0 + side) x [y0, y0 + side)


@dataclass(frozen=True)
class Scene:
    arrangement: str  # one of ARRANGEMENTS
    objects: tuple[ShapeObject, ...]  # with two: the left (horizontal) or upper (vertical) first


def random_scene(rng: np.random.Generator) -> Scene:
    arrangement = ARRANGEMENTS[int(rng.integers(len(ARRANGEMENTS)))]
    if arrangement == "single":
        boxes = [_box(_random_boxes(rng, 1), 0)]
    else:
        boxes = _two_boxes(rng, along=0 if arrangement == "horizontal" else 1)
    names = list(COLOURS)
    objects = tuple(
        ShapeObject(
            names[int(rng.integers(len(names)))], SHAPES[int(rng.integers(len(SHAPES)))], box
        )
        for box in boxes
    )
    return Scene(arrangement, objects)


def draw_scene(scene: Scene, scale: int = 1) -> Image.Image:
    """The scene on a white canvas; `scale=2` doubles every coordinate and size (128x128)."""
    image = Image.new("RGB", (CANVAS * scale, CANVAS * scale), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x0, y0, side = (v * scale for v in obj.box)
        x1, y1 = x0 + side - 1, y0 + side - 1
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:  # isosceles, apex up, base on the bottom edge of the box
            draw.polygon([(x0 + (side - 1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return image


def scene_caption(scene: Scene) -> str:
    phrases = [f"a {obj.colour} {obj.shape}" for obj in scene.objects]
    if scene.arrangement == "single":
        return phrases[0]
    relation = "left of" if scene.arrangement == "horizontal" else "above"
    return f"{phrases[0]} {relation} {phrases[1]}"


def render_shapes(rng: np.random.Generator, scale: int = 1) -> tuple[Image.Image, str]:
    """One random scene and its caption. With the same rng state, `scale=2` draws the 128x128
    twin of the scene `scale=1` draws."""
    scene = random_scene(rng)
    return draw_scene(scene, scale), scene_caption(scene)


# --- summarization: "match reports" ---------------------------------------------------------

TEAMS = (
    "Ashford",
    "Bramley",
    "Carlow",
    "Dunmore",
    "Elston",
    "Fenwick",
    "Garston",
    "Holbrook",
    "Ivybridge",
    "Kelso",
    "Lynton",
    "Morley",
)
CITIES = ("Leeds", "York", "Bath", "Derby", "Exeter", "Hull", "Perth", "Truro")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAX_GOALS = 6
WEATHER = ("sunny", "rainy", "cold", "windy")
REFEREES = ("Adams", "Baker", "Clark", "Davis", "Evans")
FAN_COUNTS = tuple(range(100, 10000, 100))
KICK_OFF_HOURS = tuple(range(1, 10))
MAX_FILLERS = 3
FILLER_TEMPLATES = (
    ("The weather was {}.", WEATHER),
    ("About {} fans watched the game.", FAN_COUNTS),
    ("The game started at {} pm.", KICK_OFF_HOURS),
    ("The referee was {}.", REFEREES),
    ("Both teams wore new kits.", ("",)),
    ("The pitch was in good condition.", ("",)),
)
KICK_OFF_FILLER = 2  # "The game started at {h} pm.": its digit is the one mistaken for a score


def _pick(rng: np.random.Generator, options: tuple) -> object:
    return options[int(rng.integers(len(options)))]


def make_match_report(
    rng: np.random.Generator,
    max_fillers: int = MAX_FILLERS,
    shuffled: bool = True,
    min_fillers: int = 0,
    kick_off: bool = False,
) -> tuple[str, str]:
    """One random match report and its one-sentence summary, with `min_fillers` to
    `max_fillers` fillers.

    The defaults are the spec. Training starts on easier reports (`max_fillers=0`, and
    `shuffled=False`: the first team's score first) and later adds harder ones
    (`min_fillers=MAX_FILLERS`, `kick_off=True`: the kick-off filler always among at least one),
    see train_summarizer.py.
    """
    first, second = (TEAMS[int(i)] for i in rng.choice(len(TEAMS), size=2, replace=False))
    city, day = _pick(rng, CITIES), _pick(rng, DAYS)
    goals = rng.choice(MAX_GOALS + 1, size=2, replace=False)
    first_goals, second_goals = int(goals[0]), int(goals[1])
    if kick_off and max_fillers < 1:
        raise ValueError("a report with the kick-off filler needs max_fillers >= 1")
    n_fillers = int(rng.integers(max(min_fillers, int(kick_off)), max_fillers + 1))
    if kick_off:
        others = [i for i in range(len(FILLER_TEMPLATES)) if i != KICK_OFF_FILLER]
        chosen = [KICK_OFF_FILLER, *rng.choice(others, size=n_fillers - 1, replace=False)]
    else:
        chosen = list(rng.choice(len(FILLER_TEMPLATES), size=n_fillers, replace=False))
    fillers = [
        FILLER_TEMPLATES[int(i)][0].format(_pick(rng, FILLER_TEMPLATES[int(i)][1])) for i in chosen
    ]
    body = [f"{first} scored {first_goals} goals.", f"{second} scored {second_goals} goals."]
    body += fillers
    if shuffled:
        body = [body[i] for i in rng.permutation(len(body))]
    sentences = [f"{first} played {second} in {city} on {day}.", *body]
    if first_goals > second_goals:
        winner, loser = first, second
    else:
        winner, loser = second, first
    high, low = max(first_goals, second_goals), min(first_goals, second_goals)
    return " ".join(sentences), f"{winner} beat {loser} {high}-{low} in {city} on {day}."


def report_vocabulary_texts() -> Iterator[str]:
    """Texts that together contain every word either side of the summarizer can see, so that a
    tokenizer built from them never needs <unk> on spec inputs."""
    yield " ".join(TEAMS + CITIES + DAYS)
    yield "played in on scored goals beat"
    for template, options in FILLER_TEMPLATES:
        yield " ".join(template.format(option) for option in options)
    yield " ".join(str(g) for g in range(MAX_GOALS + 1))
    for high in range(MAX_GOALS + 1):
        yield " ".join(f"{high}-{low}." for low in range(high))


def caption_vocabulary_texts() -> Iterator[str]:
    """Texts containing every caption word."""
    yield " ".join(("a", "left of", "above", *COLOURS, *SHAPES))
