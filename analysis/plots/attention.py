"""Figures of ``AttentionMaps``: overlay grids per head or per layer, layer x head mass heatmaps.

The maps are taken duck-typed (plots import nothing from the probes): any object with the
attributes of ``AttentionMaps`` (``probes.attention``) will do.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from analysis.errors import InputError
from analysis.models import PreparedInputs
from analysis.models.inputs import TARGETS
from analysis.plots.style import COLUMN_WIDTH, SEQUENTIAL_CMAP

KIND_LABELS = {
    "attention": "attention probability",
    "corrected": "position-corrected attention",
    "rollout": "attention rollout",
}


def plot_head_overlays(maps, layer: int, *, query: int | None = None,
                       tiles: Sequence[int] | None = None, sort_by_mass: bool = True, normalise: bool = False,
                       kind: str = "attention", ncols: int = 4) -> Figure:
    """Return a grid of overlays, one panel per head of ``layer``, sorted by image mass.

    Args:
        maps: an ``AttentionMaps`` (``probes.attention``), the result of ``attention_maps``.
        layer: a recorded layer.
        query: a recorded query position; None averages over the queries.
        tiles: tiles drawn together in each panel (they should not overlap); default: the tile
            covering the most image area, with the most tokens on ties (``default_tiles``).
        sort_by_mass: order heads by their total attention on image tokens, largest first.
        normalise: min-max scale each panel to [0, 1] instead of one shared scale.
        kind: ``"attention"`` or ``"corrected"`` (rollout has no heads).
        ncols: panels per row.
    """
    if kind == "rollout":
        raise InputError("rollout averages the heads; use plot_layer_overlays(maps, kind='rollout')")
    values = np.stack([maps.image_map(layer=layer, head=int(h), query=query, kind=kind) for h in maps.heads])
    mass = values.sum(axis=1)
    order = np.argsort(-mass, kind="stable") if sort_by_mass else np.arange(len(maps.heads))
    titles = [f"head {maps.heads[i]}" + _mass_note(kind, mass[i]) for i in order]
    title = f"{maps.model_name}, layer {layer}, {_describe_queries(maps, query)}\n\"{maps.prepared.question}\""
    return _overlay_grid(maps.prepared, values[order], titles, tiles, _label(kind, normalise), title, normalise, ncols)


def plot_layer_overlays(maps, *, query: int | None = None, tiles: Sequence[int] | None = None,
                        normalise: bool = False, kind: str = "attention", ncols: int = 4) -> Figure:
    """Return a grid of overlays, one panel per recorded layer, heads averaged.

    Args:
        maps: an ``AttentionMaps`` (``probes.attention``), the result of ``attention_maps``.
        query, tiles, normalise, ncols: as in ``plot_head_overlays``.
        kind: ``"attention"``, ``"corrected"`` or ``"rollout"`` (rollout up to each layer).
    """
    values = np.stack([maps.image_map(layer=int(l), query=query, kind=kind) for l in maps.layers])
    titles = [f"layer {l}" + _mass_note(kind, m) for l, m in zip(maps.layers, values.sum(axis=1))]
    title = f"{maps.model_name}, mean over heads, {_describe_queries(maps, query)}\n\"{maps.prepared.question}\""
    return _overlay_grid(maps.prepared, values, titles, tiles, _label(kind, normalise), title, normalise, ncols)


def plot_mass_heatmap(maps, targets: Sequence[str] = ("image", "question"), *,
                      query: int | None = None) -> Figure:
    """Return layer x head heatmaps of the attention mass on each target token group.

    Args:
        maps: an ``AttentionMaps`` (``probes.attention``), the result of ``attention_maps``.
        targets: any of ``"image"``, ``"question"``, ``"other"``; one panel each.
        query: a recorded query position; None averages over the queries.
    """
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise InputError(f"unknown targets {unknown or list(targets)}; use some of {', '.join(TARGETS)}")
    frame = _select_query(maps, query)
    table = frame.pivot_table(index=["target", "layer"], columns="head", values="mass", aggfunc="mean")
    fig, axes = plt.subplots(1, len(targets), figsize=(min(2 * COLUMN_WIDTH, 2.6 * len(targets) + 0.4), 2.8),
                             squeeze=False)
    for ax, target in zip(axes.flat, targets):
        grid = table.loc[target]
        image = ax.imshow(grid.to_numpy(), origin="lower", aspect="auto", cmap=SEQUENTIAL_CMAP, vmin=0,
                          interpolation="nearest")
        ax.grid(False)
        _label_ticks(ax.xaxis, grid.columns.to_numpy())
        _label_ticks(ax.yaxis, grid.index.to_numpy())
        ax.set(xlabel="head", ylabel="layer", title=f"attention mass on {target} tokens")
        fig.colorbar(image, ax=ax, label="share of the query's attention")
    fig.suptitle(f"{maps.model_name}, {_describe_queries(maps, query)}\n\"{maps.prepared.question}\"")
    return fig


def default_tiles(prepared: PreparedInputs) -> list[int]:
    """Return ``[tile]``: the tile covering the most image area, with the most tokens on ties."""
    def key(tile):
        x0, y0, x1, y1 = prepared.tile_box(tile)
        rows, cols = prepared.grids[tile]
        return ((x1 - x0) * (y1 - y0), rows * cols)

    return [max(prepared.grids, key=key)]


def _overlay_grid(prepared: PreparedInputs, values: np.ndarray, titles: list[str], tiles, label: str, title: str,
                  normalise: bool, ncols: int) -> Figure:
    """Draw ``values`` ``(n_panels, I)`` over the image, one panel each, on one colour scale."""
    tiles = default_tiles(prepared) if tiles is None else list(tiles)
    missing = [t for t in tiles if t not in prepared.grids]
    if missing or not tiles:
        raise InputError(f"tiles {missing or tiles} do not exist; this input has tiles {sorted(prepared.grids)}")
    patches = prepared.patches
    drawn = (patches["kind"].to_numpy() == "patch") & np.isin(patches["tile"].to_numpy(), tiles)
    values = values[:, drawn]
    if normalise:
        low = np.nanmin(values, axis=1, keepdims=True)
        values = (values - low) / np.maximum(np.nanmax(values, axis=1, keepdims=True) - low, np.finfo(float).tiny)
    norm = Normalize(vmin=np.nanmin(values), vmax=np.nanmax(values))
    boxes = patches.loc[drawn, ["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
    if np.isnan(boxes).all():  # the generic token-level path: tokens in sequence order, no boxes
        return _sequence_grid(values, titles, label, title, norm, ncols)
    quads = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [2, 3]], boxes[:, [0, 3]]], axis=1)
    x0, y0 = boxes[:, :2].min(axis=0)
    x1, y1 = boxes[:, 2:].max(axis=0)

    ncols = min(ncols, len(values))
    nrows = math.ceil(len(values) / ncols)
    panel_height = (2 * COLUMN_WIDTH - 0.8) / ncols * (y1 - y0) / (x1 - x0) + 0.35
    fig, axes = plt.subplots(nrows, ncols, figsize=(2 * COLUMN_WIDTH, nrows * panel_height + 0.7), squeeze=False)
    image = np.asarray(prepared.image)
    for ax, panel_values, panel_title in zip(axes.flat, values, titles):
        ax.imshow(image, extent=(0, image.shape[1], image.shape[0], 0), interpolation="nearest")
        ax.add_collection(PolyCollection(quads, array=panel_values, cmap=SEQUENTIAL_CMAP, norm=norm, alpha=0.75,
                                         linewidths=0, antialiaseds=False))
        ax.set(xlim=(x0, x1), ylim=(y1, y0), aspect="equal", xticks=[], yticks=[])
        ax.set_title(panel_title, fontsize="small")
        ax.grid(False)
    for ax in axes.flat[len(values):]:
        ax.remove()
    names = ", ".join(prepared.tile_names.get(t, f"tile {t}") for t in tiles)
    fig.supxlabel(f"image tokens of tile {names}, each drawn over the image region it covers", fontsize="small")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=SEQUENTIAL_CMAP), ax=axes[:, -1].tolist(), label=label,
                 alpha=0.75, shrink=0.9)
    fig.suptitle(title)
    return fig


def _sequence_grid(values: np.ndarray, titles: list[str], label: str, title: str, norm: Normalize,
                   ncols: int) -> Figure:
    """Draw ``values`` ``(n_panels, I)`` token by token in sequence order, wrapped into rows: for a model whose
    patch geometry is unknown (the generic token-level path), which the figure says."""
    n = values.shape[1]
    width = max(1, math.ceil(math.sqrt(n)))
    padded = np.full((len(values), math.ceil(n / width) * width), np.nan)
    padded[:, :n] = values
    ncols = min(ncols, len(values))
    nrows = math.ceil(len(values) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2 * COLUMN_WIDTH, nrows * (2 * COLUMN_WIDTH - 0.8) / ncols + 0.9),
                             squeeze=False)
    for ax, panel_values, panel_title in zip(axes.flat, padded, titles):
        ax.imshow(panel_values.reshape(-1, width), cmap=SEQUENTIAL_CMAP, norm=norm, interpolation="nearest")
        ax.set(xticks=[], yticks=[])
        ax.set_title(panel_title, fontsize="small")
        ax.grid(False)
    for ax in axes.flat[len(values):]:
        ax.remove()
    fig.supxlabel(f"{n} image tokens in sequence order, {width} per row: the patch geometry of this model is unknown "
                  "(generic token-level path), so the map is not drawn over the image", fontsize="small")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=SEQUENTIAL_CMAP), ax=axes[:, -1].tolist(), label=label,
                 shrink=0.9)
    fig.suptitle(title)
    return fig


def _label_ticks(axis, labels: np.ndarray, most: int = 8) -> None:
    """Put at most ``most`` evenly spaced ticks on ``axis``, labelled with the layer / head indices."""
    ticks = np.arange(0, len(labels), max(1, math.ceil(len(labels) / most)))
    axis.set_ticks(ticks, labels=[str(v) for v in labels[ticks]])


def _mass_note(kind: str, mass: float) -> str:
    """Panel-title suffix with the map's total on image tokens (not meaningful for corrected maps)."""
    return "" if kind == "corrected" else f": image mass {mass:.2f}"


def _select_query(maps, query: int | None):
    """Rows of ``maps.mass`` for one recorded query position, or all of them."""
    if query is None:
        return maps.mass
    if query not in set(maps.query_positions.tolist()):
        raise InputError(f"query {query!r} was not recorded; recorded: {maps.query_positions.tolist()}")
    return maps.mass[maps.mass["query_pos"] == query]


def _describe_queries(maps, query: int | None) -> str:
    """Say which query rows a figure shows, e.g. ``"query: last position (587)"``."""
    if query is not None:
        return f"query: position {query} ({maps.prepared.roles[query]})"
    roles, counts = np.unique(maps.query_roles, return_counts=True)
    if len(maps.query_positions) == 1:
        return f"query: {roles[0]} position ({maps.query_positions[0]})"
    parts = ", ".join(f"{n} {r}" for r, n in zip(roles, counts))
    return f"mean over {len(maps.query_positions)} queries ({parts})"


def _label(kind: str, normalise: bool) -> str:
    """Colorbar label for maps of ``kind``."""
    if kind not in KIND_LABELS:
        raise InputError(f"unknown kind {kind!r}; use one of {', '.join(KIND_LABELS)}")
    return KIND_LABELS[kind] + (", min-max per panel" if normalise else "")


def plot_localisation(frame, model: str, data: str) -> Figure:
    """Return two panels over layers: attention share on the region / its area share, and the
    pointing-game hit rate (%), one line per map kind, mean with a 95% bootstrap band.

    Args:
        frame: the output of ``localisation_sweep`` (``probes.attention``).
        model, data: shown in the title.
    """
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    from analysis.plots.style import PALETTE

    frame = frame.assign(hit_percent=100.0 * frame["hit"].astype(float))
    kinds = list(dict.fromkeys(frame["map"]))
    palette = dict(zip(kinds, PALETTE))
    fig, axes = plt.subplots(1, 2, figsize=(2 * COLUMN_WIDTH, 2.6))
    for ax, column, label in ((axes[0], "ratio", "share on region / area share"),
                              (axes[1], "hit_percent", "pointing game hits (%)")):
        sns.lineplot(frame, x="layer", y=column, hue="map", hue_order=kinds, palette=palette, errorbar=("ci", 95),
                     n_boot=1000, seed=0, ax=ax, legend=ax is axes[0])
        ax.set(xlabel="decoder layer", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].axhline(1.0, color="0.5", lw=0.6, zorder=0)
    chance = 100 * frame.groupby("sample")["area_share"].first().mean()
    axes[1].axhline(chance, color="0.5", lw=0.6, ls="--", zorder=0, label=f"chance ({chance:.0f}%)")
    axes[1].set_ylim(0, 100)
    axes[1].legend(fontsize="small")
    axes[0].legend(title="map", fontsize="small", title_fontsize="small")
    fig.suptitle(f"Attention localisation on the question's objects: {model} on {data} "
                 f"(n={frame['sample'].nunique()})")
    return fig
