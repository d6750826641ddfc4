"""Shapes world: seeded synthetic scenes and single-word questions with exact ground truth.

A scene holds 2 to 4 objects on a plain background, each a distinct shape (so "the circle"
always names one object) with a colour and a size. Geometry is stored as fractions of the
image side, so a scene renders at any pixel size; boxes and masks are computed from the same
drawing that paints the pixels, so they match the rendered image exactly.

Questions follow the GQA types used by the cross-modal information-flow paper, plus counting
and existence. Each has a single-word answer, the answer set it is drawn from (``options``),
and the ids of the objects it is about (its ground-truth region). Answers are drawn uniformly
from ``options`` and scenes are built to fit them, so no question is answerable without the
image. Punctuation is space-separated so a word-level tokenizer round-trips every question.

Example::

    >>> s = make_samples(1, seed=0, question_types=["QueryAttr"])[0]
    >>> s.question, s.answer, s.object_boxes      # boxes: (x0, y0, x1, y1), x1/y1 exclusive
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {"red": (215, 45, 45), "green": (45, 160, 65), "blue": (45, 85, 215), "yellow": (235, 195, 25)}
SIZES = {"small": (0.16, 0.20), "large": (0.28, 0.34)}  # side length, fraction of the image side
BACKGROUND = (230, 230, 230)
COUNT_WORDS = ("one", "two", "three")
QUESTION_TYPES = ("QueryAttr", "ChooseAttr", "ChooseRel", "CompareAttr", "LogicalObj", "Count", "Exist")
DEFAULT_IMAGE_SIZE = 64
_GAP = 0.05  # minimum free space between object boxes, fraction of the image side
_REL_MARGIN = 0.25  # minimum centre offset for left/right/above/below questions
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapeObject:
    """One object; ``x``, ``y`` (centre) and ``extent`` (side) are fractions of the image side."""

    id: int
    shape: str
    color: str
    size: str
    x: float
    y: float
    extent: float

    def describe(self) -> str:
        """Return the object as words, shape first, centre on a 10 x 10 grid: "circle red large x 2 y 7"."""
        return f"{self.shape} {self.color} {self.size} x {int(self.x * 10)} y {int(self.y * 10)}"


@dataclass(frozen=True)
class Scene:
    """A few non-overlapping objects; object ``i`` has ``id == i``."""

    objects: tuple[ShapeObject, ...]

    def masks(self, size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
        """Return the object masks rendered at ``size`` px: bool array (n_objects, size, size)."""
        out = np.zeros((len(self.objects), size, size), dtype=bool)
        for i, obj in enumerate(self.objects):
            canvas = Image.new("L", (size, size), 0)
            _draw(ImageDraw.Draw(canvas), obj, size)
            out[i] = np.asarray(canvas) > 0
        return out

    def boxes(self, size: int = DEFAULT_IMAGE_SIZE) -> list[Box]:
        """Return each object's tight pixel box (x0, y0, x1, y1), x1/y1 exclusive, at ``size`` px."""
        return [_mask_box(m) for m in self.masks(size)]

    def render(self, size: int = DEFAULT_IMAGE_SIZE) -> Image.Image:
        """Return the scene as an RGB image of ``size`` x ``size`` px."""
        pixels = np.empty((size, size, 3), dtype=np.uint8)
        pixels[:] = BACKGROUND
        for obj, mask in zip(self.objects, self.masks(size)):
            pixels[mask] = COLORS[obj.color]
        return Image.fromarray(pixels, "RGB")

    def describe(self) -> str:
        """Return a caption listing the objects left to right: "square blue small x 1 y 6 . circle ... ." """
        return " ".join(f"{obj.describe()} ." for obj in sorted(self.objects, key=lambda o: o.x))


@dataclass(frozen=True)
class Sample:
    """A question about a scene, with its single-word answer and ground-truth objects.

    ``object_ids`` index ``scene.objects``; ``options`` is the answer set the answer was drawn
    from (chance accuracy is ``1 / len(options)``); the image is ``image_size`` px square.
    """

    scene: Scene
    question: str
    answer: str
    question_type: str
    object_ids: tuple[int, ...]
    options: tuple[str, ...]
    image_size: int = DEFAULT_IMAGE_SIZE

    @cached_property
    def image(self) -> Image.Image:
        """The rendered scene, RGB, ``image_size`` px square."""
        return self.scene.render(self.image_size)

    @property
    def object_boxes(self) -> list[Box]:
        """Pixel boxes (x0, y0, x1, y1), x1/y1 exclusive, of the question's objects in ``image``."""
        return list(self._object_boxes)

    @cached_property
    def _object_boxes(self) -> tuple[Box, ...]:  # every probe reads them (as_samples): drawn once per sample
        boxes = self.scene.boxes(self.image_size)
        return tuple(boxes[i] for i in self.object_ids)

    @property
    def masks(self) -> np.ndarray:
        """Masks of the question's objects in ``image``: bool array (len(object_ids), H, W)."""
        return self.scene.masks(self.image_size)[list(self.object_ids)]

    @property
    def region_mask(self) -> np.ndarray:
        """Union of the question's object masks: bool array (H, W)."""
        return self.masks.any(axis=0)

    @property
    def messages(self) -> list[dict]:
        """The question as a one-turn chat for ``processor.apply_chat_template``."""
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.question}]}]

    def with_size(self, image_size: int) -> "Sample":
        """Return the same sample rendered at another pixel size."""
        return Sample(self.scene, self.question, self.answer, self.question_type, self.object_ids,
                      self.options, image_size)


def make_samples(n: int, seed: int = 0, question_types: Sequence[str] | None = None,
                 image_size: int = DEFAULT_IMAGE_SIZE, start: int = 0) -> list[Sample]:
    """Return samples ``start .. start + n - 1`` of the stream ``seed``.

    Sample ``i`` has type ``question_types[i % len(question_types)]`` (all types by default)
    and depends only on (seed, i, its type): streams can be read in chunks. Samples are frozen,
    so the last 32 requests are kept and a repeated one (the same questions for every checkpoint
    of a sweep) returns the same samples, images already rendered, in a new list.
    """
    types = tuple(question_types or QUESTION_TYPES)
    unknown = set(types) - set(QUESTION_TYPES)
    if unknown:
        raise ValueError(f"unknown question types {sorted(unknown)}; choose from {QUESTION_TYPES}")
    return list(_samples(int(n), int(seed), types, int(image_size), int(start)))


@lru_cache(maxsize=32)
def _samples(n: int, seed: int, types: tuple[str, ...], image_size: int, start: int) -> tuple[Sample, ...]:
    return tuple(make_sample(np.random.default_rng([seed, i, QUESTION_TYPES.index(types[i % len(types)])]),
                             types[i % len(types)], image_size) for i in range(start, start + n))


def random_scene(rng: np.random.Generator) -> Scene:
    """Return a scene of 2 to 4 objects with uniformly random attributes (for captions)."""
    return _build(rng, [], n=int(rng.integers(2, 5)))


def make_sample(rng: np.random.Generator, question_type: str, image_size: int = DEFAULT_IMAGE_SIZE) -> Sample:
    """Return one sample of ``question_type``: draw the answer first, then build a scene that fits it."""
    return _GENERATORS[question_type](rng, image_size)


def ask(scene: Scene, rng: np.random.Generator, question_type: str,
        image_size: int = DEFAULT_IMAGE_SIZE) -> Sample | None:
    """Return a question of ``question_type`` about an existing scene (None if the scene allows none).

    Targets are drawn at random among those the scene allows, so answers are only roughly
    balanced; use :func:`make_samples` for balanced evaluation data.
    """
    return _ASK[question_type](scene, rng, image_size)


# ---------------------------------------------------------------- chance levels

# question type -> the number of options of its questions, each drawn equally often by make_samples
# (QueryAttr asks for a colour or a size with probability 1/2 each; ChooseAttr offers two values)
_OPTION_COUNTS = {"QueryAttr": (len(COLORS), len(SIZES)), "ChooseAttr": (2,), "ChooseRel": (2,),
                  "CompareAttr": (2,), "LogicalObj": (2,), "Count": (len(COUNT_WORDS),), "Exist": (2,)}


def chance_level(question_type: str) -> float:
    """Return the expected accuracy (0-1) of a uniform guess among a question's ``options``.

    Averaged over the questions :func:`make_samples` draws of ``question_type``: ``QueryAttr`` asks
    for a colour (4 options) or a size (2) equally often, so 0.375; ``Count`` has 3 options (1/3);
    every other type 2 (0.5). Answers are drawn uniformly from the options, so any prediction that
    does not depend on the image, e.g. a model's options-restricted answer (rule ``"options"`` of
    ``analysis.models.answers``) before it has learnt to read the image, has this accuracy in
    expectation.
    """
    if question_type not in _OPTION_COUNTS:
        raise ValueError(f"unknown question type {question_type!r}; choose from {QUESTION_TYPES}")
    counts = _OPTION_COUNTS[question_type]
    return float(np.mean([1 / k for k in counts]))


def chance_levels(question_types: Sequence[str] | None = None) -> dict[str, float]:
    """Return ``{question type: chance_level}`` for ``question_types`` (default all) plus ``"overall"``.

    ``"overall"`` is the mean over the given types: :func:`make_samples` cycles through them, so
    it is the chance level of a balanced evaluation set (0.458 for all seven types).
    """
    types = tuple(question_types or QUESTION_TYPES)
    levels = {t: chance_level(t) for t in types}
    return {**levels, "overall": float(np.mean(list(levels.values())))}


# ---------------------------------------------------------------- question families
# One builder per type computes the answer and the object ids from the scene; the
# answer-first generators (_GENERATORS) build a scene for a drawn answer, the scene-first
# ones (_ASK) pick what to ask about a given scene.


def _values(attr):
    return tuple(COLORS) if attr == "color" else tuple(SIZES)


def _query_q(scene, shape, attr, image_size):
    obj = _by_shape(scene, shape)
    return Sample(scene, f"what {attr} is the {shape} ?", getattr(obj, attr), "QueryAttr", (obj.id,),
                  _values(attr), image_size)


def _choose_attr_q(scene, shape, attr, options, image_size):
    obj = _by_shape(scene, shape)
    return Sample(scene, f"is the {shape} {options[0]} or {options[1]} ?", getattr(obj, attr), "ChooseAttr",
                  (obj.id,), tuple(options), image_size)


def _choose_rel_q(scene, s1, s2, words, image_size):
    a, b = _by_shape(scene, s1), _by_shape(scene, s2)
    if "left" in words:
        answer, between = ("left" if a.x < b.x else "right"), "of "
    else:
        answer, between = ("above" if a.y < b.y else "below"), ""
    return Sample(scene, f"is the {s1} {words[0]} or {words[1]} {between}the {s2} ?", answer, "ChooseRel",
                  (a.id, b.id), tuple(words), image_size)


def _compare_q(scene, s1, s2, attr, image_size):
    a, b = _by_shape(scene, s1), _by_shape(scene, s2)
    return Sample(scene, f"are the {s1} and the {s2} the same {attr} ?",
                  _yes(getattr(a, attr) == getattr(b, attr)), "CompareAttr", (a.id, b.id), ("yes", "no"), image_size)


def _logical_q(scene, item1, op, item2, image_size):
    p1, p2 = _has(scene, *item1), _has(scene, *item2)
    return Sample(scene, f"is there a {item1[0]} {item1[1]} {op} a {item2[0]} {item2[1]} ?",
                  _yes(p1 and p2 if op == "and" else p1 or p2), "LogicalObj",
                  _ref_ids(scene, *item1) + _ref_ids(scene, *item2), ("yes", "no"), image_size)


def _count_q(scene, color, image_size):
    ids = _ids(scene, color=color)
    return Sample(scene, f"how many {color} shapes are there ?", COUNT_WORDS[len(ids) - 1], "Count", ids,
                  COUNT_WORDS, image_size)


def _exist_q(scene, item, image_size):
    return Sample(scene, f"is there a {item[0]} {item[1]} ?", _yes(_has(scene, *item)), "Exist",
                  _ref_ids(scene, *item), ("yes", "no"), image_size)


# answer first: draw the answer, build a scene that fits it

def _query_attr(rng, image_size):
    shape, attr = _pick(rng, SHAPES), _pick(rng, ("color", "size"))
    scene = _build(rng, [{"shape": shape, attr: _pick(rng, _values(attr))}])
    return _query_q(scene, shape, attr, image_size)


def _choose_attr(rng, image_size):
    shape, attr = _pick(rng, SHAPES), _pick(rng, ("color", "size"))
    answer = _pick(rng, _values(attr))
    scene = _build(rng, [{"shape": shape, attr: answer}])
    return _choose_attr_q(scene, shape, attr, _options(rng, answer, _values(attr)), image_size)


def _choose_rel(rng, image_size):
    s1, s2 = _two_shapes(rng)
    words = _pick(rng, (("left", "right"), ("above", "below")))
    answer = _pick(rng, words)
    axis, sign = ("x" if "left" in words else "y"), (1 if answer in ("left", "above") else -1)

    def related(objs):  # object 0 (s1) lies `answer` of object 1 (s2) by a clear margin
        return sign * (getattr(objs[1], axis) - getattr(objs[0], axis)) >= _REL_MARGIN

    scene = _build(rng, [{"shape": s1}, {"shape": s2}], relation=related)
    return _choose_rel_q(scene, s1, s2, words if rng.random() < 0.5 else words[::-1], image_size)


def _compare_attr(rng, image_size):
    s1, s2 = _two_shapes(rng)
    attr = _pick(rng, ("color", "size"))
    v1 = _pick(rng, _values(attr))
    v2 = v1 if rng.random() < 0.5 else _pick(rng, [v for v in _values(attr) if v != v1])
    return _compare_q(_build(rng, [{"shape": s1, attr: v1}, {"shape": s2, attr: v2}]), s1, s2, attr, image_size)


def _logical_obj(rng, image_size):
    s1, s2 = _two_shapes(rng)
    items = ((_pick(rng, COLORS), s1), (_pick(rng, COLORS), s2))
    op = _pick(rng, ("and", "or"))
    present = _pick(rng, _PRESENCE[op, _pick(rng, ("yes", "no"))])
    required, forbidden = [], set()
    for item, here in zip(items, present):
        _require(rng, required, forbidden, *item, here)
    return _logical_q(_build(rng, required, forbidden_shapes=forbidden), items[0], op, items[1], image_size)


def _count(rng, image_size):
    color, k = _pick(rng, COLORS), int(rng.integers(1, len(COUNT_WORDS) + 1))
    scene = _build(rng, [{"color": color}] * k, n=int(rng.integers(max(2, k), 5)),
                   other_colors=[c for c in COLORS if c != color])
    return _count_q(scene, color, image_size)


def _exist(rng, image_size):
    item = (_pick(rng, COLORS), _pick(rng, SHAPES))
    required, forbidden = [], set()
    _require(rng, required, forbidden, *item, rng.random() < 0.5)
    return _exist_q(_build(rng, required, forbidden_shapes=forbidden), item, image_size)


_GENERATORS = {"QueryAttr": _query_attr, "ChooseAttr": _choose_attr, "ChooseRel": _choose_rel,
               "CompareAttr": _compare_attr, "LogicalObj": _logical_obj, "Count": _count, "Exist": _exist}
_BOTH, _NEITHER, _ONE = (True, True), (False, False), [(True, False), (False, True)]
_PRESENCE = {("and", "yes"): [_BOTH], ("and", "no"): _ONE + [_NEITHER],
             ("or", "yes"): _ONE + [_BOTH], ("or", "no"): [_NEITHER]}


# scene first: pick what to ask about a given scene

def _ask_query(scene, rng, image_size):
    return _query_q(scene, _pick(rng, scene.objects).shape, _pick(rng, ("color", "size")), image_size)


def _ask_choose_attr(scene, rng, image_size):
    obj, attr = _pick(rng, scene.objects), _pick(rng, ("color", "size"))
    return _choose_attr_q(scene, obj.shape, attr, _options(rng, getattr(obj, attr), _values(attr)), image_size)


def _ask_choose_rel(scene, rng, image_size):
    words = _pick(rng, (("left", "right"), ("above", "below")))
    axis = "x" if "left" in words else "y"
    pairs = [(a, b) for a in scene.objects for b in scene.objects
             if abs(getattr(a, axis) - getattr(b, axis)) >= _REL_MARGIN]
    if not pairs:
        return None
    a, b = _pick(rng, pairs)
    return _choose_rel_q(scene, a.shape, b.shape, words if rng.random() < 0.5 else words[::-1], image_size)


def _ask_compare(scene, rng, image_size):
    attr, same = _pick(rng, ("color", "size")), rng.random() < 0.5
    pairs = [(a, b) for a in scene.objects for b in scene.objects if a.id != b.id]
    wanted = [(a, b) for a, b in pairs if (getattr(a, attr) == getattr(b, attr)) == same]
    a, b = _pick(rng, wanted or pairs)
    return _compare_q(scene, a.shape, b.shape, attr, image_size)


def _ask_logical(scene, rng, image_size):
    op = _pick(rng, ("and", "or"))
    present = _pick(rng, _PRESENCE[op, _pick(rng, ("yes", "no"))])
    here = [(o.color, o.shape) for o in scene.objects]
    away = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in here]
    first = _pick(rng, here if present[0] else away)
    second = [item for item in (here if present[1] else away) if item[1] != first[1]]
    return _logical_q(scene, first, op, _pick(rng, second), image_size) if second else None


def _ask_count(scene, rng, image_size):
    colors = [c for c in COLORS if 1 <= len(_ids(scene, color=c)) <= len(COUNT_WORDS)]
    return _count_q(scene, _pick(rng, colors), image_size) if colors else None


def _ask_exist(scene, rng, image_size):
    here = [(o.color, o.shape) for o in scene.objects]
    away = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in here]
    return _exist_q(scene, _pick(rng, here if rng.random() < 0.5 else away), image_size)


_ASK = {"QueryAttr": _ask_query, "ChooseAttr": _ask_choose_attr, "ChooseRel": _ask_choose_rel,
        "CompareAttr": _ask_compare, "LogicalObj": _ask_logical, "Count": _ask_count, "Exist": _ask_exist}


# ---------------------------------------------------------------- scene construction


def _pick(rng, values):
    values = list(values)
    return values[int(rng.integers(len(values)))]


def _two_shapes(rng) -> tuple[str, str]:
    s1, s2 = rng.permutation(SHAPES)[:2]
    return str(s1), str(s2)


def _options(rng, answer, values) -> tuple[str, str]:
    """Return (answer, a wrong value) in random order."""
    pair = (answer, _pick(rng, [v for v in values if v != answer]))
    return pair if rng.random() < 0.5 else pair[::-1]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _by_shape(scene, shape) -> ShapeObject:
    return next(o for o in scene.objects if o.shape == shape)


def _has(scene, color, shape) -> bool:
    return any(o.color == color and o.shape == shape for o in scene.objects)


def _require(rng, required, forbidden, color, shape, present):
    """Add the constraint "a ``color`` ``shape`` is (not) in the scene".

    Absence is made hard half the time: the shape is there in another colour; otherwise the
    shape is missing and the colour is there on another shape.
    """
    if present:
        required.append({"shape": shape, "color": color})
    elif rng.random() < 0.5:
        required.append({"shape": shape, "color": _pick(rng, [c for c in COLORS if c != color])})
    else:
        forbidden.add(shape)
        required.append({"color": color})


def _build(rng, required, n=None, forbidden_shapes=(), other_colors=None, relation=None) -> Scene:
    """Return a scene with the ``required`` objects (attribute dicts) plus random fillers.

    Fillers take free shapes and colours from ``other_colors`` (all by default). ``relation``,
    if given, must hold for the first two required objects. Object order (= ids) is shuffled.
    """
    taken = {r["shape"] for r in required if "shape" in r}
    free = [str(s) for s in rng.permutation([s for s in SHAPES if s not in taken | set(forbidden_shapes)])]
    n_max = len(taken) + len(free)
    n = max(min(int(rng.integers(2, 5)) if n is None else n, n_max), len(required))
    attrs = []
    for spec in list(required) + [{}] * (n - len(required)):
        a = dict(spec)
        if "shape" not in a:
            a["shape"] = free.pop(0)
        if "color" not in a:
            a["color"] = _pick(rng, COLORS if spec or other_colors is None else other_colors)
        if "size" not in a:
            a["size"] = _pick(rng, SIZES)
        attrs.append(a)
    extents = [float(rng.uniform(*SIZES[a["size"]])) for a in attrs]
    centres = _place(rng, extents, relation)
    order = rng.permutation(n)
    return Scene(tuple(ShapeObject(new_id, extent=extents[old], x=centres[old][0], y=centres[old][1],
                                   **attrs[old]) for new_id, old in enumerate(order)))


def _place(rng, extents, relation):
    """Return non-overlapping centres (x, y) for objects of the given extents."""
    while True:
        centres = []
        for e in extents:
            lo, hi = e / 2 + 0.02, 1 - e / 2 - 0.02
            for _ in range(200):
                x, y = rng.uniform(lo, hi, size=2)
                if all(abs(x - cx) >= (e + ce) / 2 + _GAP or abs(y - cy) >= (e + ce) / 2 + _GAP
                       for (cx, cy), ce in zip(centres, extents)):
                    centres.append((float(x), float(y)))
                    break
            else:
                break
        if len(centres) == len(extents):
            if relation is None or relation([_Pos(*c) for c in centres[:2]]):
                return centres


@dataclass(frozen=True)
class _Pos:
    x: float
    y: float


def _ids(scene, shape=None, color=None) -> tuple[int, ...]:
    return tuple(o.id for o in scene.objects
                 if (shape is None or o.shape == shape) and (color is None or o.color == color))


def _ref_ids(scene, color, shape) -> tuple[int, ...]:
    """Objects a "``color`` ``shape``" phrase is about: the ``shape`` if present, else the ``color`` ones."""
    return _ids(scene, shape=shape) or _ids(scene, color=color)


# ---------------------------------------------------------------- drawing


def _draw(draw: ImageDraw.ImageDraw, obj: ShapeObject, size: int) -> None:
    """Paint ``obj`` with fill 255 onto a ``size`` px canvas."""
    x0, x1 = round((obj.x - obj.extent / 2) * size), round((obj.x + obj.extent / 2) * size)
    y0, y1 = round((obj.y - obj.extent / 2) * size), round((obj.y + obj.extent / 2) * size)
    r, b = x1 - 1, y1 - 1  # PIL boxes are inclusive
    if obj.shape == "circle":
        draw.ellipse([x0, y0, r, b], fill=255)
    elif obj.shape == "square":
        draw.rectangle([x0, y0, r, b], fill=255)
    elif obj.shape == "triangle":
        draw.polygon([(x0, b), (r, b), ((x0 + r) / 2, y0)], fill=255)
    elif obj.shape == "cross":
        t = max(1, round((x1 - x0) / 3))
        mx, my = (x0 + x1 - t) // 2, (y0 + y1 - t) // 2
        draw.rectangle([x0, my, r, my + t - 1], fill=255)
        draw.rectangle([mx, y0, mx + t - 1, b], fill=255)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; choose from {SHAPES}")


def _mask_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
