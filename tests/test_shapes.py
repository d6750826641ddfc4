"""The shapes world: determinism, exact ground truth, derivable and balanced answers."""

import re
from collections import Counter

import numpy as np
import pytest

from analysis.data import shapes
from analysis.data.shapes import (BACKGROUND, COLORS, QUESTION_TYPES, Sample, Scene, ask, make_samples,
                                  random_scene)

N = 700


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return make_samples(N, seed=123)


def test_deterministic_and_chunkable():
    a = make_samples(30, seed=5)
    again = make_samples(30, seed=5)  # a repeated request: the same frozen samples, in the caller's own list
    assert again == a and again is not a
    again.pop()
    assert len(make_samples(30, seed=5)) == 30
    shapes._samples.cache_clear()  # generated anew: the same questions and pixels
    b = make_samples(30, seed=5)
    assert all(x is not y for x, y in zip(a, b))
    assert [(s.scene, s.question, s.answer, s.object_ids) for s in a] == \
           [(s.scene, s.question, s.answer, s.object_ids) for s in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    assert [s.scene for s in make_samples(10, seed=5, start=20)] == [s.scene for s in a[20:]]
    assert [s.scene for s in make_samples(30, seed=6)] != [s.scene for s in a]


def test_every_type_and_filter():
    assert Counter(s.question_type for s in make_samples(70, seed=0)) == {t: 10 for t in QUESTION_TYPES}
    assert {s.question_type for s in make_samples(10, seed=0, question_types=["Count"])} == {"Count"}
    with pytest.raises(ValueError, match="unknown question types"):
        make_samples(1, question_types=["Nope"])


@pytest.mark.parametrize("size", [64, 96, 50])
def test_boxes_and_masks_match_pixels(samples, size):
    for s in samples[:60]:
        s = s.with_size(size)
        pixels = np.asarray(s.image)
        assert pixels.shape == (size, size, 3)
        all_masks = s.scene.masks(size)
        assert not (all_masks.sum(0) > 1).any(), "objects overlap"
        for obj, mask, box in zip(s.scene.objects, all_masks, s.scene.boxes(size)):
            assert mask.any()
            assert (pixels[mask] == COLORS[obj.color]).all()
            x0, y0, x1, y1 = box
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert (pixels[~all_masks.any(0)] == BACKGROUND).all()
        assert s.masks.shape == (len(s.object_ids), size, size)
        assert s.object_boxes == [s.scene.boxes(size)[i] for i in s.object_ids]


def _solve(scene: Scene, q: str) -> tuple[str, set[int]]:
    """Answer ``q`` from the scene's objects alone, independently of the generator."""
    objs = scene.objects
    by_shape = {o.shape: o for o in objs}

    def ref(color, shape):  # objects a "color shape" phrase is about
        return {by_shape[shape].id} if shape in by_shape else {o.id for o in objs if o.color == color}

    if m := re.fullmatch(r"what (color|size) is the (\w+) \?", q):
        o = by_shape[m[2]]
        return getattr(o, m[1]), {o.id}
    if m := re.fullmatch(r"is the (\w+) (\w+) or (\w+) \?", q):
        o = by_shape[m[1]]
        value = o.color if m[2] in COLORS else o.size
        assert value in (m[2], m[3])
        return value, {o.id}
    if m := re.fullmatch(r"is the (\w+) (left|right|above|below) or (left|right|above|below) (?:of )?the (\w+) \?", q):
        a, b = by_shape[m[1]], by_shape[m[4]]
        dx, dy = b.x - a.x, b.y - a.y
        rel = ("left" if dx > 0 else "right") if m[2] in ("left", "right") else ("above" if dy > 0 else "below")
        assert abs(dx if rel in ("left", "right") else dy) >= 0.15
        return rel, {a.id, b.id}
    if m := re.fullmatch(r"are the (\w+) and the (\w+) the same (color|size) \?", q):
        a, b = by_shape[m[1]], by_shape[m[2]]
        return ("yes" if getattr(a, m[3]) == getattr(b, m[3]) else "no"), {a.id, b.id}
    if m := re.fullmatch(r"is there a (\w+) (\w+) (and|or) a (\w+) (\w+) \?", q):
        p1 = any(o.color == m[1] and o.shape == m[2] for o in objs)
        p2 = any(o.color == m[4] and o.shape == m[5] for o in objs)
        yes = (p1 and p2) if m[3] == "and" else (p1 or p2)
        return ("yes" if yes else "no"), ref(m[1], m[2]) | ref(m[4], m[5])
    if m := re.fullmatch(r"how many (\w+) shapes are there \?", q):
        ids = {o.id for o in objs if o.color == m[1]}
        return ["zero", "one", "two", "three", "four"][len(ids)], ids
    if m := re.fullmatch(r"is there a (\w+) (\w+) \?", q):
        yes = any(o.color == m[1] and o.shape == m[2] for o in objs)
        return ("yes" if yes else "no"), ref(m[1], m[2])
    raise AssertionError(f"unparsed question {q!r}")


def test_answers_derivable_from_scene(samples):
    for s in samples:
        answer, ids = _solve(s.scene, s.question)
        assert answer == s.answer, s.question
        assert ids == set(s.object_ids), s.question
        assert s.answer in s.options
        assert len({o.shape for o in s.scene.objects}) == len(s.scene.objects) >= 2


def test_questions_about_a_given_scene_are_derivable(samples):
    rng = np.random.default_rng(0)
    asked = Counter()
    for s in samples[:200]:
        for qt in QUESTION_TYPES:
            q = ask(s.scene, rng, qt)
            if q is not None:
                asked[qt] += 1
                assert q.question_type == qt and q.answer in q.options
                assert _solve(q.scene, q.question) == (q.answer, set(q.object_ids)), q.question
    assert min(asked.values()) > 100


def test_answers_balanced():
    groups: dict = {}
    for s in make_samples(3500, seed=7):
        family = "color" if set(s.options) & set(COLORS) else tuple(sorted(s.options))
        groups.setdefault((s.question_type, family), Counter())[s.answer] += 1
    for key, counts in groups.items():
        assert min(counts.values()) / max(counts.values()) > 0.6, (key, counts)


def test_text_only_baseline_at_chance():
    """A bag-of-words classifier trained on questions alone does no better than chance on held-out ones."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    train, test = make_samples(5000, seed=1), make_samples(1400, seed=2)
    vec = CountVectorizer(token_pattern=r"\S+", ngram_range=(1, 3))
    clf = LogisticRegression(max_iter=2000).fit(vec.fit_transform([s.question for s in train]),
                                                [s.answer for s in train])
    pred = clf.predict(vec.transform([s.question for s in test]))
    for qt in QUESTION_TYPES:
        idx = [i for i, s in enumerate(test) if s.question_type == qt]
        acc = np.mean([pred[i] == test[i].answer for i in idx])
        chance = np.mean([1 / len(test[i].options) for i in idx])
        assert acc < chance + 0.08, (qt, acc, chance)


def test_captions_and_tokenizable_text():
    scene = random_scene(np.random.default_rng(0))
    caption = scene.describe()
    assert caption.count(" . ") + 1 == len(scene.objects) and caption.endswith(" .")
    xs = [int(x) for x in re.findall(r" x (\d)", caption)]
    assert xs == sorted(xs)
    for s in make_samples(70, seed=3):
        assert s.question == " ".join(s.question.split()) and s.question.endswith(" ?")
        assert re.fullmatch(r"[a-z]+", s.answer)
