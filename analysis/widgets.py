"""ipywidgets explorers over precomputed probe results (no model call when a control moves).

Three explorers, each a ``VBox`` of controls above the figure (a PNG in an ``Image`` widget) and
an output area that shows any error raised while drawing:

* :func:`attention_explorer`: layer, head, query token, map kind and overlay vs grid view over
  an ``AttentionMaps``;
* :func:`knockout_explorer`: edge sets and question type over a ``KnockoutResult``;
* :func:`logit_lens_explorer`: position, final norm on/off (and question type) over
  ``logit_lens`` frames.

Every drawing is cached under the values of the controls that shape it, so a slider moved back
to a setting it has shown redraws at once. The notebooks show the explorers when
:func:`show_explorers` says so: their ``interactive`` parameter defaults to None, which means on
in a live Jupyter session (JupyterLab, Notebook) and off in headless runs (papermill,
nbconvert, ``./run_all.sh``); True or False forces it.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from analysis.plots.attention import default_tiles
from analysis.plots.flow import knockout_curves
from analysis.plots.overlay import draw_token_scores
from analysis.plots.style import PALETTE
from analysis.probes.attention import AttentionMaps

DPI = 130
"""Resolution of the explorers' figures (screen, not print: smaller PNGs redraw faster)."""
_COMPACT = {"button_width": "auto", "description_width": "initial"}


def show_explorers(interactive: bool | None = None) -> bool:
    """Return whether a notebook should display its widget explorers.

    Args:
        interactive: True or False forces the answer. None (the notebooks' default) means auto:
            True only when this code runs in a Jupyter kernel on behalf of a front-end a person
            is using. The test is the ``allow_stdin`` flag of the execute request being run:
            JupyterLab and Jupyter Notebook set it, as does any front-end where a person can
            answer ``input()``; papermill, nbconvert and nbclient (hence ``./run_all.sh``) never
            do. Plain Python and the IPython terminal have no kernel and no widget front-end:
            False. Voila, which renders widgets without a person at a prompt, needs
            ``interactive = True``.
    """
    if interactive is not None:
        return bool(interactive)
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return False
    try:
        request = kernel.get_parent("shell")
    except (AttributeError, TypeError):  # ipykernel < 6
        request = getattr(kernel, "_parent_header", {})
    return bool((request or {}).get("content", {}).get("allow_stdin", False))


class Explorer(widgets.VBox):
    """A box of controls above a cached figure; the base of every explorer here.

    Attributes:
        controls: the control widgets by name (their ``value`` is what ``draw`` receives).
        figure: the ``Image`` widget showing the current drawing (PNG bytes in ``figure.value``).
        messages: an ``Output`` widget; an error raised while drawing shows up here (in a
            kernel) instead of disappearing into the kernel log.
        draws: how many figures were actually drawn (cache misses), for tests and timing.
    """

    def __init__(self, controls: dict[str, widgets.Widget], rows: list[list[str]],
                 draw: Callable[..., Figure], key: Callable[..., tuple] | None = None, *, name: str):
        """Lay out ``controls`` in ``rows`` (lists of control names) above the figure.

        Args:
            controls: control widgets by keyword of ``draw``.
            rows: the layout, one list of control names per row.
            draw: returns a matplotlib Figure for the controls' values (called with them as
                keyword arguments); the explorer renders it to PNG and closes it.
            key: the cache key for the controls' values (default: all values); make it ignore
                controls that do not change the drawing.
            name: a CSS class for the box (``vlm-<name>-explorer``), so front-ends and tests
                can find it.
        """
        self.controls = controls
        # shown at its own size (not stretched to the notebook's width, which would blur it)
        self.figure = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", align_self="flex-start"))
        self.messages = widgets.Output()
        self.draws = 0
        self._draw, self._key = draw, key or (lambda **values: tuple(values.values()))
        self._cache: dict[tuple, bytes] = {}
        boxes = [widgets.HBox([controls[n] for n in row]) for row in rows]
        super().__init__(boxes + [self.figure, self.messages])
        self.add_class(f"vlm-{name}-explorer")
        for control in controls.values():
            control.observe(self._refresh, names="value")
        self._refresh()

    def values(self) -> dict[str, Any]:
        """Return the controls' current values by name."""
        return {name: control.value for name, control in self.controls.items()}

    def _refresh(self, change=None) -> None:
        with self.messages:
            self.messages.outputs = ()  # (clear_output() would print escape codes outside a kernel)
            values = self.values()
            key = self._key(**values)
            if key not in self._cache:
                fig = self._draw(**values)
                try:
                    buffer = io.BytesIO()
                    fig.savefig(buffer, format="png", dpi=DPI)
                finally:
                    plt.close(fig)
                self._cache[key] = buffer.getvalue()
                self.draws += 1
            self.figure.value = self._cache[key]


def attention_explorer(maps: AttentionMaps, boxes=()) -> Explorer:
    """Return an explorer of one input's attention maps: layer slider, head, query token, map kind
    and view.

    Args:
        maps: the result of ``analysis.probes.attention_maps`` (query several positions, e.g.
            ``query="question+last"``, to offer them; ``rollout=True`` to offer the rollout).
        boxes: ``(x0, y0, x1, y1)`` image regions to outline (e.g. the question's objects).

    Controls: ``layer``; ``head`` (a head or the mean over heads; rollout has no head axis);
    ``query`` (the query position; position-corrected maps average over queries); ``kind``
    (``attention``, ``corrected``, ``rollout``); ``view`` (``overlay``: the scores over the
    image; ``grid``: the image tokens' patch grid alone, opaque).
    """
    kinds = ["attention", "corrected"] + (["rollout"] if maps.rollout is not None else [])
    controls = {
        "layer": widgets.SelectionSlider(options=[int(layer) for layer in maps.layers], description="layer"),
        "head": widgets.Dropdown(options=[("mean", -1)] + [(str(int(h)), int(h)) for h in maps.heads],
                                 description="head"),
        "query": widgets.Dropdown(options=[(f"{int(q)} ({r})", int(q)) for q, r in zip(maps.query_positions, maps.query_roles)],
                                  value=int(maps.query_positions[-1]), description="query"),
        "kind": widgets.ToggleButtons(options=kinds, description="map", style=_COMPACT),
        "view": widgets.ToggleButtons(options=["overlay", "grid"], description="view", style=_COMPACT),
    }
    tiles = default_tiles(maps.prepared)

    def key(layer, head, query, kind, view):
        # corrected maps have no query axis, rollout no head axis: those controls change nothing
        return (layer, None if kind == "rollout" else head, None if kind == "corrected" else query, kind, view)

    def draw(layer, head, query, kind, view):
        _, head, query, _, _ = key(layer, head, query, kind, view)
        scores = maps.image_map(layer=layer, head=None if head is None or head < 0 else head, query=query, kind=kind)
        fig, ax = plt.subplots(figsize=(4.8, 4.2))
        artist = draw_token_scores(ax, maps.prepared, scores, tiles=tiles, alpha=0.7 if view == "overlay" else 1.0,
                                   norm=Normalize(0, max(float(np.nanmax(scores)), 1e-12)), boxes=boxes)
        fig.colorbar(artist, ax=ax, label=f"{kind} on image tokens", shrink=0.8)
        heads = "" if head is None else f", head {'mean' if head < 0 else head}"
        queries = "all queries" if query is None else f"query {query}"
        ax.set_title(f"{maps.model_name}: layer {layer}{heads}, {queries}", fontsize="medium")
        ax.set_axis_off()
        return fig

    return Explorer(controls, [["layer", "head"], ["query", "view"], ["kind"]], draw, key, name="attention")


def knockout_explorer(result, model: str, data: str) -> Explorer:
    """Return an explorer of an attention-knockout sweep: pick edge sets and a question type.

    Args:
        result: the ``KnockoutResult`` of ``analysis.probes.information_flow``.
        model, data: shown in the title.

    Controls: ``edges`` (one or more blocked edge sets, e.g. ``image->last``) and ``type``
    (``all`` or one question type, when the samples have types).
    """
    frame = result.frame
    blocks = list(dict.fromkeys(frame["block"]))
    types = ["all"] + sorted(t for t in frame["question_type"].dropna().unique())
    controls = {
        "edges": widgets.SelectMultiple(options=blocks, value=tuple(blocks), rows=min(len(blocks), 6),
                                        description="edges"),
        "qtype": widgets.Dropdown(options=types, description="type"),
    }

    def key(edges, qtype):
        return (tuple(sorted(edges)), qtype)

    def draw(edges, qtype):
        subset = frame[frame["block"].isin(edges)]
        if qtype != "all":
            subset = subset[subset["question_type"] == qtype]
        if subset.empty:
            return _note_figure("no edge set selected" if not edges else f"no samples of type {qtype}")
        fig = knockout_curves(dataclasses.replace(result, frame=subset), model,
                              data if qtype == "all" else f"{data}, {qtype}")
        fig.set_size_inches(max(fig.get_figwidth(), 5.0), max(fig.get_figheight(), 3.4))
        return fig

    return Explorer(controls, [["edges", "qtype"]], draw, key, name="knockout")


def logit_lens_explorer(with_norm: pd.DataFrame, without_norm: pd.DataFrame | None, model: str,
                        data: str) -> Explorer:
    """Return an explorer of the logit lens: pick the position read and whether the final norm is
    applied before the unembedding.

    Args:
        with_norm: ``analysis.probes.logit_lens(..., final_norm=True)`` (its default).
        without_norm: the same call with ``final_norm=False``, or None to offer only the first.
        model, data: shown in the title.

    Controls: ``position`` (one sample: each position read, e.g. ``74 (last)``; several
    samples: each role read, averaged over the samples and that role's positions); ``norm``
    (``on`` / ``off``); ``qtype`` (``all`` or one question type, when the samples have types);
    ``scale`` (``linear`` / ``log`` y axis: early layers and question positions give the answer
    tiny probabilities).
    The y axis is the mean probability (%) of each tracked token (the gold answer, its
    capitalised form and the foil when known, else the model's prediction), x the decoder layer
    whose output is read.
    """
    frames = {"on": with_norm} if without_norm is None else {"on": with_norm, "off": without_norm}
    if with_norm.empty:
        raise ValueError("the logit-lens frame is empty (with only_correct=True, no sample was answered correctly)")
    if with_norm["sample"].nunique() == 1:
        spots = with_norm.drop_duplicates("position").sort_values("position")
        positions = [(f"{int(p)} ({r})", ("position", int(p))) for p, r in zip(spots["position"], spots["role"])]
        last = next(v for label, v in positions if label.endswith("(last)")) if "last" in set(spots["role"]) else positions[-1][1]
    else:
        roles = list(dict.fromkeys(with_norm["role"]))
        positions = [(f"{r} (mean)", ("role", r)) for r in roles]
        last = ("role", "last") if "last" in roles else positions[-1][1]
    types = ["all"] + sorted(t for t in with_norm["question_type"].dropna().unique())
    controls = {
        "position": widgets.Dropdown(options=positions, value=last, description="position"),
        "norm": widgets.ToggleButtons(options=list(frames), description="final norm", style=_COMPACT),
        "qtype": widgets.Dropdown(options=types, description="type", disabled=len(types) == 1),
        "scale": widgets.ToggleButtons(options=["linear", "log"], description="y axis", style=_COMPACT),
    }

    def draw(position, norm, qtype, scale):
        frame = frames[norm]
        column, value = position
        frame = frame[frame[column] == value]
        if qtype != "all":
            frame = frame[frame["question_type"] == qtype]
        if "answer" in set(frame["tracked"]):  # the gold answer's curve; "prediction" would repeat it
            frame = frame[frame["tracked"] != "prediction"]
        fig, ax = plt.subplots(figsize=(5.0, 3.4))
        if frame.empty:
            ax.text(0.5, 0.5, f"no samples of type {qtype}", ha="center", va="center", transform=ax.transAxes)
        mean = frame.groupby(["tracked", "layer"], sort=False)["prob"].mean().mul(100)
        for colour, tracked in zip(PALETTE, dict.fromkeys(frame["tracked"])):
            curve = mean.loc[tracked].sort_index()
            tokens = ", ".join(dict.fromkeys(frame.loc[frame["tracked"] == tracked, "token"]))
            label = f"{tracked} ({tokens})" if frame["sample"].nunique() == 1 else tracked
            ax.plot(curve.index, curve.to_numpy(), marker="o", color=colour, label=label)
        ax.set(xlabel="decoder layer", ylabel="probability (%)")
        if scale == "log":
            ax.set_yscale("log")
            ax.set_ylim(max(float(mean.min()) / 2, 1e-6) if len(mean) else 1e-6, 100)
        else:
            ax.set_ylim(0, 100)
        ax.set_xticks(sorted(set(frames[norm]["layer"])))
        if len(ax.get_lines()):
            ax.legend(title="token", fontsize="small", title_fontsize="small")
        label = next(k for k, v in positions if v == position)
        ax.set_title(f"Logit lens at {label}, final norm {norm}\n{model} on {data}"
                     + ("" if qtype == "all" else f", {qtype}"), fontsize="medium")
        return fig

    return Explorer(controls, [["position", "norm"], ["qtype", "scale"]], draw, name="logit-lens")


def _note_figure(text: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig
