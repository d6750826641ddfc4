"""Figures of the information-flow probes: knockout curves and logit-lens curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from analysis.plots.style import COLUMN_WIDTH, PALETTE

_CI = ("ci", 95)


def _line_panels(frame: pd.DataFrame, y: str, hue: str, by: str | None, width: float, *, xlabel: str,
                 ylabel: str, legend: str, single: str) -> tuple[plt.Figure, list]:
    """One panel per value of ``by``: mean of ``y`` over samples per layer, one line per ``hue``,
    with a seeded 95% bootstrap band; returns the figure and its visible axes."""
    order = list(dict.fromkeys(frame[hue]))
    palette = dict(zip(order, PALETTE))
    groups = [(None, frame)] if by is None else list(frame.groupby(by, sort=True))
    cols = min(3, len(groups))
    rows = int(np.ceil(len(groups) / cols))
    fig, grid = plt.subplots(rows, cols, figsize=(width * cols, 0.8 * width * rows), sharey=True, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    for ax, (name, group) in zip(axes, groups):
        sns.lineplot(group, x="layer", y=y, hue=hue, hue_order=order, palette=palette, errorbar=_CI, n_boot=1000,
                     seed=0, ax=ax, legend=ax is axes[0])
        n = group["sample"].nunique()
        ax.set(title=f"{name} (n={n})" if name is not None else f"n={n} {single}", xlabel=xlabel, ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if axes[0].get_legend() is not None:
        axes[0].legend(title=legend, fontsize="small", title_fontsize="small")
    return fig, axes[: len(groups)]


def knockout_curves(result, model: str, data: str, by: str | None = None,
                    width: float = COLUMN_WIDTH) -> plt.Figure:
    """Line plot of knockout effects: x = window centre layer, y = change in answer probability (%).

    One line per blocked edge set: the mean over samples with a 95% bootstrap confidence band
    (seeded, so the figure is reproducible).

    Args:
        result: the ``KnockoutResult`` of ``probes.information_flow`` (its ``frame`` and
            ``window``; to draw a subset, ``dataclasses.replace(result, frame=rows)``).
        model, data: shown in the title (model id; what the samples are).
        by: a column to draw one panel per value of (e.g. ``"question_type"``), or None.
        width: width of one panel in inches.
    """
    fig, axes = _line_panels(result.frame, "change", "block", by, width, xlabel="window centre (decoder layer)",
                             ylabel="change in answer probability (%)", legend="blocked edges",
                             single="correctly answered samples")
    for ax in axes:
        ax.axhline(0, color="0.5", lw=0.6, zorder=0)
    fig.suptitle(f"Attention knockout (window {result.window}): {model} on {data}")
    return fig


def logit_lens_curves(frame: pd.DataFrame, model: str, data: str, by: str | None = None,
                      width: float = COLUMN_WIDTH) -> plt.Figure:
    """Line plot of the logit lens: x = decoder layer, y = probability (%) of each tracked token.

    Args:
        frame: the output of ``probes.logit_lens`` (one position per sample is drawn:
            rows with role ``"last"``; the ``prediction`` curve is left out when answers are known).
        model, data: shown in the title.
        by: a column to draw one panel per value of, or None.
        width: width of one panel in inches.
    """
    frame = frame[frame["role"] == "last"].assign(percent=lambda f: 100 * f["prob"])
    if "answer" in set(frame["tracked"]):  # the gold answer's curve; "prediction" would repeat it
        frame = frame[frame["tracked"] != "prediction"]
    fig, axes = _line_panels(frame, "percent", "tracked", by, width, xlabel="decoder layer",
                             ylabel="probability at last position (%)", legend="token", single="samples")
    for ax in axes:
        ax.set_ylim(0, 100)
    fig.suptitle(f"Logit lens: {model} on {data}")
    return fig


def plot_region_knockout(frame: pd.DataFrame, chance: float, model: str, data: str) -> plt.Figure:
    """Grouped bars of accuracy (%) per question type: no block, related patches blocked, as many
    other patches blocked; chance drawn as a dotted line.

    Args:
        frame: the ``frame`` of ``probes.region_knockout``'s result.
        chance: chance accuracy (%) of the same samples.
        model, data: shown in the title.
    """
    columns = {"correct_base": "no block", "correct_related_blocked": "related patches blocked",
               "correct_other_blocked": "as many other patches blocked"}
    accuracy = 100 * frame.groupby("question_type")[list(columns)].mean()
    accuracy.loc["all"] = 100 * frame[list(columns)].mean()
    fig, ax = plt.subplots(figsize=(2 * COLUMN_WIDTH, 2.6))
    x = np.arange(len(accuracy))
    for k, (column, label) in enumerate(columns.items()):
        ax.bar(x + (k - 1) * 0.27, accuracy[column], 0.27, color=PALETTE[k], label=label)
    ax.axhline(chance, color="black", linestyle=":", label=f"chance ({chance:.0f}%)")
    ax.set_xticks(x, accuracy.index, rotation=30, ha="right")
    ax.set_xlabel("question type")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"Region knockout: {model} on {data}")
    return fig
