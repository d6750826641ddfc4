"""Steering: add a vector to a decoder layer's output during forward passes and generation.

Reference: Khayatan et al. (2025), "Analyzing Fine-tuning Representation Shift for Multimodal LLMs
Steering". ``steering_vector(source, target)`` is the mean difference of two sets of features
(e.g. the last prompt position at layer ``l`` for questions answered "yes" and for those
answered "no"); ``steer(vlm, vector, layer, alpha)`` adds ``alpha * vector`` to the output of
decoder layer ``layer``; ``steering_effect`` measures, against the unsteered baseline, how many
answers become the target, how many change at all, and the accuracy on untargeted question
types (side effects).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import pandas as pd
import torch

from analysis.capture import generate_answers
from analysis.data.samples import as_samples
from analysis.errors import InputError
from analysis.models.answers import first_word
from analysis.models.sites import add, editing

POSITIONS = ("all", "generated")


def steering_vector(features_source, features_target) -> torch.Tensor:
    """Return ``mean(features_target) - mean(features_source)``, shape ``(hidden,)``, fp32.

    Args:
        features_source, features_target: ``(N_s, hidden)`` and ``(N_t, hidden)`` features of the
            same site (e.g. ``Activations.get("last", layer)`` split by answer).
    """
    source, target = (torch.as_tensor(f).float() for f in (features_source, features_target))
    for name, f in (("source", source), ("target", target)):
        if f.dim() != 2 or f.shape[0] == 0:
            raise InputError(f"{name} features must be a non-empty (N, hidden) array; got shape {tuple(f.shape)}")
        if not torch.isfinite(f).all():
            raise InputError(f"{name} features contain NaN or infinite values")
    if source.shape[1] != target.shape[1]:
        raise InputError(f"source and target features differ in width: {source.shape[1]} vs {target.shape[1]}")
    return target.mean(0) - source.mean(0)


@contextlib.contextmanager
def steer(vlm, vector, layer: int, alpha: float = 1.0, positions: str = "all") -> Iterator[None]:
    """Add ``alpha * vector`` to decoder layer ``layer``'s output (site ``resid_post``) inside the ``with`` block.

    Args:
        vlm: the model.
        vector: ``(hidden,)`` steering direction (e.g. from ``steering_vector``).
        layer: decoder layer index (negative counts from the end).
        alpha: scale; must be finite.
        positions: ``"all"`` (every position of every forward) or ``"generated"`` (the last
            position of each forward: in generation, the last prompt position, whose prediction is
            the first answer token, then each new token; prompt positions are left untouched).

    Applies to every forward and ``generate`` call made inside the block, batched or not; the
    edit (``analysis.models.sites.editing``) is removed on exit, even after an exception.
    """
    layer = vlm.check_layer(layer)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise InputError(f"alpha must be a finite number; got {alpha!r}")
    if positions not in POSITIONS:
        raise InputError(f"positions must be one of {', '.join(POSITIONS)}; got {positions!r}")
    vector = torch.as_tensor(vector).detach()
    if vector.shape != (vlm.hidden_size,):
        raise InputError(f"the steering vector must have shape ({vlm.hidden_size},); got {tuple(vector.shape)}")
    if not torch.isfinite(vector).all():
        raise InputError("the steering vector contains NaN or infinite values")
    delta = (alpha * vector.float()).to(device=vlm.device, dtype=vlm.dtype)
    with editing(vlm, {("resid_post", layer): add(delta, "all" if positions == "all" else "last")}):
        yield


@dataclass
class SteeringResult:
    """Outcome of steering against the unsteered baseline.

    Attributes:
        summary: one row per alpha: ``layer``, ``alpha``, ``positions``, ``n_targeted`` (samples
            whose baseline answer is ``source``), ``flip_rate`` (share of them answering
            ``target``), ``changed_targeted``, ``changed`` (share of all answers that changed),
            ``n_untargeted``, ``accuracy_untargeted`` and ``accuracy_untargeted_baseline`` (on
            question types outside the targeted ones), ``accuracy`` and ``accuracy_baseline``
            (all samples).
        answers: one row per sample x alpha: ``sample``, ``question_type``, ``answer`` (gold),
            ``baseline``, ``steered`` (first words), ``alpha``, ``targeted``, ``untargeted``.
        source, target: the answer words; targeted_types: the question types counted as targeted.
    """

    summary: pd.DataFrame
    answers: pd.DataFrame
    source: str
    target: str
    targeted_types: list


def steering_effect(
    vlm,
    samples: Iterable,
    vector,
    layer: int,
    alphas: Sequence[float],
    source: str,
    target: str,
    targeted_types: Sequence[str] | None = None,
    positions: str = "all",
    max_new_tokens: int = 3,
    batch_size: int = 16,
    progress: bool = True,
) -> SteeringResult:
    """Generate with and without steering and compare the answers.

    Args:
        vlm: the model.
        samples: samples with gold answers and question types.
        vector, layer, positions: see ``steer``.
        alphas: the scales to try (each must be finite).
        source, target: the answer words steering should turn one into the other (e.g. "yes" ->
            "no"); compared with the first word of each generated answer, lower case.
        targeted_types: question types where ``source`` / ``target`` are answers; default the
            types of the samples whose gold answer is either. Accuracy on the remaining types
            measures side effects.
        max_new_tokens, batch_size, progress: generation settings.
    """
    samples = as_samples(samples)
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise InputError("give at least one alpha")
    if any(not math.isfinite(a) for a in alphas):
        raise InputError(f"every alpha must be finite; got {alphas}")
    if any(s.answer is None for s in samples):
        raise InputError("steering_effect measures accuracy: give every sample its gold answer")
    source, target = first_word(source), first_word(target)
    if targeted_types is None:
        targeted_types = sorted({s.question_type for s in samples if first_word(s.answer) in (source, target)},
                                key=str)
    targeted_types = list(targeted_types)
    settings = dict(max_new_tokens=max_new_tokens, batch_size=batch_size)
    baseline = generate_answers(vlm, samples, progress=progress, **settings)
    in_types = baseline["question_type"].isin(targeted_types)
    targeted = in_types & (baseline["word"] == source)
    untargeted = ~in_types
    frames, rows = [], []
    for alpha in alphas:
        with steer(vlm, vector, layer, alpha, positions):
            steered = generate_answers(vlm, samples, progress=progress, **settings)
        changed = steered["word"] != baseline["word"]
        frames.append(pd.DataFrame(dict(
            sample=baseline["sample"], question_type=baseline["question_type"], answer=baseline["answer"],
            baseline=baseline["word"], steered=steered["word"], alpha=alpha, targeted=targeted,
            untargeted=untargeted)))
        rows.append(dict(
            layer=vlm.check_layer(layer), alpha=alpha, positions=positions, n_targeted=int(targeted.sum()),
            flip_rate=_share(steered["word"][targeted] == target),
            changed_targeted=_share(changed[targeted]), changed=_share(changed),
            n_untargeted=int(untargeted.sum()),
            accuracy_untargeted=_share(steered["correct"][untargeted]),
            accuracy_untargeted_baseline=_share(baseline["correct"][untargeted]),
            accuracy=_share(steered["correct"]), accuracy_baseline=_share(baseline["correct"])))
    return SteeringResult(pd.DataFrame(rows), pd.concat(frames, ignore_index=True), source, target, targeted_types)


def _share(values: pd.Series) -> float:
    """Mean of a boolean series as a float (NaN when empty)."""
    return float(values.astype(float).mean()) if len(values) else float("nan")
