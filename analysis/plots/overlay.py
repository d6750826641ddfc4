"""Per-image-token scores drawn over the image, one panel per tile, for every VLM family."""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analysis.errors import InputError
from analysis.models import PreparedInputs
from analysis.models.inputs import Box
from analysis.plots.style import COLUMN_WIDTH, SEQUENTIAL_CMAP


def plot_token_overlay(
    prepared: PreparedInputs,
    scores,
    *,
    label: str,
    title: str | None = None,
    tiles: Sequence[int] | None = None,
    boxes: Sequence[Box] = (),
    cmap: str = SEQUENTIAL_CMAP,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.7,
    ncols: int = 5,
    width: float | None = None,
) -> Figure:
    """Return a figure with one score per image token painted over that token's image patch.

    Each tile of the input (LLaVA-NeXT's overview and high-res grid, Idefics3's crops and
    global image, ...) gets a panel showing the original image cropped to the tile, with every
    token's score filling the box (``prepared.patches``, original-image pixels) it covers. All
    panels share one colour scale and one colorbar. Tokens without a box (LLaVA-NeXT newline
    tokens) are not drawn; the panel's x label says how many there are and their largest score.

    Args:
        prepared: the input the scores belong to (``VLM.prepare``).
        scores: shape ``(n_image,)``, one score per image position in sequence order (as
            ``prepared.image_positions``); numpy array, list or torch tensor. NaN is not drawn.
        label: colorbar label, with units, e.g. ``"embedding L2 norm"``.
        title: figure title; say the model and the data (e.g. ``"tiny:llava, shapes scene 0"``).
        tiles: which tiles to draw (default: all, in order).
        boxes: ``(x0, y0, x1, y1)`` regions to outline in every panel (original-image pixels),
            e.g. the ground-truth objects of a shapes question; drawn as white dashed rectangles.
        cmap: colormap name (default: the style's perceptually uniform sequential map).
        vmin, vmax: colour range (default: min and max of the drawn scores).
        alpha: opacity of the score layer over the image, in [0, 1].
        ncols: most panels per row.
        width: figure width in inches (default: one paper column for one panel, two otherwise).

    Returns:
        The matplotlib ``Figure``; ``fig.axes`` holds the panels (one per tile) then the colorbar.
    """
    values = _as_scores(scores, len(prepared.patches))
    tiles = list(prepared.grids) if tiles is None else list(tiles)
    unknown = [t for t in tiles if t not in prepared.grids]
    if unknown or not tiles:
        raise InputError(f"tiles {unknown or tiles} do not exist; this input has tiles {sorted(prepared.grids)}")
    patches = prepared.patches
    kind, tile_of = patches["kind"].to_numpy(), patches["tile"].to_numpy()
    finite = values[(kind == "patch") & np.isin(tile_of, tiles) & np.isfinite(values)]
    norm = Normalize(vmin=finite.min() if vmin is None and finite.size else vmin,
                     vmax=finite.max() if vmax is None and finite.size else vmax)

    ncols = min(ncols, len(tiles))
    nrows = math.ceil(len(tiles) / ncols)
    width = width or (COLUMN_WIDTH if len(tiles) == 1 else 2 * COLUMN_WIDTH)
    aspect = max((y1 - y0) / (x1 - x0) for x0, y0, x1, y1 in map(prepared.tile_box, tiles))
    panel = (width - 0.8) / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, nrows * panel * aspect + 0.6), squeeze=False)
    for i, (ax, tile) in enumerate(zip(axes.flat, tiles)):
        draw_token_scores(ax, prepared, values, tiles=[tile], norm=norm, cmap=cmap, alpha=alpha, boxes=boxes)
        rows, cols = prepared.grids[tile]
        name = prepared.tile_names.get(tile, f"tile {tile}")
        ax.set_title(f"{name}\n{rows} x {cols} tokens" if len(tiles) > 1 else f"{rows} x {cols} image tokens")
        other = (tile_of == tile) & (kind != "patch")
        xlabel = "x (px)" if i // ncols == nrows - 1 or other.any() else ""
        for extra in np.unique(kind[other]):
            extra_values = values[other & (kind == extra)]
            xlabel += f"\n{len(extra_values)} {extra} tokens not drawn, max {np.nanmax(extra_values):.3g}"
        ax.set_xlabel(xlabel)
        ax.set_ylabel("y (px)" if i % ncols == 0 else "")
    for ax in axes.flat[len(tiles):]:
        ax.remove()
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(fig.axes), label=label, alpha=alpha, shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig


def draw_token_scores(
    ax: Axes,
    prepared: PreparedInputs,
    scores,
    *,
    tiles: Sequence[int],
    norm: Normalize,
    cmap: str = SEQUENTIAL_CMAP,
    alpha: float = 0.7,
    boxes: Sequence[Box] = (),
) -> PolyCollection:
    """Draw the image and the scores of the image tokens of ``tiles`` on ``ax``; return the score layer.

    The building block of every overlay figure: the original image, then one filled box per
    patch token of ``tiles`` (``prepared.patches`` boxes, original-image pixels) coloured by its
    score, then ``boxes`` outlined in white; the view is limited to the tiles' extent. Tiles drawn
    together should not overlap (e.g. Idefics3's crops, not a crop and the global image).

    Args:
        ax: the axes to draw on.
        prepared: the input the scores belong to.
        scores: shape ``(n_image,)``, one score per image position in sequence order; NaN is not drawn.
        tiles: the tiles whose tokens are drawn.
        norm: maps scores to ``[0, 1]`` for ``cmap`` (share one between panels to compare them).
        cmap: colormap name.
        alpha: opacity of the score layer.
        boxes: ``(x0, y0, x1, y1)`` regions to outline (original-image pixels).

    Returns:
        The ``PolyCollection`` of token boxes (usable as a colorbar mappable).
    """
    values = _as_scores(scores, len(prepared.patches))
    patches = prepared.patches
    sel = (patches["kind"].to_numpy() == "patch") & np.isin(patches["tile"].to_numpy(), list(tiles))
    if not sel.any():
        raise InputError(f"tiles {list(tiles)} have no patch tokens; this input has tiles {sorted(prepared.grids)}")
    b = patches.loc[sel, ["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
    quads = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1)
    image = np.asarray(prepared.image)
    ax.imshow(image, extent=(0, image.shape[1], image.shape[0], 0), interpolation="nearest")
    layer = PolyCollection(quads, array=np.ma.masked_invalid(values[sel]), cmap=cmap, norm=norm, alpha=alpha,
                           linewidths=0, antialiaseds=False)
    ax.add_collection(layer)
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linestyle="--", linewidth=1.0))
    ax.set(xlim=(b[:, 0].min(), b[:, 2].max()), ylim=(b[:, 3].max(), b[:, 1].min()), aspect="equal")
    ax.grid(False)
    return layer


def _as_scores(scores, n_image: int) -> np.ndarray:
    """Return ``scores`` as a float array of shape ``(n_image,)``; raise if the shape is wrong."""
    if hasattr(scores, "detach"):
        scores = scores.detach().float().cpu().numpy()
    values = np.asarray(scores, dtype=float)
    if values.shape != (n_image,):
        raise InputError(
            f"expected one score per image token, shape ({n_image},); got {values.shape}. "
            "Index a per-position array with prepared.image_positions first."
        )
    return values
