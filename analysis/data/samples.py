"""What the probes accept as a sample: anything with an image, a question and maybe an answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from analysis.errors import InputError


@dataclass
class Sample:
    """One probe input.

    Attributes:
        image: path, ``PIL.Image`` or uint8 array.
        question: the question text.
        answer: the gold answer (one word), or None when unknown.
        boxes: ground-truth region as ``(x0, y0, x1, y1)`` boxes in original-image pixels, or None.
        question_type: a label for grouping results (e.g. ``"ChooseAttr"``), or None.
        foil: the false option of a choice question, tracked by the logit lens, or None.
        id: an identifier for result tables.
    """

    image: Any
    question: str
    answer: str | None = None
    boxes: list | None = None
    question_type: str | None = None
    foil: str | None = None
    id: Any = None


_ALIASES = {"boxes": ("boxes", "object_boxes"), "question_type": ("question_type", "type")}


def as_samples(samples: Iterable) -> list[Sample]:
    """Return ``samples`` as ``Sample`` objects.

    Accepts ``Sample``, dicts, or any object with ``image`` and ``question`` attributes (e.g. a
    zoo sample, whose ``object_boxes`` become ``boxes``; with two ``options``, the one that is not
    the answer becomes the ``foil``). Missing ids become the list index.
    """
    out = []
    for index, item in enumerate(samples):
        if isinstance(item, Sample):
            sample = item
        else:
            get = item.get if isinstance(item, dict) else (lambda k, d=None, o=item: getattr(o, k, d))
            if get("image") is None or get("question") is None:
                raise InputError(f"sample {index} has no image or no question")
            fields = {}
            for name in ("answer", "foil", "id"):
                fields[name] = get(name)
            for name, keys in _ALIASES.items():
                fields[name] = next((get(k) for k in keys if get(k) is not None), None)
            options = get("options")
            if fields["foil"] is None and options is not None and len(options) == 2 and fields["answer"] in options:
                fields["foil"] = next(o for o in options if o != fields["answer"])  # a two-way choice
            sample = Sample(image=get("image"), question=get("question"), **fields)
        if sample.id is None:
            sample.id = index
        out.append(sample)
    if not out:
        raise InputError("no samples given")
    return out
