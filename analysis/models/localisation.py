"""Localisation of per-image-token scores against a ground-truth region: mass ratio and pointing game.

Only image tokens with a patch box (``kind == "patch"``) take part; LLaVA-NeXT newline tokens and
the like are left out of both numerator and denominator. A patch is *related* when its box
overlaps any region box (``PreparedInputs.related_positions``).

- ``share``: the scores' share on related patches, ``sum(related) / sum(all patches)``.
- ``area_share``: the related patches' share of the patch area, summing each patch box's area in
  original pixels (tiles that cover the image twice, e.g. LLaVA-NeXT's overview and high-res
  grid, count twice, consistently in both sums).
- ``ratio = share / area_share``: 1 when the scores are spread evenly over the image area
  (score proportional to box area), above 1 when they concentrate on the region.
- ``hit``: the pointing game: whether the highest-scoring patch is related (the first one on
  ties).

Scores should be non-negative (attention, rollout); pass the positive part of signed maps.
"""

from __future__ import annotations

import numpy as np

from analysis.errors import InputError
from analysis.models.inputs import PreparedInputs


def positive_part(scores) -> np.ndarray:
    """Return ``max(scores, 0)`` with NaN as 0, the form localisation scores expect."""
    return np.nan_to_num(np.clip(np.asarray(scores, dtype=float), 0, None), nan=0.0)


def region_boxes(region) -> np.ndarray:
    """Return a region as a ``(n_boxes, 4)`` float array of ``(x0, y0, x1, y1)`` boxes.

    Args:
        region: one box, a sequence of boxes, or an object with ``object_boxes`` (a zoo
            ``Sample``), in the original image's pixels.
    """
    boxes = getattr(region, "object_boxes", region)
    if boxes is None:
        raise InputError("no ground-truth region: give boxes (x0, y0, x1, y1) in image pixels")
    boxes = np.asarray(list(boxes) if not isinstance(boxes, np.ndarray) else boxes, dtype=float)
    if boxes.ndim == 1 and boxes.size == 4:
        boxes = boxes[None]
    if boxes.size == 0 or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(
            f"a region is one or more boxes (x0, y0, x1, y1) in image pixels; got an array of shape {boxes.shape}"
        )
    return boxes


def localisation_scores(prepared: PreparedInputs, scores, region) -> dict[str, np.ndarray]:
    """Return the localisation scores of per-image-token maps against a region.

    Args:
        prepared: the input the scores belong to.
        scores: ``(..., n_image)`` non-negative scores, one per image position in sequence order.
        region: the ground-truth region (see ``region_boxes``).

    Returns:
        ``{"share": (...), "ratio": (...), "hit": (...) bool, "area_share": ()}`` as numpy arrays.
    """
    scores = np.asarray(scores, dtype=float)
    n_image = len(prepared.patches)
    if scores.shape[-1:] != (n_image,):
        raise InputError(f"expected scores of shape (..., {n_image}), one per image token; got {scores.shape}")
    patch = prepared.patches["kind"].to_numpy() == "patch"
    related = np.isin(prepared.patches["position"].to_numpy(), prepared.related_positions(region_boxes(region)).numpy())
    related &= patch
    if not related.any():
        raise InputError("the region overlaps no image patch; check that its boxes are in this image's pixels")
    p = prepared.patches
    area = ((p["x1"] - p["x0"]) * (p["y1"] - p["y0"])).to_numpy(dtype=float)
    area_share = area[related].sum() / area[patch].sum()
    share = scores[..., related].sum(-1) / scores[..., patch].sum(-1)
    best = np.flatnonzero(patch)[np.argmax(scores[..., patch], axis=-1)]
    return {"share": share, "ratio": share / area_share, "hit": related[best], "area_share": np.asarray(area_share)}
