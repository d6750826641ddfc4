"""Figures of the map sanity checks: the randomisation cascade, the comparison, maps side by side."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analysis.errors import InputError
from analysis.models.localisation import positive_part
from analysis.plots.style import COLUMN_WIDTH, PALETTE, SEQUENTIAL_CMAP

_LINESTYLES = ("-", "--", ":", "-.")
FLAG = " (survives randomisation)"


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing or frame.empty:
        raise InputError(f"{what} needs a non-empty frame with columns {', '.join(columns)}; missing {missing}")


def plot_randomisation(frame: pd.DataFrame, *, threshold: float | None = 0.5, title: str | None = None) -> Figure:
    """Return the cascading-randomisation curves: rank correlation with the original map per stage.

    Args:
        frame: ``randomisation`` (``probes.sanity``) output (``stage_index, stage, method, rho``).
        threshold: draw the survival threshold as a dashed line (None: no line).
        title: figure title; say the model and the data.

    Returns:
        A figure with one line per method (mean over samples, band = min..max), stages on x in
        cascade order (top LLM layer first).
    """
    _require(frame, ("stage_index", "stage", "method", "rho"), "plot_randomisation")
    stages = frame.drop_duplicates("stage_index").sort_values("stage_index")
    x = np.arange(len(stages))
    where = dict(zip(stages["stage_index"], x))
    fig, ax = plt.subplots(figsize=(2 * COLUMN_WIDTH, 2.8))
    for i, (method, rows) in enumerate(frame.groupby("method", sort=False)):
        summary = rows.groupby("stage_index")["rho"].agg(["mean", "min", "max"])
        xs = [where[s] for s in summary.index]
        color, line = PALETTE[i % len(PALETTE)], _LINESTYLES[(i // len(PALETTE)) % len(_LINESTYLES)]
        ax.plot(xs, summary["mean"], marker="o", color=color, linestyle=line, label=method)
        ax.fill_between(xs, summary["min"], summary["max"], color=color, alpha=0.12, linewidth=0)
    if threshold is not None:
        ax.axhline(threshold, color="0.4", linestyle="--", linewidth=0.8)
        ax.annotate("survival threshold", (x[-1], threshold), xytext=(0, 2), textcoords="offset points",
                    ha="right", va="bottom", fontsize=6, color="0.4")
    ax.axhline(0, color="0.6", linewidth=0.6)
    ax.set_xticks(x, [f"+ {s}" if i else s for i, s in enumerate(stages["stage"])], rotation=30, ha="right")
    ax.set(ylim=(-1.05, 1.05), xlabel="re-initialised so far (cumulative, top-down)",
           ylabel="Spearman rho with original map")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        ax.set_title(title)
    return fig


_PANELS = (
    ("pointing_game", "pointing game\n(fraction of hits)", None),
    ("mass_ratio", "mass in region /\narea share", 1.0),
    ("deletion_drop", "deletion: p drop (%)\nbar top-k, | random k", None),
    ("rho_all", "Spearman rho after\nfull randomisation", None),
    ("seconds", "time per sample (s)", None),
)


def plot_comparison(table: pd.DataFrame, *, title: str | None = None, timing: bool = True) -> Figure:
    """Return the comparison figure: one panel per check, methods as rows.

    Args:
        table: ``comparison_table`` (``probes.sanity``) output.
        title: figure title; say the model and the data.
        timing: draw the seconds-per-sample panel (default). Wall-clock times differ from run to
            run, so figures that must be byte-identical across reruns leave it out.

    Returns:
        A figure with horizontal bars per method for pointing game, mass ratio (1 = no better than
        uniform, dashed), deletion drop (black tick: random ``k`` patches), rank correlation after
        full randomisation (dashed: the survival threshold) and seconds per sample (log scale).
        Methods whose map survives randomisation are hatched and labelled so.
    """
    panels = _PANELS if timing else tuple(p for p in _PANELS if p[0] != "seconds")
    _require(table, ("method", "survives_randomisation", *(c for c, _, _ in panels), "random_drop"),
             "plot_comparison")
    n = len(table)
    y = np.arange(n)[::-1]
    flagged = table["survives_randomisation"].to_numpy(dtype=bool)
    labels = [m + (FLAG if f else "") for m, f in zip(table["method"], flagged)]
    kinds = table["kind"] if "kind" in table else [""] * n
    colors = [PALETTE[{"attention": 0, "gradient": 1, "perturbation": 2}.get(k, 3)] for k in kinds]
    fig, axes = plt.subplots(1, len(panels), figsize=(2 * COLUMN_WIDTH + 1.2, 0.3 * n + 1.2), sharey=True)
    for ax, (column, label, reference) in zip(axes, panels):
        values = table[column].to_numpy(dtype=float)
        bars = ax.barh(y, np.nan_to_num(values), color=colors, height=0.7)
        for bar, f in zip(bars, flagged):
            if f:
                bar.set_hatch("////")
                bar.set_edgecolor("white")
        if reference is not None:
            ax.axvline(reference, color="0.3", linestyle="--", linewidth=0.8)
        if column == "deletion_drop":
            ax.plot(table["random_drop"].to_numpy(dtype=float), y, "|", color="black", markersize=8)
        if column == "rho_all" and "threshold" in table.attrs:
            ax.axvline(table.attrs["threshold"], color="0.3", linestyle="--", linewidth=0.8)
        if column == "seconds":
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(y, labels)
    if title:
        fig.suptitle(title)
    return fig


def plot_method_maps(maps, sample: int = 0, *, tile: int | None = None, ncols: int = 5,
                     title: str | None = None) -> Figure:
    """Return every method's map of one sample side by side over the image, each min-max scaled.

    Args:
        maps: a ``MapSet`` (``probes.sanity``), the ``compute_maps`` output; taken duck-typed.
        sample: index into ``maps.samples``.
        tile: the tile to draw (default: the reference tile, the finest covering the image).
        ncols: most panels per row.
        title: figure title; say the model and the data.

    Returns:
        A figure with one panel per method: the positive part of the map over the patch tokens,
        scaled from its minimum (0) to its maximum (1), over the image; the sample's ground-truth
        boxes dashed.
    """
    if not 0 <= sample < len(maps.samples):
        raise InputError(f"sample {sample} out of range: there are {len(maps.samples)} samples")
    prepared, item = maps.prepared[sample], maps.samples[sample]
    tile = prepared.reference_tile() if tile is None else tile
    if tile not in prepared.grids:
        raise InputError(f"tile {tile} does not exist; this input has tiles {sorted(prepared.grids)}")
    x0, y0, x1, y1 = prepared.tile_box(tile)
    methods = maps.methods
    ncols = min(ncols, len(methods))
    nrows = math.ceil(len(methods) / ncols)
    panel = (2 * COLUMN_WIDTH - 0.6) / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2 * COLUMN_WIDTH, nrows * panel * (y1 - y0) / (x1 - x0) + 0.8),
                             squeeze=False)
    norm = Normalize(0, 1)
    image = np.asarray(prepared.image)
    patch = prepared.patches["kind"].to_numpy() == "patch"
    for ax, method in zip(axes.flat, methods):
        scores = positive_part(maps.maps[method.name][sample])
        low, high = scores[patch].min(), scores[patch].max()
        ax.imshow(image, extent=(0, image.shape[1], image.shape[0], 0))
        ax.imshow(prepared.to_grid((scores - low) / (high - low if high > low else 1.0), tile), extent=(x0, x1, y1, y0), cmap=SEQUENTIAL_CMAP, norm=norm,
                  alpha=0.7, interpolation="nearest")
        for bx0, by0, bx1, by1 in item.boxes or ():
            ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, edgecolor="white", linestyle="--",
                                   linewidth=1.0))
        ax.set(xlim=(x0, x1), ylim=(y1, y0), xticks=[], yticks=[], title=method.name)
        ax.grid(False)
    for ax in axes.flat[len(methods):]:
        ax.remove()
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=SEQUENTIAL_CMAP), ax=list(fig.axes), shrink=0.8,
                 label="score, min-max scaled per method\n(positive part)")
    fig.suptitle(title or f"{item.question!r} -> answer token of sample {item.id}")
    return fig
