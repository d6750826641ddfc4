"""Small helpers the notebooks share: pick the example, ask a question.

Private to the notebooks (not part of the public API); kept here so that cells stay thin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from analysis.data import load_image
from analysis.data.shapes import make_samples
from analysis.errors import InputError
from analysis.models import VLM, PreparedInputs, answers

SKIMAGE_PREFIX = "skimage:"


@dataclass
class Example:
    """An image and a question to probe, with the ground truth when it is known.

    Attributes:
        image: RGB image.
        question: the question to ask.
        description: a few words naming the data, for figure titles (e.g. "shapes scene, seed 0").
        answer: the correct single-word answer, or None when unknown.
        boxes: ``(x0, y0, x1, y1)`` pixel boxes of the objects the question is about (may be empty).
    """

    image: Image.Image
    question: str
    description: str
    answer: str | None = None
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)


def load_example(image: str | None = None, question: str | None = None, seed: int = 0) -> Example:
    """Return the example a notebook probes.

    Args:
        image: None for a shapes-world scene drawn with ``seed`` (its own question, answer and
            object boxes come with it); ``"skimage:<name>"`` for a scikit-image sample photo
            (e.g. ``"skimage:astronaut"``, ``"skimage:chelsea"``; offline); or an image path.
        question: the question to ask; None keeps the shapes scene's own question (required for
            any other image).
        seed: which shapes scene.
    """
    if image is None:
        sample = make_samples(1, seed=seed)[0]
        return Example(image=sample.image, question=question or sample.question,
                       description=f"shapes scene (seed {seed})",
                       answer=sample.answer if question is None else None,
                       boxes=list(sample.object_boxes) if question is None else [])
    if question is None:
        raise InputError("set `question` when `image` is not a shapes scene (image: null)")
    if image.startswith(SKIMAGE_PREFIX):
        import skimage.data

        name = image[len(SKIMAGE_PREFIX):]
        if not hasattr(skimage.data, name):
            raise InputError(f"scikit-image has no sample {name!r}; try 'skimage:astronaut' or 'skimage:chelsea'")
        return Example(image=load_image(np.asarray(getattr(skimage.data, name)())), question=question,
                       description=f"scikit-image '{name}'")
    return Example(image=load_image(image), question=question, description=Path(image).name)


def greedy_answer(vlm: VLM, prepared: PreparedInputs, max_new_tokens: int = 8) -> str:
    """Return the model's greedy (argmax) continuation of the prompt up to its first stop token."""
    return answers.decode(vlm, answers.generate(vlm, [prepared], max_new_tokens)[0])


def next_token_table(vlm: VLM, logits: torch.Tensor, k: int = 5) -> pd.DataFrame:
    """Return the ``k`` most likely next tokens: columns ``token``, ``probability`` (fp32 softmax).

    Args:
        vlm: the model whose tokenizer names the tokens.
        logits: ``(vocab_size,)`` logits of one position (e.g. ``logits[0, prepared.last_position]``).
        k: how many rows.
    """
    probs = torch.softmax(logits.detach().float(), dim=-1)
    top = torch.topk(probs, k)
    return pd.DataFrame({"token": vlm.tokenizer.convert_ids_to_tokens(top.indices.tolist()),
                         "probability": top.values.cpu().numpy()})


SMALL_MODEL_PARAMETERS = 100_000_000


def threads_for(vlm: VLM) -> int:
    """Run a small model on the CPU with one torch thread; return the threads in use.

    Below ``SMALL_MODEL_PARAMETERS`` (the zoo, tiny models) operations are too small to gain from
    threads inside them, and lose to thread synchronisation when other jobs share the cores (the
    zoo's knockout sweep: 10x slower with two threads on two busy cores). Larger models and other
    devices keep torch's setting.
    """
    if vlm.device.type == "cpu" and sum(p.numel() for p in vlm.model.parameters()) < SMALL_MODEL_PARAMETERS:
        torch.set_num_threads(1)
    return torch.get_num_threads()
