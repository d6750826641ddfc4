"""Figures of the representation probes: implicit alignment, concept shift and steering.

Results are taken duck-typed (plots import nothing from the probes): an ``AlignmentResult`` or
``AlignmentAccuracy`` (``probes.alignment``), a ``ShiftResult`` (``probes.shift``), a
``SteeringResult`` (``probes.steering``), or any object with the attributes a figure reads.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from analysis.errors import InputError
from analysis.plots.style import COLUMN_WIDTH, PALETTE

SITE_LABEL = "site (embed, then output of decoder layer)"


def _scores(result) -> pd.DataFrame:
    """The score table of an ``AlignmentResult`` (its ``scores``), or the table itself."""
    scores = result if isinstance(result, pd.DataFrame) else result.scores
    if scores.empty:
        raise InputError("no alignment scores to plot")
    return scores


def _sequence(rows: pd.DataFrame) -> pd.Series:
    """Each row's x in the hidden-state sequence: -1 for ``embed``, ``i`` for the output of decoder layer ``i``."""
    embed = (rows["site"] == "embed").to_numpy()
    return pd.Series(np.where(embed, -1, rows["layer"].to_numpy(dtype=float, na_value=np.nan)), index=rows.index,
                     name="x").astype(int)


def _band(ax, rows: pd.DataFrame, label: str, color: str, linestyle: str = "-") -> None:
    """Draw the mean over samples per site with a +/- 1 std band."""
    stats_ = rows.groupby(_sequence(rows))["value"].agg(["mean", "std"]).fillna({"std": 0.0})
    ax.plot(stats_.index, stats_["mean"], label=label, color=color, linestyle=linestyle, marker="o")
    ax.fill_between(stats_.index, stats_["mean"] - stats_["std"], stats_["mean"] + stats_["std"], color=color,
                    alpha=0.2, linewidth=0)


def _site_axis(ax, scores: pd.DataFrame, most: int = 9) -> None:
    """Label the x axis with the hidden-state sequence: ``embed``, then decoder layers ``0 .. L-1``.

    At most ``most`` evenly spaced ticks, starting at ``embed``.
    """
    xs = np.unique(_sequence(scores).to_numpy())
    step = max(1, math.ceil(len(xs) / most))
    ticks = xs[::step]
    ax.set_xticks(ticks, ["embed" if x == -1 else str(x) for x in ticks])
    ax.set_xlabel(SITE_LABEL)


def plot_alignment_curves(result, *, variant: str = "all pairs",
                          control: bool = True, title: str | None = None) -> Figure:
    """Return cosine similarity per site: P-vs-T (``variant``), P-vs-P and T-vs-T, +/- 1 std over samples.

    The x axis is the hidden-state sequence: ``embed`` (the LLM input), then the output
    (``resid_post``) of decoder layers ``0 .. L-1``.

    Args:
        result: an ``AlignmentResult`` (``implicit_alignment``'s result) or its ``scores`` table.
        variant: the P-T alignment variant drawn (``"matched"``, ``"all pairs"``, ``"token max"`` ...).
        control: also draw the shuffled-pair P-T control (dashed).
        title: figure title (say the model and the data).
    """
    scores = _scores(result)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.8), layout="constrained")
    lines = [(("alignment", "P-T", variant), f"image-text ({variant})", PALETTE[0], "-"),
             (("cone", "P-P", "all pairs"), "image-image (cone)", PALETTE[1], "-"),
             (("cone", "T-T", "all pairs"), "text-text (cone)", PALETTE[2], "-")]
    if control and variant != "shuffled":
        lines.append((("alignment", "P-T", "shuffled"), "image-text (shuffled pairs)", PALETTE[0], "--"))
    for (measure, pair, var), label, color, style_ in lines:
        rows = scores[(scores.measure == measure) & (scores.pair == pair) & (scores.variant == var)]
        if rows.empty:
            raise InputError(f"no {measure} {pair} {var!r} scores in this result")
        _band(ax, rows, label, color, style_)
    _site_axis(ax, scores)
    ax.set_ylabel("cosine similarity")
    fig.legend(loc="outside lower center", ncols=2)
    if title:
        ax.set_title(title)
    return fig


def plot_token_norms(result, *, log: bool = True, title: str | None = None) -> Figure:
    """Return the mean token L2 norm per site for image and text tokens, +/- 1 std over samples.

    ``result``: as in ``plot_alignment_curves``; the x axis is the same hidden-state sequence.
    """
    scores = _scores(result)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.4))
    for pair, label, color in (("P", "image tokens", PALETTE[0]), ("T", "text tokens", PALETTE[2])):
        rows = scores[(scores.measure == "norm") & (scores.pair == pair)]
        if rows.empty:
            raise InputError("no token norms in this result")
        _band(ax, rows, label, color)
    if log:
        ax.set_yscale("log")
    _site_axis(ax, scores)
    ax.set_ylabel("token L2 norm")
    ax.legend()
    if title:
        ax.set_title(title)
    return fig


MAX_LABELLED = 10  # more checkpoints than this: a colour bar for their order, labels for a few


def plot_score_vs_accuracy(result, *, title: str | None = None) -> Figure:
    """Return a scatter of the IMA score against accuracy per checkpoint, with both correlations.

    ``result``: an ``AlignmentAccuracy`` (``alignment_vs_accuracy``'s result); its checkpoints are
    joined in their order (a training trajectory) and, beyond ``MAX_LABELLED`` of them, coloured by
    position with only the first, the last and the extremes labelled. Chance is drawn when the
    table gives one.
    """
    table = result.table.reset_index(drop=True)
    n = len(table)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.8))
    # checkpoints in the order given (a training trajectory): a grey path, points coloured by position
    ax.plot(table["score"], table["accuracy"], color="0.8", linewidth=0.6, zorder=2, label="checkpoints in order")
    points = ax.scatter(table["score"], table["accuracy"], c=np.arange(n), cmap="viridis", s=14, zorder=3,
                        label="checkpoint")
    if n > MAX_LABELLED:
        bar = fig.colorbar(points, ax=ax, pad=0.02, ticks=[0, n - 1])
        bar.ax.set_yticklabels([str(table["checkpoint"].iloc[0]), str(table["checkpoint"].iloc[-1])], fontsize=6)
        bar.set_label("position in the list (first to last)", fontsize=7)
    # every label when few; else the first, the last and the extremes of each axis
    labelled = range(n) if n <= MAX_LABELLED else sorted({0, n - 1, int(table["score"].idxmax()),
                                                          int(table["score"].idxmin()), int(table["accuracy"].idxmin())})
    placed: list[tuple[float, float]] = []
    span = max(float(np.ptp(table["score"])), 1e-9), max(float(np.ptp(table["accuracy"])), 1e-9)
    for i in labelled:
        row = table.iloc[i]
        # labels of points that (nearly) coincide are stacked downwards instead of drawn over each other
        stack = sum(abs(row.score - x) < 0.05 * span[0] and abs(row.accuracy - y) < 0.05 * span[1] for x, y in placed)
        placed.append((row.score, row.accuracy))
        ax.annotate(str(row.checkpoint), (row.score, row.accuracy), textcoords="offset points",
                    xytext=(3, 3 - 7 * stack), fontsize=6)
    if n >= 2 and np.ptp(table["score"]) > 0:
        slope, intercept = np.polyfit(table["score"], table["accuracy"], 1)
        xs = np.linspace(table["score"].min(), table["score"].max(), 50)
        ax.plot(xs, slope * xs + intercept, color=PALETTE[1], linestyle="--", linewidth=0.8, label="least squares")
    if "chance" in table and table["chance"].nunique() == 1:
        ax.axhline(table["chance"].iloc[0], color="0.4", linestyle=":", linewidth=0.8, label="chance")
    ax.legend(fontsize=6, loc="best")
    corr = result.correlations.set_index("method")
    lines = [f"{name} {corr.loc[method, 'r']:+.2f} [{corr.loc[method, 'ci_low']:+.2f}, "
             f"{corr.loc[method, 'ci_high']:+.2f}], p = {corr.loc[method, 'p_value']:.2g}"
             for method, name in (("spearman", "Spearman rho"), ("pearson", "Pearson r")) if method in corr.index]
    confidence = int(round(100 * corr["confidence"].iloc[0]))
    ax.set_xlabel(f"IMA score ({result.variant}, mean over layers)")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title((title + "\n" if title else "") + "\n".join(lines) + f"\n({confidence}% bootstrap intervals, "
                 f"{len(table)} checkpoints)", fontsize=7)
    return fig


def plot_concept_grid(result, *, model: str = "base", concepts: Sequence[int] | None = None,
                      n_images: int = 4, n_words: int = 5, final_norm: bool = True,
                      title: str | None = None) -> Figure:
    """Return one row per concept: its top words (logit lens of the concept vector) and top images.

    Args:
        result: a grounded ``representation_shift`` result (a ``ShiftResult``).
        model: ``"base"``, ``"shifted"`` or ``"finetuned"`` concepts.
        concepts: which concepts (default: all, largest first by assigned samples for base /
            shifted, by index for fine-tuned).
        n_images, n_words: how many of each per concept.
        final_norm: words read with or without the final norm.
    """
    if result.words.empty or result.images.empty or not result.samples:
        raise InputError("the concept grid needs a grounded result from representation_shift (words and images)")
    if model not in ("base", "shifted", "finetuned"):
        raise InputError("model must be 'base', 'shifted' or 'finetuned'")
    if concepts is None:
        concepts = (result.concepts.sort_values("n_samples", ascending=False)["concept"].tolist()
                    if model != "finetuned" else list(range(len(result.finetuned.dictionary))))
    by_id = {s.id: s for s in result.samples}
    words = result.words[(result.words.model == model) & (result.words.final_norm == final_norm)]
    tops = result.images[result.images.model == model]
    n_images = min(n_images, int(tops.groupby("concept").size().min()))
    size = 2 * COLUMN_WIDTH / (n_images + 2)
    fig, axes = plt.subplots(len(concepts), n_images + 1, figsize=(2 * COLUMN_WIDTH, size * len(concepts) + 0.4),
                             squeeze=False, gridspec_kw={"width_ratios": [2] + [1] * n_images})
    for row, k in zip(axes, concepts):
        text = words[words.concept == k].sort_values("rank")["token"].head(n_words).tolist()
        row[0].axis("off")
        row[0].text(0.0, 0.5, f"concept {k}\n" + ", ".join(text), va="center", ha="left", fontsize=7, wrap=True)
        chosen = tops[tops.concept == k].sort_values("rank").head(n_images)
        for ax, sample in zip(row[1:], chosen["sample"]):
            ax.imshow(np.asarray(by_id[sample].image))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_xlabel(f"{by_id[sample].question_type or ''}: {by_id[sample].answer or ''}".strip(": "), fontsize=6)
    fig.suptitle(title or f"{model} concepts at layer {result.layer}: top words and most activating images")
    return fig


def plot_recovery(result, *, title: str | None = None) -> Figure:
    """Return bars per base concept: cosine to its matched fine-tuned concept, original vs shifted.

    ``result``: a ``ShiftResult`` (``representation_shift``'s result).
    """
    table = result.concepts.dropna(subset=["recovery"]).sort_values("recovery", ascending=False)
    if table.empty:
        raise InputError("no concept has samples; nothing to plot")
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(COLUMN_WIDTH, 0.22 * len(table) + 1), 2.4))
    ax.bar(x - 0.2, table["cos_base"], width=0.4, label="original concept", color=PALETTE[0])
    ax.bar(x + 0.2, table["cos_shifted"], width=0.4, label="shifted concept", color=PALETTE[1])
    ax.set_xticks(x, [str(k) for k in table["concept"]])
    ax.set_xlabel("base concept (sorted by recovery)")
    ax.set_ylabel("cosine to matched\nfine-tuned concept")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylim(min(0, table["cos_base"].min() - 0.05), 1.25)
    ax.legend(loc="upper left", ncols=2, fontsize="small")
    ax.set_title(title or f"mean recovery {table['recovery'].mean():+.3f} "
                          f"({(table['recovery'] > 0).mean():.0%} of concepts improve)")
    return fig


def plot_consistency_vs_recovery(result, *, title: str | None = None) -> Figure:
    """Return a scatter of each concept's shift consistency against its recovery, with Spearman's rho.

    ``result``: a ``ShiftResult`` (``representation_shift``'s result).
    """
    table = result.concepts.dropna(subset=["recovery", "consistency"])
    if len(table) < 3:
        raise InputError("need at least 3 concepts with 2 or more samples each")
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
    points = ax.scatter(table["consistency"], table["recovery"], c=table["n_samples"], cmap="viridis", zorder=3)
    fig.colorbar(points, ax=ax, label="samples in concept")
    rho, p = stats.spearmanr(table["consistency"], table["recovery"])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("shift consistency (mean pairwise cosine of deltas)")
    ax.set_ylabel("recovery")
    stat = f"Spearman rho = {rho:+.2f} (p = {p:.2g}, {len(table)} concepts)"
    ax.set_title(f"{title}\n{stat}" if title else stat)
    return fig


def plot_steering_outcomes(result, *, title: str | None = None) -> Figure:
    """Return grouped bars per alpha: targeted answers flipped, answers changed, untargeted accuracy.

    ``result``: a ``SteeringResult`` (``steering_effect``'s result). The unsteered untargeted
    accuracy is drawn as a dashed line.
    """
    summary = result.summary
    if summary.empty:
        raise InputError("no steering outcomes to plot")
    bars = [("flip_rate", f"targeted '{result.source}' -> '{result.target}'", PALETTE[1]),
            ("changed", "answers changed (all)", PALETTE[4]),
            ("accuracy_untargeted", "accuracy, untargeted types", PALETTE[2])]
    x = np.arange(len(summary))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(COLUMN_WIDTH, 0.5 * len(summary) + 1.5), 2.6))
    for i, (column, label, color) in enumerate(bars):
        ax.bar(x + (i - 1) * width, summary[column], width=width, label=label, color=color)
    baseline = summary["accuracy_untargeted_baseline"].iloc[0]
    if not math.isnan(baseline):
        ax.axhline(baseline, color=PALETTE[2], linestyle="--", linewidth=0.8, label="untargeted accuracy, unsteered")
    ax.set_xticks(x, [f"{a:g}" for a in summary["alpha"]])
    ax.set_xlabel("alpha (steering strength)")
    ax.set_ylabel("share of answers")
    ax.set_ylim(0, 1.4)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(fontsize=6, loc="upper left", ncols=2)
    layers = sorted(summary["layer"].unique())
    ax.set_title(title or f"layer {', '.join(map(str, layers))}, {summary['positions'].iloc[0]} positions, "
                          f"{int(summary['n_targeted'].iloc[0])} targeted answers")
    return fig
