"""Figures of the visual-token redundancy probes: accuracy against the image tokens kept.

Every function takes summary tables (one row per group: ``accuracy``, ``accuracy_low``,
``accuracy_high`` in %, 95% intervals; ``flops_saved``, ``chance``, ``accuracy_base`` in %), as
``RedundancyResult.summary()`` and ``analysis.probes.redundancy.summarise`` return them, so the
figures draw exactly the numbers the notebook prints.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, NullLocator

from analysis.plots.style import COLUMN_WIDTH, PALETTE

# One fixed colour per ranking in every figure; the oracle (the ground-truth ceiling) in black.
RANKING_COLOURS = {"last_attention": PALETTE[0], "cls_attention": PALETTE[1], "attribution": PALETTE[2],
                   "random": PALETTE[4], "oracle": "black", "pyramid": PALETTE[3]}
RANKING_LABELS = {"last_attention": "last-token attention (FastV)", "cls_attention": "[CLS] attention (FasterVLM)",
                  "attribution": "attribution (IG)", "random": "random", "oracle": "oracle (ground truth)",
                  "pyramid": "PyramidDrop"}


def _band(ax, x, table: pd.DataFrame, colour, label, **line):
    ax.plot(x, table["accuracy"], color=colour, label=label, marker="o", ms=3, **line)
    ax.fill_between(x, table["accuracy_low"], table["accuracy_high"], color=colour, alpha=0.15, lw=0)


def _errors(table: pd.DataFrame, column: str = "accuracy") -> np.ndarray:
    """``(2, n)`` distances from the value to its interval ends (never negative from rounding)."""
    value = table[column].to_numpy(float)
    return np.clip([value - table[f"{column}_low"].to_numpy(float), table[f"{column}_high"].to_numpy(float) - value],
                   0, None)


def _floor(table: pd.DataFrame) -> float:
    """A y-axis floor (%) that shows every interval and the chance line, in steps of 10."""
    lowest = min(table["accuracy_low"].min(), table["chance"].min() if "chance" in table else 100)
    return float(max(0, 10 * np.floor((lowest - 3) / 10)))


def _reference_lines(ax, table: pd.DataFrame) -> None:
    if "chance" in table and table["chance"].notna().any():
        ax.axhline(table["chance"].mean(), color="0.4", ls=":", lw=0.8, label=f"chance ({table['chance'].mean():.0f}%)")
    if "accuracy_base" in table and table["accuracy_base"].notna().any():
        ax.axhline(table["accuracy_base"].mean(), color="0.4", ls="--", lw=0.8,
                   label=f"all tokens ({table['accuracy_base'].mean():.1f}%)")


def plot_accuracy_vs_kept(summary: pd.DataFrame, model: str, data: str, width: float = COLUMN_WIDTH) -> plt.Figure:
    """Accuracy (%) against the share of image tokens kept (%), one panel per drop layer.

    One line per ranking (mean with its 95% Wilson band); the oracle in black is the ground-truth
    ceiling; chance and the unmodified model's accuracy as reference lines.

    Args:
        summary: ``RedundancyResult.summary()`` (columns ``ranking, drop_layer, keep`` and the
            accuracy columns).
        model, data: shown in the title (model id; what the samples are).
        width: width of one panel in inches.
    """
    layers = sorted(summary["drop_layer"].unique())
    rankings = [r for r in RANKING_COLOURS if r in set(summary["ranking"])]
    fig, axes = plt.subplots(1, len(layers), figsize=(width * 0.75 * len(layers) + 0.4, 0.85 * width),
                             sharey=True, squeeze=False)
    ticks = sorted(100 * summary["keep"].unique())
    for ax, layer in zip(axes[0], layers):
        for ranking in rankings:
            rows = summary[(summary["drop_layer"] == layer) & (summary["ranking"] == ranking)].sort_values("keep")
            if len(rows):
                _band(ax, 100 * rows["keep"], rows, RANKING_COLOURS[ranking], RANKING_LABELS[ranking],
                      lw=1.6 if ranking == "oracle" else 1.1)
        _reference_lines(ax, summary)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        n = int(summary.loc[summary["drop_layer"] == layer, "n"].max())
        ax.set(title=f"dropped from layer {layer} (n={n})", xlabel="image tokens kept (%)")
    axes[0, 0].set_ylabel("accuracy (%)")
    axes[0, 0].set_ylim(_floor(summary), 101)
    entries = {}
    for ax in axes[0]:  # last_attention has no curve in the layer-0 panel
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    labels = sorted(entries, key=lambda l: [*RANKING_LABELS.values(), l].index(l))
    handles = [entries[l] for l in labels]
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(labels)),
               fontsize="small", frameon=False)
    fig.suptitle(f"Visual-token pruning, 95% CIs: {model} on {data}")
    return fig


def plot_accuracy_vs_flops(fastv: pd.DataFrame, pyramid: pd.DataFrame, model: str, data: str,
                           width: float = COLUMN_WIDTH) -> plt.Figure:
    """Accuracy (%) against the share of prefill FLOPs saved (%): one-shot drops vs PyramidDrop.

    Args:
        fastv: summary of one-shot drops ranked by last-token attention (columns ``drop_layer``,
            ``keep``, ``flops_saved`` and the accuracy columns): one line per drop layer.
        pyramid: summary of ``pyramid_drop`` per ``ratio`` (one line, labelled with the ratios).
        model, data: shown in the title.
        width: width of the figure in inches.
    """
    fig, ax = plt.subplots(figsize=(1.6 * width, 0.95 * width))
    shades = plt.get_cmap("Blues")(np.linspace(0.45, 0.95, fastv["drop_layer"].nunique()))
    for shade, (layer, rows) in zip(shades, fastv.groupby("drop_layer")):
        rows = rows.sort_values("flops_saved")
        ax.errorbar(rows["flops_saved"], rows["accuracy"], yerr=_errors(rows), color=shade, marker="o", ms=3, lw=1, capsize=2,
                    label=f"FastV: drop at layer {layer}")
    rows = pyramid.sort_values("flops_saved")
    ax.errorbar(rows["flops_saved"], rows["accuracy"], yerr=_errors(rows), color=RANKING_COLOURS["pyramid"], marker="s", ms=4,
                lw=1.6, capsize=2, label="PyramidDrop (keep " + ", ".join(f"{r:g}" for r in rows["ratio"]) + " per stage)")
    _reference_lines(ax, pd.concat([fastv, pyramid]))
    ax.set(xlabel="language-model prefill FLOPs saved (%, analytic)", ylabel="accuracy (%)",
           ylim=(_floor(pd.concat([fastv, pyramid])), 101))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"Accuracy vs compute, 95% CIs: {model} on {data}")
    return fig


def plot_region_drop(summary: pd.DataFrame, model: str, data: str, width: float = COLUMN_WIDTH) -> plt.Figure:
    """Accuracy (%) when the question's own image tokens, or as many others, are gone from layer K on.

    Args:
        summary: ``RegionDropResult.summary()`` (columns ``drop_layer, dropped`` and the accuracy
            columns).
        model, data: shown in the title.
        width: width of the figure in inches.
    """
    fig, ax = plt.subplots(figsize=(1.5 * width, 0.9 * width))
    labels = {"related": "the question's objects' tokens dropped", "other": "as many other tokens dropped"}
    for colour, name in zip((PALETTE[1], PALETTE[0]), ("related", "other")):
        rows = summary[summary["dropped"] == name].sort_values("drop_layer")
        _band(ax, rows["drop_layer"], rows, colour, labels[name])
    _reference_lines(ax, summary)
    ax.set_xticks(sorted(summary["drop_layer"].unique()))
    ax.set(xlabel="first decoder layer without the dropped tokens", ylabel="accuracy (%)", ylim=(_floor(summary), 101))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"Ground truth, 95% CIs: {model} on {data}")
    return fig


def plot_permutation(summary: pd.DataFrame, model: str, data: str, width: float = COLUMN_WIDTH) -> plt.Figure:
    """Accuracy (%) per question type with the image tokens in order and shuffled, with 95% CIs.

    Args:
        summary: ``summarise(permute_image_tokens(...), ["question_type"])`` plus an ``"all"``
            row (columns ``question_type``, ``accuracy_base``, the accuracy columns, ``n``).
        model, data: shown in the title.
        width: width of the figure in inches.
    """
    order = list(summary["question_type"])
    x = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(2 * width, 0.8 * width))
    bars = (("accuracy_base", "image tokens in order", PALETTE[0]),
            ("accuracy", "image tokens shuffled", PALETTE[1]))
    for k, (column, label, colour) in enumerate(bars):
        ax.bar(x + (k - 0.5) * 0.38, summary[column], 0.38, color=colour, label=label,
               yerr=_errors(summary, column), capsize=2, error_kw={"lw": 0.8})
    _reference_lines(ax, summary.drop(columns=["accuracy_base"]))
    ax.set_xticks(x, [f"{t} (n={n})" for t, n in zip(order, summary["n_samples"])], rotation=30, ha="right")
    ax.set(xlabel="question type", ylabel="accuracy (%)", ylim=(0, 105))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"Shuffled image tokens, 95% CIs: {model} on {data}")
    return fig
