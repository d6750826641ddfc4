"""Figures of the toy model zoo: accuracy per checkpoint and question type, and example scenes."""

from __future__ import annotations

import textwrap
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.plots.style import COLUMN_WIDTH, PALETTE, SEQUENTIAL_CMAP


def accuracy_table(tables: dict[str, list[dict]]) -> pd.DataFrame:
    """Return accuracy (%) as a checkpoints x question types (+ "overall") frame.

    Args:
        tables: ``{checkpoint: records}`` with ``question_type`` and ``accuracy`` per record, as in
            the zoo's ``zoo.json`` (``analysis.zoo.cards.write_cards``).
    """
    rows = {name: {r["question_type"]: 100 * r["accuracy"] for r in records} for name, records in tables.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_accuracy_heatmap(table: pd.DataFrame, *, title: str) -> Figure:
    """Return an annotated heatmap of accuracy (%): checkpoints as rows, question types as columns.

    Args:
        table: ``accuracy_table`` output (values in percent).
        title: says which checkpoints and which held-out data.
    """
    fig, ax = plt.subplots(figsize=(2 * COLUMN_WIDTH, 0.9 + 0.3 * len(table)))
    image = ax.imshow(table.to_numpy(), cmap=SEQUENTIAL_CMAP, vmin=0, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(table.to_numpy()):
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize="x-small",
                color="white" if value < 60 else "black")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=30, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_xlabel("question type")
    ax.set_ylabel("checkpoint")
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(title)
    return fig


def plot_trajectory(table: pd.DataFrame, steps: Sequence[float], chance: dict[str, float], *, title: str,
                    stage1_steps: int | None = None) -> Figure:
    """Return accuracy (%) per question type against the global training step.

    Args:
        table: ``accuracy_table`` rows of the trajectory's checkpoints, in training order.
        steps: the global step of each row (stage 1 + stage 2).
        chance: chance accuracy (%) per question type; drawn as a dotted line for "overall".
        title: says which model and which held-out data.
        stage1_steps: where stage 1 (projector only) ends; marked with a vertical line.
    """
    fig, ax = plt.subplots(figsize=(2 * COLUMN_WIDTH, 2.8))
    types = [c for c in table.columns if c != "overall"]
    for color, name in zip(PALETTE, types):
        ax.plot(steps, table[name], marker=".", color=color, linewidth=1, label=name)
    ax.plot(steps, table["overall"], marker="o", color="black", linewidth=2, label="overall")
    ax.axhline(chance["overall"], color="grey", linestyle=":", label="chance (overall)")
    if stage1_steps is not None:
        ax.axvline(stage1_steps, color="grey", linestyle="--", linewidth=1, label="end of stage 1")
    ax.set_xlabel("global training step (stage 1 + stage 2)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 102)
    ax.legend(fontsize="x-small", ncols=2, loc="lower right")
    ax.set_title(title)
    return fig


def plot_example_scenes(samples: Sequence, predictions: Sequence[str] | None = None, *, ncols: int = 4,
                        title: str) -> Figure:
    """Return the scenes of ``samples`` with their question, gold answer and (optionally) prediction.

    Args:
        samples: ``analysis.data.shapes`` samples (``image``, ``question``, ``answer``,
            ``question_type``, ``object_boxes``); the question's objects are outlined.
        predictions: the model's answer per sample (first word), or None.
        ncols: panels per row.
        title: says which data (and model, with predictions).
    """
    nrows = -(-len(samples) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2 * COLUMN_WIDTH, 2.1 * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(samples):
            continue
        s = samples[k]
        ax.imshow(s.image)
        for x0, y0, x1, y1 in s.object_boxes:
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="black",
                                       linewidth=1, linestyle="--"))
        answer = f"gold: {s.answer}" + ("" if predictions is None else f" · model: {predictions[k]}")
        ax.set_title(f"{s.question_type}\n" + textwrap.fill(s.question, 28) + f"\n{answer}", fontsize="x-small")
    fig.suptitle(title)
    return fig


def plot_accuracy_bars(tables: dict[str, pd.DataFrame], *, title: str) -> Figure:
    """Return grouped bars of accuracy (%) per question type, one bar per table, with chance marked.

    Args:
        tables: ``{label: analysis.zoo.evaluate output}`` (columns ``question_type``, ``accuracy``,
            ``chance``; the same question types in each).
        title: says which model and which data.
    """
    fig, ax = plt.subplots(figsize=(2 * COLUMN_WIDTH, 2.6))
    first = next(iter(tables.values()))
    x = np.arange(len(first))
    width = 0.8 / len(tables)
    for k, (color, (label, table)) in enumerate(zip(PALETTE, tables.items())):
        ax.bar(x + (k - (len(tables) - 1) / 2) * width, 100 * table["accuracy"], width, color=color, label=label)
    ax.scatter(x, 100 * first["chance"], marker="_", s=400, color="black", zorder=3, label="chance")
    ax.set_xticks(x, first["question_type"], rotation=30, ha="right")
    ax.set_xlabel("question type")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    return fig
