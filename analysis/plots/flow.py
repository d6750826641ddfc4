"""Figures of the information-flow probes: knockout curves and logit-lens curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from analysis.plots.style import COLUMN_WIDTH, PALETTE

_CI = ("ci", 95)


def _panels(frame: pd.DataFrame, by: str | None, width: float):
    groups = [(None, frame)] if by is None else list(frame.groupby(by, sort=True))
    cols = min(3, len(groups))
    rows = int(np.ceil(len(groups) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 0.8 * width * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, groups, list(axes.flat)


def knockout_curves(frame: pd.DataFrame, model: str, data: str, by: str | None = None,
                    width: float = COLUMN_WIDTH) -> plt.Figure:
    """Line plot of knockout effects: x = window centre layer, y = change in answer probability (%).

    One line per blocked edge set: the mean over samples with a 95% bootstrap confidence band
    (seeded, so the figure is reproducible).

    Args:
        frame: the output of ``analysis.probes.information_flow``.
        model, data: shown in the title (model id; what the samples are).
        by: a column to draw one panel per value of (e.g. ``"question_type"``), or None.
        width: width of one panel in inches.
    """
    blocks = list(dict.fromkeys(frame["block"]))
    palette = dict(zip(blocks, PALETTE))
    fig, groups, axes = _panels(frame, by, width)
    for ax, (name, group) in zip(axes, groups):
        sns.lineplot(group, x="layer", y="change", hue="block", hue_order=blocks, palette=palette,
                     errorbar=_CI, n_boot=1000, seed=0, ax=ax, legend=ax is axes[0])
        ax.axhline(0, color="0.5", lw=0.6, zorder=0)
        n = group["sample"].nunique()
        ax.set_title(f"{name} (n={n})" if name is not None else f"n={n} correctly answered samples")
        ax.set_xlabel("window centre (decoder layer)")
        ax.set_ylabel("change in answer probability (%)")
    if axes[0].get_legend() is not None:
        axes[0].legend(title="blocked edges", fontsize="small", title_fontsize="small")
    window = frame.attrs.get("window")
    fig.suptitle(f"Attention knockout{f' (window {window})' if window else ''}: {model} on {data}")
    return fig


def logit_lens_curves(frame: pd.DataFrame, model: str, data: str, by: str | None = None,
                      width: float = COLUMN_WIDTH) -> plt.Figure:
    """Line plot of the logit lens: x = decoder layer, y = probability (%) of each tracked token.

    Args:
        frame: the output of ``analysis.probes.logit_lens`` (one position per sample is drawn:
            rows with role ``"last"``).
        model, data: shown in the title.
        by: a column to draw one panel per value of, or None.
        width: width of one panel in inches.
    """
    frame = frame[frame["role"] == "last"].assign(percent=lambda f: 100 * f["prob"])
    tracked = list(dict.fromkeys(frame["tracked"]))
    palette = dict(zip(tracked, PALETTE))
    fig, groups, axes = _panels(frame, by, width)
    for ax, (name, group) in zip(axes, groups):
        sns.lineplot(group, x="layer", y="percent", hue="tracked", hue_order=tracked, palette=palette,
                     errorbar=_CI, n_boot=1000, seed=0, ax=ax, legend=ax is axes[0])
        n = group["sample"].nunique()
        ax.set_title(f"{name} (n={n})" if name is not None else f"n={n} samples")
        ax.set_xlabel("decoder layer")
        ax.set_ylabel("probability at last position (%)")
        ax.set_ylim(0, 100)
    if axes[0].get_legend() is not None:
        axes[0].legend(title="token", fontsize="small", title_fontsize="small")
    fig.suptitle(f"Logit lens: {model} on {data}")
    return fig
