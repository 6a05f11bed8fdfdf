"""The demo task generators follow ../shared/demo-tasks.md, checked rule by rule."""

from __future__ import annotations

import re

import numpy as np
import pytest

from export.demo.tasks import (
    CANVAS,
    CITIES,
    COLOURS,
    DAYS,
    MAX_SIDE,
    MIN_SIDE,
    REFEREES,
    SHAPES,
    TEAMS,
    WEATHER,
    Scene,
    ShapeObject,
    draw_scene,
    make_match_report,
    random_scene,
    render_shapes,
    scene_caption,
)

CASES = 400


def _scenes(seed: int = 0, cases: int = CASES) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng) for _ in range(cases)]


def _reports(seed: int = 0, cases: int = CASES) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [make_match_report(rng) for _ in range(cases)]


# --- shapes ----------------------------------------------------------------------------------

_PHRASE = rf"a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})"
_CAPTION = re.compile(rf"{_PHRASE}(?: (?:left of|above) {_PHRASE})?")


def _centre2(box: tuple[int, int, int]) -> tuple[int, int]:
    """Doubled box centre (integers)."""
    x0, y0, side = box
    return 2 * x0 + side, 2 * y0 + side


def test_captions_follow_the_grammar() -> None:
    rng = np.random.default_rng(1)
    for _ in range(CASES):
        _, caption = render_shapes(rng)
        assert _CAPTION.fullmatch(caption), caption


def test_every_arrangement_occurs() -> None:
    assert {scene.arrangement for scene in _scenes()} == {"single", "horizontal", "vertical"}


def test_boxes_have_allowed_sides_and_lie_inside_the_canvas() -> None:
    for scene in _scenes():
        for obj in scene.objects:
            x0, y0, side = obj.box
            assert MIN_SIDE <= side <= MAX_SIDE
            assert 0 <= x0 <= CANVAS - side and 0 <= y0 <= CANVAS - side


@pytest.mark.parametrize(("arrangement", "along"), [("horizontal", 0), ("vertical", 1)])
def test_two_shapes_keep_the_spacing_rules(arrangement: str, along: int) -> None:
    """Centres differ by >= s1/2 + s2/2 + 4 along the arrangement, <= 6 across it; the first
    object is the left (upper) one."""
    scenes = [s for s in _scenes() if s.arrangement == arrangement]
    assert scenes
    for scene in scenes:
        first, second = (obj.box for obj in scene.objects)
        c1, c2 = _centre2(first), _centre2(second)
        assert c2[along] - c1[along] >= first[2] + second[2] + 8
        assert abs(c2[1 - along] - c1[1 - along]) <= 12


def test_caption_names_objects_in_reading_order() -> None:
    for scene in _scenes():
        words = [f"a {obj.colour} {obj.shape}" for obj in scene.objects]
        relation = {"single": [], "horizontal": ["left of"], "vertical": ["above"]}
        expected = [words[0], *relation[scene.arrangement], *words[1:]]
        assert scene_caption(scene) == " ".join(expected)


def test_each_shape_fills_its_box_in_its_colour_on_white() -> None:
    """Every non-white pixel lies in a box and has that object's colour, and each shape touches
    all four sides of its box (squares fill it completely)."""
    for scene in _scenes(cases=100):
        pixels = np.asarray(draw_scene(scene))
        assert pixels.shape == (CANVAS, CANVAS, 3)
        painted = np.any(pixels != 255, axis=2)
        covered = np.zeros_like(painted)
        for obj in scene.objects:
            x0, y0, side = obj.box
            inside = pixels[y0 : y0 + side, x0 : x0 + side]
            mask = np.all(inside == COLOURS[obj.colour], axis=2)
            assert mask.any(axis=1)[[0, -1]].all() and mask.any(axis=0)[[0, -1]].all(), obj
            if obj.shape == "square":
                assert mask.all()
            covered[y0 : y0 + side, x0 : x0 + side] = True
        assert not (painted & ~covered).any()


def _painted_share(shape: str, side: int) -> np.ndarray:
    scene = Scene("single", (ShapeObject("red", shape, (0, 0, side)),))
    return np.all(np.asarray(draw_scene(scene)) != 255, axis=2)[:side, :side]


@pytest.mark.parametrize("side", [MIN_SIDE, MAX_SIDE])
def test_shapes_differ_in_how_much_of_the_box_they_fill(side: int) -> None:
    """Square: all of it; disc: about pi/4; apex-up triangle: about half, pointed at the top."""
    assert _painted_share("square", side).mean() == 1.0
    assert 0.7 < _painted_share("circle", side).mean() < 0.85
    triangle = _painted_share("triangle", side)
    assert 0.45 < triangle.mean() < 0.62
    assert triangle[0].sum() <= 2 and triangle[-1].all()


def test_the_128_twin_doubles_every_coordinate() -> None:
    for seed in range(50):
        small, caption = render_shapes(np.random.default_rng(seed))
        large, twin_caption = render_shapes(np.random.default_rng(seed), scale=2)
        assert large.size == (2 * CANVAS, 2 * CANVAS) and twin_caption == caption
        small_box = np.argwhere(np.any(np.asarray(small) != 255, axis=2))
        large_box = np.argwhere(np.any(np.asarray(large) != 255, axis=2))
        assert (large_box.min(axis=0) == 2 * small_box.min(axis=0)).all()
        assert (large_box.max(axis=0) == 2 * small_box.max(axis=0) + 1).all()


def test_the_same_seed_gives_the_same_scene() -> None:
    first, second = (render_shapes(np.random.default_rng(7)) for _ in range(2))
    assert first[1] == second[1] and first[0].tobytes() == second[0].tobytes()


# --- match reports ---------------------------------------------------------------------------

_TEAM, _CITY, _DAY = "|".join(TEAMS), "|".join(CITIES), "|".join(DAYS)
_OPENING = re.compile(rf"({_TEAM}) played ({_TEAM}) in ({_CITY}) on ({_DAY})\.")
_SCORED = re.compile(rf"({_TEAM}) scored ([0-6]) goals\.")
_FILLERS = {
    "weather": re.compile(rf"The weather was ({'|'.join(WEATHER)})\."),
    "fans": re.compile(r"About ([1-9][0-9]?00) fans watched the game\."),
    "kick-off": re.compile(r"The game started at ([1-9]) pm\."),
    "referee": re.compile(rf"The referee was ({'|'.join(REFEREES)})\."),
    "kits": re.compile(r"Both teams wore new kits\."),
    "pitch": re.compile(r"The pitch was in good condition\."),
}


def _sentences(report: str) -> list[str]:
    sentences = re.findall(r"[^.]+\.", report)
    assert " ".join(s.strip() for s in sentences) == report  # single spaces, nothing else
    return [s.strip() for s in sentences]


def _filler_kind(sentence: str) -> str:
    kinds = [kind for kind, pattern in _FILLERS.items() if pattern.fullmatch(sentence)]
    assert len(kinds) == 1, sentence
    return kinds[0]


def test_reports_open_with_the_fixture_sentence() -> None:
    for report, _ in _reports():
        opening = _OPENING.fullmatch(_sentences(report)[0])
        assert opening and opening[1] != opening[2], report


def test_reports_hold_both_scores_and_up_to_three_distinct_fillers() -> None:
    filler_counts = set()
    for report, _ in _reports():
        sentences = _sentences(report)
        teams = _OPENING.fullmatch(sentences[0]).group(1, 2)
        scored = [m for m in map(_SCORED.fullmatch, sentences[1:]) if m]
        assert sorted(m[1] for m in scored) == sorted(teams)
        assert scored[0][2] != scored[1][2]  # no draws
        kinds = [_filler_kind(s) for s in sentences[1:] if not _SCORED.fullmatch(s)]
        assert len(kinds) == len(set(kinds)) <= 3
        filler_counts.add(len(kinds))
    assert filler_counts == {0, 1, 2, 3}


def test_score_sentences_come_in_either_order() -> None:
    first_team_first = set()
    for report, _ in _reports():
        sentences = _sentences(report)
        first_team = _OPENING.fullmatch(sentences[0])[1]
        scored = [m for m in map(_SCORED.fullmatch, sentences[1:]) if m]
        first_team_first.add(scored[0][1] == first_team)
    assert first_team_first == {True, False}


def test_summary_names_the_winner_first_with_the_score() -> None:
    for report, summary in _reports():
        sentences = _sentences(report)
        _, _, city, day = _OPENING.fullmatch(sentences[0]).groups()
        goals = {m[1]: int(m[2]) for m in map(_SCORED.fullmatch, sentences[1:]) if m}
        (winner, high), (loser, low) = sorted(goals.items(), key=lambda kv: -kv[1])
        assert summary == f"{winner} beat {loser} {high}-{low} in {city} on {day}."


def test_curriculum_reports_have_no_fillers_and_the_fixture_order() -> None:
    rng = np.random.default_rng(4)
    for _ in range(50):
        report, _ = make_match_report(rng, max_fillers=0, shuffled=False)
        sentences = _sentences(report)
        opening = _OPENING.fullmatch(sentences[0])
        assert len(sentences) == 3
        assert [_SCORED.fullmatch(s)[1] for s in sentences[1:]] == [opening[1], opening[2]]


def test_reports_with_min_fillers_use_every_filler_slot() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        report, _ = make_match_report(rng, min_fillers=3)
        sentences = _sentences(report)
        assert len(sentences) == 6
        assert len({_filler_kind(s) for s in sentences[1:] if not _SCORED.fullmatch(s)}) == 3


@pytest.mark.parametrize("min_fillers", [0, 1, 3])
def test_kick_off_reports_hold_the_kick_off_filler_and_stay_spec_reports(min_fillers: int) -> None:
    rng = np.random.default_rng(6)
    filler_counts, others = set(), set()
    for _ in range(200):
        report, summary = make_match_report(rng, min_fillers=min_fillers, kick_off=True)
        sentences = _sentences(report)
        kinds = [_filler_kind(s) for s in sentences[1:] if not _SCORED.fullmatch(s)]
        assert "kick-off" in kinds
        assert len(kinds) == len(set(kinds)) <= 3
        goals = {m[1]: int(m[2]) for m in map(_SCORED.fullmatch, sentences[1:]) if m}
        (winner, high), (loser, low) = sorted(goals.items(), key=lambda kv: -kv[1])
        assert summary.startswith(f"{winner} beat {loser} {high}-{low} in ")
        filler_counts.add(len(kinds))
        others.update(kinds)
    assert filler_counts == set(range(max(min_fillers, 1), 4))
    assert others == set(_FILLERS)


def test_kick_off_reports_need_room_for_a_filler() -> None:
    with pytest.raises(ValueError, match="max_fillers"):
        make_match_report(np.random.default_rng(7), max_fillers=0, kick_off=True)
