"""ipywidgets explorers over precomputed probe results (no model call when a control moves).

Used by the notebooks when ``interactive=True``; headless runs draw static small multiples.
"""

from __future__ import annotations

import dataclasses

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.colors import Normalize

from analysis.plots.attention import default_tiles
from analysis.plots.flow import knockout_curves
from analysis.plots.overlay import draw_token_scores
from analysis.probes.attention import AttentionMaps


def attention_explorer(maps: AttentionMaps) -> widgets.VBox:
    """Sliders for layer, head (or the head mean), query position and map kind over one input.

    Args:
        maps: the result of ``analysis.probes.attention_maps`` (with ``rollout=True`` to offer
            the rollout view).

    Returns:
        A widget: the controls above an output area holding the overlay.
    """
    kinds = ["attention", "corrected"] + (["rollout"] if maps.rollout is not None else [])
    layer = widgets.SelectionSlider(options=[int(l) for l in maps.layers], description="layer")
    head = widgets.Dropdown(options=[("mean", -1)] + [(str(int(h)), int(h)) for h in maps.heads], description="head")
    query = widgets.Dropdown(options=[(f"{int(q)} ({r})", int(q)) for q, r in zip(maps.query_positions, maps.query_roles)],
                             value=int(maps.query_positions[-1]), description="query")
    kind = widgets.ToggleButtons(options=kinds, description="map")
    tiles = default_tiles(maps.prepared)

    def draw(layer, head, query, kind):
        if kind == "corrected":
            scores = maps.image_map(layer=layer, head=None if head < 0 else head, kind=kind)
        elif kind == "rollout":
            scores = maps.image_map(layer=layer, query=query, kind=kind)
        else:
            scores = maps.image_map(layer=layer, head=None if head < 0 else head, query=query, kind=kind)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        layer_artist = draw_token_scores(ax, maps.prepared, scores, tiles=tiles,
                                         norm=Normalize(0, max(float(scores.max()), 1e-12)))
        fig.colorbar(layer_artist, ax=ax, label=f"{kind} on image tokens")
        ax.set_title(f"{maps.model_name}: layer {layer}, head {'mean' if head < 0 else head}, query {query}")
        plt.show()

    out = widgets.interactive_output(draw, {"layer": layer, "head": head, "query": query, "kind": kind})
    return widgets.VBox([widgets.HBox([layer, head]), widgets.HBox([query, kind]), out])


def knockout_explorer(result, model: str, data: str) -> widgets.VBox:
    """Pick the edge sets and the question type of a knockout sweep and redraw its curves.

    Args:
        result: the ``KnockoutResult`` of ``analysis.probes.information_flow``.
        model, data: shown in the title.
    """
    frame = result.frame
    blocks = list(dict.fromkeys(frame["block"]))
    types = ["all"] + sorted(t for t in frame["question_type"].dropna().unique())
    chosen = widgets.SelectMultiple(options=blocks, value=tuple(blocks), description="edges")
    qtype = widgets.Dropdown(options=types, description="type")

    def draw(chosen, qtype):
        subset = frame[frame["block"].isin(chosen)]
        if qtype != "all":
            subset = subset[subset["question_type"] == qtype]
        if subset.empty:
            print("nothing selected")
            return
        knockout_curves(dataclasses.replace(result, frame=subset), model, data if qtype == "all" else f"{data}, {qtype}")
        plt.show()

    out = widgets.interactive_output(draw, {"chosen": chosen, "qtype": qtype})
    return widgets.VBox([widgets.HBox([chosen, qtype]), out])
