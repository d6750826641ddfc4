"""Text -> image attention maps per layer and head, from one forward pass through the backend.

``attention_maps(vlm, prepared)`` records, for the chosen query rows, the attention over every
key position (so that the mass on image, question and other tokens is known) in the chosen
layers, keeps the image columns per head, and derives:

- ``mass``: total attention on image / question / other tokens per layer, head and query
  (``other`` is every remaining position: template, special tokens, the last position);
- ``position_corrected()``: the position-bias correction of FasterVLM. Under causal masking a
  later key is visible to more queries, so its column sum over the queries is inflated; the
  corrected score of an image token is its column sum divided by the number of queries that
  can see it. Visibility is read from the model's own mask (a masked probability is exactly 0
  after the softmax), so prefix-LM bidirectionality (PaliGemma) and sliding windows count;
- ``sinks``: attention-sink image tokens (``analysis.probes.sinks``), from the norms of the
  hidden states entering each layer (captured by pre-hooks in the same forward) and the image
  attention shares;
- ``rollout`` (optional): attention rollout of Abnar & Zuidema. Per layer ``B_l = A_l + I``
  row-normalised, ``A_l`` averaged over all heads; ``R_l = B_l B_{l-1} ... B_0``; the result is
  ``R_l[query, image]`` for each chosen layer;
- ``localisation(region)``: mass ratio and pointing game against ground-truth boxes
  (``analysis.models.localisation``).

Memory (fp32, ``T`` positions, ``H`` heads, ``Q`` queries, ``I`` image tokens, ``L`` layers):
without rollout the backend forms ``H x Q x T`` scores for one layer at a time and the result
keeps ``L x H x Q x I`` (LLaVA-NeXT-7B, last query, 32 layers: ~12 MB). Rollout needs every row:
each layer up to the deepest chosen one records ``H x T x T`` (freed after that layer, ~1.1 GB
at T = 2900, H = 32) and the running product holds three ``T x T`` matrices (~100 MB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.data.samples import as_samples
from analysis.errors import InputError
from analysis.models import VLM, PreparedInputs
from analysis.models.inputs import TARGETS
from analysis.models.sites import Site, reading
from analysis.probes.backend import Recording, probing
from analysis.models.localisation import localisation_scores
from analysis.probes.sinks import DEFAULT_THRESHOLD, detect_sinks
from analysis.models.numerics import finite

QUERY_SPECS = ("last", "question", "question+last")
KINDS = ("attention", "corrected", "rollout")


@dataclass
class AttentionMaps:
    """Attention from query positions to image tokens, per layer and head, for one input.

    Shapes use ``L = len(layers)``, ``H = len(heads)``, ``Q = len(query_positions)``,
    ``I = n_image`` (image tokens in sequence order, as ``prepared.patches``).

    Attributes:
        prepared: the input.
        model_name: the model's name, for titles and provenance.
        layers: ``(L,)`` decoder layer indices.
        heads: ``(H,)`` head indices.
        query_positions: ``(Q,)`` absolute query positions, ascending.
        image_attention: ``(L, H, Q, I)`` float32 attention probabilities on image tokens.
        mass: tidy DataFrame, one row per layer x head x query x target: ``layer, head,
            query_pos, query_role, target`` (``image`` / ``question`` / ``other``), ``mass``.
        image_norms: ``(L, I)`` L2 norms of the image tokens' hidden states entering each layer.
        sinks: detected sink tokens (``analysis.probes.sinks.detect_sinks``).
        rollout: ``(L, Q, I)`` rollout up to each layer, or None when not computed.
    """

    prepared: PreparedInputs
    model_name: str
    layers: np.ndarray
    heads: np.ndarray
    query_positions: np.ndarray
    image_attention: np.ndarray
    mass: pd.DataFrame
    image_norms: np.ndarray
    sinks: pd.DataFrame
    rollout: np.ndarray | None = None

    @property
    def query_roles(self) -> np.ndarray:
        """``(Q,)`` role of each query position."""
        return self.prepared.roles[self.query_positions]

    def position_corrected(self) -> np.ndarray:
        """Return ``(L, H, I)``: column sums over queries / number of queries that can see each key.

        Keys that no query can see get NaN.
        """
        visible = (self.image_attention > 0).any(axis=(0, 1)).sum(axis=0)
        sums = self.image_attention.sum(axis=2, dtype=np.float64)
        return np.where(visible > 0, sums / np.maximum(visible, 1), np.nan)

    def image_map(self, layer: int | None = None, head: int | None = None, query: int | None = None,
                  kind: str = "attention") -> np.ndarray:
        """Return one ``(I,)`` map, averaged over every dimension left as None.

        Args:
            layer, head: a recorded layer / head index (not an array index).
            query: a recorded query position.
            kind: ``"attention"`` (``image_attention``), ``"corrected"`` (``position_corrected()``,
                which has no query axis) or ``"rollout"`` (which has no head axis); giving an
                index for a missing axis is an error.
        """
        values, axes = self._values(kind)
        picks = {"layer": (layer, self.layers), "head": (head, self.heads), "query": (query, self.query_positions)}
        extra = [name for name, (wanted, _) in picks.items() if wanted is not None and name not in axes]
        if extra:
            raise InputError(f"{kind} maps have no {extra[0]} axis; leave {extra[0]}=None")
        for axis in reversed(range(len(axes))):
            wanted, labels = picks[axes[axis]]
            values = values.mean(axis=axis) if wanted is None else np.take(
                values, _index(labels, wanted, axes[axis]), axis=axis)
        return values

    def to_grid(self, tile: int = 0, query: int | None = None, kind: str = "attention") -> np.ndarray:
        """Return maps on one tile's patch grid: ``(L, H, rows, cols)`` (rollout: ``(L, rows, cols)``).

        Args:
            tile: the tile (``prepared.grids``).
            query: a recorded query position; None averages over the queries.
            kind: as in ``image_map``.
        """
        values, axes = self._values(kind)
        if "query" in axes:
            q = axes.index("query")
            values = values.mean(axis=q) if query is None else np.take(
                values, _index(self.query_positions, query, "query"), axis=q)
        return self.prepared.to_grid(values, tile)

    def to_frame(self, mean_heads: bool = False) -> pd.DataFrame:
        """Return the tidy frame of ``image_attention``, one row per layer x head x query x image token.

        Columns: ``layer, head, query_pos, query_role, image_pos, tile, row, col, kind, attention``
        (no ``head`` with ``mean_heads``). It has ``L * H * Q * I`` rows (LLaVA-1.5, 32 layers, 32
        heads, last query: 590k); ``mean_heads`` divides that by ``H``.
        """
        values = self.image_attention.mean(axis=1, keepdims=True) if mean_heads else self.image_attention
        heads = np.array([-1]) if mean_heads else self.heads
        L, H, Q, I = values.shape
        index = np.indices((L, H, Q, I)).reshape(4, -1)
        patches = self.prepared.patches.iloc[index[3]].reset_index(drop=True)
        frame = pd.DataFrame({
            "layer": self.layers[index[0]], "head": heads[index[1]],
            "query_pos": self.query_positions[index[2]], "query_role": self.query_roles[index[2]],
            "image_pos": patches["position"], "tile": patches["tile"], "row": patches["row"],
            "col": patches["col"], "kind": patches["kind"], "attention": values.reshape(-1),
        })
        return frame.drop(columns="head") if mean_heads else frame

    def localisation(self, region, kind: str = "attention") -> pd.DataFrame:
        """Return localisation scores against a region, one row per map of ``kind``.

        Args:
            region: boxes ``(x0, y0, x1, y1)`` in original-image pixels, or a zoo sample (its
                ``object_boxes``).
            kind: as in ``image_map``.

        Returns:
            Columns ``layer``, ``head`` (not for rollout), ``query_pos`` (not for corrected), then
            ``share``, ``area_share``, ``ratio``, ``hit`` (see ``analysis.models.localisation``).
        """
        values, axes = self._values(kind)
        scores = localisation_scores(self.prepared, values, region)
        labels = {"layer": self.layers, "head": self.heads, "query": self.query_positions}
        index = pd.MultiIndex.from_product([labels[a] for a in axes],
                                           names=[a if a != "query" else "query_pos" for a in axes])
        frame = pd.DataFrame({name: np.ravel(scores[name]) for name in ("share", "ratio", "hit")}, index=index)
        frame.insert(1, "area_share", float(scores["area_share"]))
        return frame.reset_index()

    def _values(self, kind: str) -> tuple[np.ndarray, list[str]]:
        """Return the maps of ``kind`` and the names of their leading axes."""
        if kind == "attention":
            return self.image_attention, ["layer", "head", "query"]
        if kind == "corrected":
            return self.position_corrected(), ["layer", "head"]
        if kind == "rollout":
            if self.rollout is None:
                raise InputError("rollout was not computed; call attention_maps(..., rollout=True)")
            return self.rollout, ["layer", "query"]
        raise InputError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")


def attention_maps(
    vlm: VLM,
    inputs: PreparedInputs,
    layers: int | Iterable[int] | None = None,
    heads: int | Iterable[int] | None = None,
    query: str | int | Iterable[int] = "last",
    rollout: bool = False,
    sink_threshold: float = DEFAULT_THRESHOLD,
) -> AttentionMaps:
    """Return the attention from query positions to image tokens, per layer and head.

    One forward pass (no key/value cache, logits for the last position only) with the attention
    backend recording the query rows over all keys, in fp32.

    Args:
        vlm: the model.
        inputs: one prepared image + question (``vlm.prepare``).
        layers: decoder layers (default: all); negative indices count from the end.
        heads: attention heads (default: all).
        query: ``"last"`` (the final prompt position), ``"question"`` (the question's tokens),
            ``"question+last"``, or explicit positions (negative ones count from the end).
        rollout: also compute attention rollout (records every row; see the module docstring
            for its memory).
        sink_threshold: robust z-score above which an image token is a sink.

    Returns:
        An ``AttentionMaps``.
    """
    layer_ids = _check_indices(layers, vlm.n_layers, "layer")
    head_ids = _check_indices(heads, vlm.n_heads, "head")
    queries = _query_positions(inputs, query)
    image = inputs.image_positions.numpy()
    roles = np.asarray(inputs.roles)
    groups = [torch.from_numpy(roles == "image"), torch.from_numpy(roles == "question")]
    groups.append(~(groups[0] | groups[1]))

    n = len(layer_ids)
    attention = np.zeros((n, len(head_ids), len(queries), len(image)), dtype=np.float32)
    mass = np.zeros((n, len(head_ids), len(queries), len(TARGETS)), dtype=np.float32)
    rolled = np.zeros((n, len(queries), len(image)), dtype=np.float32) if rollout else None
    slot = {layer: i for i, layer in enumerate(layer_ids)}
    q_index, h_index, i_index = (torch.from_numpy(a) for a in (queries, head_ids, image))
    rows = torch.arange(inputs.length) if rollout else q_index
    running = None  # the rollout product so far, (T, T) on the model's device

    def consume(layer: int, probs: torch.Tensor) -> None:
        """Take one layer's recording, ``(all heads, n_rows, T)``, and keep what is needed."""
        nonlocal running
        if layer in slot:
            kept = (probs[:, q_index] if rollout else probs)[h_index]
            attention[slot[layer]] = kept[..., i_index].numpy()
            mass[slot[layer]] = torch.stack([kept[..., g].sum(-1) for g in groups], dim=-1).numpy()
        if rollout:
            running = _rollout_step(running, probs.to(vlm.device).mean(dim=0))
            if layer in slot:
                rolled[slot[layer]] = running[q_index.to(vlm.device)][:, i_index.to(vlm.device)].cpu().numpy()

    wanted = range(max(layer_ids) + 1) if rollout else layer_ids
    norms = _forward(vlm, inputs, rows, wanted, consume, norm_layers=layer_ids)
    image_norms = np.stack([norms[layer] for layer in layer_ids])

    shares = attention / np.maximum(attention.sum(-1, keepdims=True), np.finfo(np.float32).tiny)
    return AttentionMaps(
        prepared=inputs,
        model_name=vlm.name,
        layers=layer_ids,
        heads=head_ids,
        query_positions=queries,
        image_attention=attention,
        mass=_mass_frame(mass, layer_ids, head_ids, queries, roles[queries]),
        image_norms=image_norms,
        sinks=detect_sinks(image_norms, shares.mean(axis=(1, 2)), layer_ids, inputs.patches, sink_threshold),
        rollout=rolled,
    )


def _forward(vlm: VLM, inputs: PreparedInputs, rows: torch.Tensor, wanted: Iterable[int], consume,
             norm_layers: Iterable[int]) -> dict[int, np.ndarray]:
    """Run one recorded forward; hand each layer's ``(H, n_rows, T)`` recording to ``consume``.

    Returns ``{layer: (I,) norms}`` of the image tokens' hidden states entering ``norm_layers``.
    """
    recording = Recording(rows=rows.to(vlm.device), cols=torch.arange(inputs.length, device=vlm.device),
                          wanted=frozenset(int(l) for l in wanted))
    image = inputs.image_positions.to(vlm.device)
    norms: dict[int, np.ndarray] = {}

    def on_value(s: Site, state: torch.Tensor) -> None:
        if s.kind == "resid_post":  # the layer has run: its recording is complete
            consume(s.layer, finite(vlm, recording.layers.pop(s.layer)[0], f"attention weights of layer {s.layer}"))
        else:
            norms[s.layer] = state[0, image].float().norm(dim=-1).cpu().numpy()

    wanted_sites = [Site("resid_post", l) for l in sorted(recording.wanted)] + [Site("resid_pre", l) for l in norm_layers]
    with torch.no_grad(), probing(vlm, record=recording), reading(vlm, wanted_sites, on_value=on_value):
        vlm.model(**inputs.inputs, use_cache=False, logits_to_keep=1)
    return norms


def _rollout_step(running: torch.Tensor | None, attention: torch.Tensor) -> torch.Tensor:
    """Return ``B @ running`` with ``B = (attention + I)`` row-normalised; ``(T, T)`` in and out."""
    step = attention + torch.eye(attention.shape[-1], device=attention.device, dtype=attention.dtype)
    step = step / step.sum(dim=-1, keepdim=True)
    return step if running is None else step @ running


def _mass_frame(mass: np.ndarray, layers, heads, queries, query_roles) -> pd.DataFrame:
    """Tidy frame of ``mass`` ``(L, H, Q, 3)``: one row per layer x head x query x target."""
    L, H, Q, K = mass.shape
    index = np.indices((L, H, Q, K)).reshape(4, -1)
    return pd.DataFrame({
        "layer": layers[index[0]], "head": heads[index[1]], "query_pos": queries[index[2]],
        "query_role": query_roles[index[2]], "target": np.asarray(TARGETS)[index[3]], "mass": mass.reshape(-1),
    })


def _check_indices(values, size: int, name: str) -> np.ndarray:
    """Return sorted unique indices in ``[0, size)``; negative ones count from the end."""
    if values is None:
        return np.arange(size)
    values = [values] if isinstance(values, (int, np.integer)) else list(values)
    if not values:
        raise InputError(f"no {name}s given; pass None for all {size}")
    for v in values:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not -size <= v < size:
            raise InputError(f"{name} {v!r} is out of range: expected 0..{size - 1} (or -{size}..-1 from the end)")
    return np.unique(np.asarray(values, dtype=int) % size)


def _query_positions(inputs: PreparedInputs, query) -> np.ndarray:
    """Return the query positions named by ``query`` as a sorted unique ``(Q,)`` int array."""
    if isinstance(query, str):
        named = {
            "last": [inputs.last_position],
            "question": inputs.question_positions.tolist(),
            "question+last": inputs.question_positions.tolist() + [inputs.last_position],
        }
        if query not in named:
            raise InputError(f"unknown query {query!r}; use one of {', '.join(QUERY_SPECS)} or a list of positions")
        return np.unique(np.asarray(named[query], dtype=int))
    if torch.is_tensor(query):
        query = query.tolist()
    return _check_indices(query, inputs.length, "query position")


def _index(labels: np.ndarray, wanted: int, name: str) -> int:
    """Return the array index of ``wanted`` in ``labels``; raise if it was not recorded."""
    found = np.flatnonzero(labels == wanted)
    if len(found) == 0:
        raise InputError(f"{name} {wanted!r} was not recorded; recorded: {labels.tolist()}")
    return int(found[0])


def localisation_sweep(vlm: VLM, samples, query: str = "last", progress: bool = True) -> pd.DataFrame:
    """Localisation of head-averaged attention and of rollout, per layer, over many samples.

    Args:
        vlm: the model.
        samples: samples with a ground-truth region (``boxes`` / ``object_boxes``), as
            ``analysis.data.samples.as_samples`` accepts.
        query: as in ``attention_maps``; the maps are averaged over query positions and heads.
        progress: show a progress bar.

    Returns:
        Tidy DataFrame, one row per sample x map x layer: ``sample``, ``question_type``,
        ``map`` (``"attention"`` or ``"rollout"``), ``layer``, ``share``, ``area_share``,
        ``ratio``, ``hit`` (see ``analysis.models.localisation``).
    """
    rows = []
    for sample in tqdm(as_samples(samples), desc="localisation", disable=not progress):
        if not sample.boxes:
            raise InputError(f"sample {sample.id} has no ground-truth region (boxes)")
        maps = attention_maps(vlm, vlm.prepare(sample.image, sample.question), query=query, rollout=True)
        for name, values in (("attention", maps.image_attention.mean(axis=(1, 2))), ("rollout", maps.rollout.mean(axis=1))):
            scores = localisation_scores(maps.prepared, values, sample.boxes)
            for i, layer in enumerate(maps.layers):
                rows.append({"sample": sample.id, "question_type": sample.question_type, "map": name,
                             "layer": int(layer), "share": float(scores["share"][i]),
                             "area_share": float(scores["area_share"]), "ratio": float(scores["ratio"][i]),
                             "hit": bool(scores["hit"][i])})
    return pd.DataFrame(rows)
