"""Visual-token redundancy: which image tokens the answer needs, from which decoder layer on.

References (``shared/probes.md`` section 6): FastV ("An Image is Worth 1/2 Tokens After Layer 2"),
PyramidDrop, FasterVLM / VTC-CLS ([CLS] attention), "Generic Token Compression in MLLMs from an
Explainability Perspective" (attribution), "Intriguing Properties of Large Language and Vision
Models" (permuting the image tokens).

**Dropping.** Image tokens outside the kept set are removed from attention from decoder layer
``K`` on: in layers ``>= K`` no query at a kept position attends to their keys. The edges are
blocked through the shared attention backend (``analysis.probes.backend``, on top of the model's
own mask: padding, prefix-LM and M-RoPE untouched). This equals physically removing the dropped
tokens' keys and values in layers ``>= K`` with the kept tokens' position ids unchanged
(``tests/test_redundancy.py`` checks it against such a removal on every family). The dropped
positions' own queries still run (their outputs reach nothing), so this path saves no compute;
the FLOPs a real pruner saves are reported analytically (``flops_saved``).

**Rankings** (``RANKINGS``; each orders a sample's image tokens, most important first; ``keep``
keeps the first ``round(keep * n_image)``):

- ``last_attention``: attention from the last prompt position at layer ``K - 1``, averaged over
  heads (FastV, PyramidDrop). A single query row sees every image key, so no position-bias
  correction is needed. Undefined for ``K = 0`` (no layer before the first): those rows are
  skipped and listed in ``skipped``.
- ``cls_attention``: the vision tower's [CLS] attention to its patches in the feature layer
  (``vision_feature_layer``, LLaVA-1.5's penultimate layer), averaged over heads (FasterVLM).
  Only for towers with a CLS token (CLIP), on a single tile (LLaVA-1.5) or on LLaVA-NeXT's any-res
  tiles (LLaVA-NeXT, LLaVA-NeXT-Video): each tile's own [CLS] row scores the image tokens that tile
  produced, one ranking over all tiles (``cls_attention_scores``); towers without a CLS (SigLIP:
  LLaVA-OneVision, PaliGemma) and other layouts raise.
- ``attribution``: an ``analysis.probes.attribute`` map of the model's own answer over the
  image tokens (default Integrated Gradients from the mean embedding, 20 steps), signed,
  highest first (the explainability paper).
- ``random``: a seeded permutation per sample.
- ``oracle``: on samples with ground truth (``boxes``, and pixel ``masks`` where the sample has
  them), the patches overlapping the question's objects first, taken in turn from each object and
  most covered first, then the others in seeded random order (``oracle_order``).

Ties keep sequence order; tokens without a score (e.g. LLaVA-NeXT newline tokens under an
attribution or ``cls_attention``) come last.

**Metrics** per sample and configuration: the change of the originally predicted token's
probability, ``100 * (p_new - p_base) / p_base`` (the knockout metric), correctness under the
one rule of ``analysis.models.answers`` (``first_token``), whether the prediction is unchanged,
and ``flops_saved``: the percentage of the language model's prefill FLOPs that removing the
dropped tokens from layer ``K`` on would save (per layer: q/k/v/o projections, ``4 n^2`` attention
terms per head dimension, gated or plain MLP; embeddings and the LM head left out).
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm.auto import tqdm

from analysis.data.samples import Sample, as_samples
from analysis.errors import InputError, UnsupportedModelError
from analysis.models.answers import answer_tokens, is_correct
from analysis.models.adapters.llava_next import LlavaNextAdapter
from analysis.models.inputs import PreparedInputs
from analysis.models.sites import Site, editing, last_position_only, replace, skipping
from analysis.probes.backend import Edges, Recording, probing
from analysis.probes.knockout import Unmodified, knockout_logits, unmodified_run
from analysis.probes.runners import offer_unmodified
from analysis.probes.sharing import model_key, shared, sharing

RANKINGS: tuple[str, ...] = ("last_attention", "cls_attention", "attribution", "random", "oracle")
DEFAULT_KEEP: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1, 0.05)
DEFAULT_ATTRIBUTION = {"method": "integrated_gradients", "baseline": "mean", "n_steps": 20}
REDUNDANCY_COLUMNS = ["sample", "question_type", "ranking", "drop_layer", "keep", "n_image", "n_kept", "n_related",
                      "related_kept", "answer", "p_base", "p_new", "change", "correct_base", "correct",
                      "same_prediction", "chance", "flops_saved"]
REGION_DROP_COLUMNS = ["sample", "question_type", "drop_layer", "dropped", "n_image", "n_dropped", "answer", "p_base",
                       "p_new", "change", "correct_base", "correct", "same_prediction", "chance", "flops_saved"]
PYRAMID_COLUMNS = ["sample", "question_type", "ratio", "stages", "n_image", "n_kept_final", "kept_mean", "answer",
                   "p_base", "p_new", "change", "correct_base", "correct", "same_prediction", "chance", "flops_saved"]
PERMUTE_COLUMNS = ["sample", "question_type", "permutation", "n_permuted", "answer", "p_base", "p_new", "change",
                   "correct_base", "correct", "same_prediction", "chance"]
_Z = 1.959963984540054  # two-sided 95%


# --- results --------------------------------------------------------------------------------
@dataclass
class RedundancyResult:
    """A token-redundancy sweep (``token_redundancy``).

    Attributes:
        frame: tidy, one row per sample x ranking x drop layer x keep fraction (columns
            ``REDUNDANCY_COLUMNS``): ``drop_layer`` is ``K`` (first decoder layer without the
            dropped tokens), ``keep`` the requested fraction, ``n_image`` / ``n_kept`` the image
            tokens of the sample and those kept, ``n_related`` / ``related_kept`` the image tokens
            overlapping the question's objects and how many of them were kept (NaN without boxes),
            ``answer`` the originally predicted token, ``p_base`` / ``p_new`` its probability
            without / with the drop, ``change = 100 * (p_new - p_base) / p_base`` (%),
            ``correct_base`` / ``correct`` correctness without / with the drop (NaN without a gold
            answer), ``same_prediction`` whether the greedy token is unchanged, ``chance``
            ``1 / len(options)`` when the sample has answer options (else NaN), ``flops_saved``
            (% of the language model's prefill FLOPs).
        n_samples: samples given.
        n_kept_samples: samples in the frame (all, or the correctly answered ones with
            ``only_correct=True``).
        rankings, drop_layers, keep: the sweep's axes, as run.
        skipped: ``{"sample", "ranking", "drop_layer", "reason"}`` records of combinations left out
            (``last_attention`` at layer 0; ``oracle`` when the objects cover no patch).
    """

    frame: pd.DataFrame
    n_samples: int
    n_kept_samples: int
    rankings: tuple[str, ...]
    drop_layers: tuple[int, ...]
    keep: tuple[float, ...]
    skipped: list[dict] = field(default_factory=list)

    def __post_init__(self):
        missing = set(REDUNDANCY_COLUMNS) - set(self.frame.columns)
        if missing:
            raise ValueError(f"a redundancy frame needs the columns {sorted(missing)}")
        if not 0 <= self.n_kept_samples <= self.n_samples or self.frame["sample"].nunique() > self.n_kept_samples:
            raise ValueError("a redundancy result keeps at most n_kept_samples <= n_samples samples")
        if not set(self.frame["ranking"]) <= set(self.rankings) <= set(RANKINGS):
            raise ValueError(f"rankings must be among {RANKINGS} and cover the frame's")
        if not set(self.frame["keep"]) <= set(self.keep) or not all(0 <= k <= 1 for k in self.keep):
            raise ValueError("keep fractions lie in [0, 1] and cover the frame's")
        if not set(self.frame["drop_layer"]) <= set(self.drop_layers):
            raise ValueError("drop_layers must cover the frame's")
        if len(self.frame) and not (self.frame["n_kept"] <= self.frame["n_image"]).all():
            raise ValueError("n_kept can never exceed n_image")

    def summary(self, by: Sequence[str] = ("ranking", "drop_layer", "keep")) -> pd.DataFrame:
        """Return accuracy and probability change per group with 95% CIs (see ``summarise``)."""
        return summarise(self.frame, by)

    def select(self, keep: float | Sequence[float] | None = None, rankings: str | Sequence[str] | None = None,
               drop_layers: int | Sequence[int] | None = None) -> "RedundancyResult":
        """Return the result restricted to some of its keep fractions, rankings or drop layers (None: all).

        A sweep's rankings do not depend on ``keep`` (nor on the other axes), so the restriction is
        the sweep those axes alone would give, up to the batching of the drops (the same
        configurations in other batches: ~1e-6 in ``p_new``; greedy tokens alike).

        Raises:
            InputError: a value the sweep did not run.
        """
        axes = {"keep": (keep, self.keep), "ranking": (rankings, self.rankings),
                "drop_layer": (drop_layers, self.drop_layers)}
        chosen = {}
        for column, (wanted, ran) in axes.items():
            if wanted is None:
                chosen[column] = tuple(ran)
                continue
            wanted = tuple(dict.fromkeys([wanted] if isinstance(wanted, (str, int, float)) else wanted))
            missing = [w for w in wanted if w not in ran]
            if missing:
                raise InputError(f"this sweep has no {column} {missing}; it ran {list(ran)}: run "
                                 "token_redundancy with them")
            chosen[column] = wanted
        rows = np.logical_and.reduce([self.frame[c].isin(v).to_numpy() for c, v in chosen.items()])
        return RedundancyResult(self.frame[rows].reset_index(drop=True), n_samples=self.n_samples,
                                n_kept_samples=self.n_kept_samples, rankings=chosen["ranking"],
                                drop_layers=chosen["drop_layer"], keep=chosen["keep"],
                                skipped=[s for s in self.skipped if s["ranking"] in chosen["ranking"]
                                         and s["drop_layer"] in chosen["drop_layer"]])


@dataclass
class RegionDropResult:
    """Accuracy with the question's image tokens dropped from layer ``K`` on (``drop_region``).

    Attributes:
        frame: one row per sample x drop layer x dropped set (columns ``REGION_DROP_COLUMNS``):
            ``dropped`` is ``"related"`` (every image token overlapping the question's objects) or
            ``"other"`` (as many seeded random other image tokens; all of them if fewer exist),
            ``n_dropped`` their number; other columns as in ``RedundancyResult``.
        n_samples: samples given.
        skipped: ids of samples left out because their objects cover no image patch or every one.
    """

    frame: pd.DataFrame
    n_samples: int
    skipped: list = field(default_factory=list)

    def __post_init__(self):
        missing = set(REGION_DROP_COLUMNS) - set(self.frame.columns)
        if missing:
            raise ValueError(f"a region-drop frame needs the columns {sorted(missing)}")
        if self.frame["sample"].nunique() + len(self.skipped) != self.n_samples:
            raise ValueError("every sample is either in the frame or skipped")
        if not set(self.frame["dropped"]) <= {"related", "other"}:
            raise ValueError("dropped is 'related' or 'other'")

    def summary(self, by: Sequence[str] = ("drop_layer", "dropped")) -> pd.DataFrame:
        """Return accuracy and probability change per group with 95% CIs (see ``summarise``)."""
        return summarise(self.frame, by)


def wilson_interval(successes: float, n: int) -> tuple[float, float]:
    """Return the 95% Wilson score interval ``(low, high)`` of a proportion, as fractions in [0, 1]."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denominator = 1 + _Z**2 / n
    centre = (p + _Z**2 / (2 * n)) / denominator
    half = _Z * math.sqrt(p * (1 - p) / n + _Z**2 / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(values, seed: int = 0, n_resamples: int = 2000,
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """Return ``(mean, low, high)``: the mean of ``values`` and its percentile bootstrap interval.

    ``scipy.stats.bootstrap`` over the values (samples, or concepts) with a fixed ``seed``, so the
    interval is reproducible; non-finite values are left out. Fewer than two values give NaN
    bounds; values that are all equal give the value itself as both bounds.
    """
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if len(x) < 2:
        return (mean, math.nan, math.nan)
    if np.ptp(x) == 0:
        return (mean, mean, mean)
    ci = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                         method="percentile", random_state=np.random.default_rng(seed)).confidence_interval
    return (mean, float(ci.low), float(ci.high))


def summarise(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Return one row per group of ``by``: accuracy and mean probability change with 95% CIs.

    Columns: ``*by``, ``n`` (rows), ``n_samples`` (distinct samples), ``accuracy`` (% correct, NaN
    without gold answers), ``accuracy_low`` / ``accuracy_high`` (Wilson 95% interval, %),
    ``accuracy_base`` (% of the group's samples correct without the intervention, with
    ``accuracy_base_low`` / ``accuracy_base_high``), ``change`` (mean %, ``change_low`` / ``change_high``: Student-t 95%
    interval), ``same_prediction`` (%), ``chance`` (mean, %) and ``flops_saved`` (mean %) where the
    frame has them.
    """
    rows = []
    for key, group in frame.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key), n=len(group))
        correct = pd.to_numeric(group["correct"], errors="coerce").dropna()
        low, high = wilson_interval(float(correct.sum()), len(correct))
        base = pd.to_numeric(group.drop_duplicates("sample")["correct_base"], errors="coerce").dropna()
        base_low, base_high = wilson_interval(float(base.sum()), len(base))
        row.update(n_samples=group["sample"].nunique(),
                   accuracy=100 * correct.mean() if len(correct) else math.nan, accuracy_low=100 * low,
                   accuracy_high=100 * high, accuracy_base=100 * base.mean() if len(base) else math.nan,
                   accuracy_base_low=100 * base_low, accuracy_base_high=100 * base_high)
        change = group["change"].astype(float)
        half = (stats.t.ppf(0.975, len(change) - 1) * change.std(ddof=1) / math.sqrt(len(change))
                if len(change) > 1 else math.nan)
        row.update(change=change.mean(), change_low=change.mean() - half, change_high=change.mean() + half,
                   same_prediction=100 * group["same_prediction"].astype(float).mean())
        for column in ("chance", "flops_saved"):
            if column in group:
                row[column] = (100 if column == "chance" else 1) * group[column].astype(float).mean()
        rows.append(row)
    return pd.DataFrame(rows)


# --- helpers --------------------------------------------------------------------------------
def _chances(samples: Iterable) -> list[float]:
    out = []
    for item in samples:
        options = item.get("options") if isinstance(item, dict) else getattr(item, "options", None)
        out.append(1 / len(options) if options else math.nan)
    return out


def _base(vlm, prepared: PreparedInputs, sample: Sample) -> tuple[int, float, float, torch.Tensor]:
    """Return ``(predicted, p_base, correct_base, logits)`` of the unmodified model.

    Its forward is the knockout engine's unmodified run (``_unmodified_run``): inside a
    ``sharing()`` block (one per sample in the sweeps below) ``drop_logits`` resumes from it.
    """
    logits = _unmodified_run(vlm, prepared).logits
    predicted = int(logits.argmax())
    return predicted, float(torch.softmax(logits, -1)[predicted]), _correct(vlm, prepared, sample, predicted), logits


def _unmodified_run(vlm, prepared: PreparedInputs) -> Unmodified:
    """Return ``analysis.probes.knockout.unmodified_run`` from position 0 (shared inside ``sharing()``).

    Inside a ``sharing()`` block the same forward also serves as ``analysis.probes.runners.unmodified``
    (the attribution ranking's): same logits, the ``inputs_embeds`` and the other keyword arguments
    the VLM passed its language model, so the vision tower runs once per sample.
    """
    def compute() -> Unmodified:
        run = unmodified_run(vlm, prepared, 0)
        if run.lm_kwargs is not None:  # outside a sharing() block the offer keeps nothing
            offer_unmodified(vlm, prepared, run.logits, run.lm_kwargs)
        return run

    return shared(("knockout unmodified from 0", *model_key(vlm.model, prepared)), compute)


def _correct(vlm, prepared: PreparedInputs, sample: Sample, predicted: int) -> float:
    """Return 1.0 / 0.0: whether ``predicted`` answers ``sample`` correctly (NaN without an answer).

    The answer's tokens are read once per input inside a ``sharing()`` block (a sweep asks for
    every configuration).
    """
    if sample.answer is None:
        return math.nan
    gold = shared(("answer tokens", *model_key(vlm.model, prepared), sample.answer),
                  lambda: answer_tokens(vlm, prepared.prompt, sample.answer))
    return float(is_correct(vlm, gold, predicted=predicted))


def drop_edges(prepared: PreparedInputs, dropped, layers: Iterable[int]) -> Edges:
    """Return the ``Edges`` that remove ``dropped`` positions from attention in ``layers``.

    Every other position's query is blocked from the dropped keys; the dropped positions' own
    queries are left alone (their outputs reach no kept position, and a fully masked row would
    give NaN).

    Args:
        prepared: the input.
        dropped: positions to remove, shape ``(n_dropped,)``, at least one.
        layers: decoder layers where they are gone (``range(K, n_layers)`` for a drop at ``K``).
    """
    dropped = torch.as_tensor(dropped, dtype=torch.long).flatten()
    everything = torch.arange(prepared.length)
    return Edges.make(dropped, everything[~torch.isin(everything, dropped)], layers)


def drop_logits(vlm, prepared: PreparedInputs, configs: Sequence[Sequence[Edges]], batch_size: int = 16) -> torch.Tensor:
    """Return the next-token logits at the last position under each edge configuration.

    The knockout engine (``analysis.probes.knockout.knockout_logits``) without a prefix cache
    (``reuse_prefix=False``: drops reach the image tokens themselves), resuming from one unmodified
    run per input (``_unmodified_run``, the forward that gives ``p_base``, shared inside
    ``sharing()``): the vision tower and projector run once, a configuration whose drops start at
    layer ``K`` runs the language model from layer ``K`` on (layers below as unmodified), and the
    empty configuration is the unmodified run's own logits. Memory: the unmodified run keeps the
    residual stream entering every decoder layer (``n_layers x T x hidden``).

    Returns:
        fp32 CPU tensor of shape ``(len(configs), vocab)``.
    """
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    return knockout_logits(vlm, prepared, configs, batch_size=batch_size, reuse_prefix=False,
                           unmodified=_unmodified_run(vlm, prepared))


def layer_flops(vlm, n_tokens: int) -> float:
    """Return the prefill FLOPs of one decoder layer over ``n_tokens`` tokens (analytic).

    ``2 n d (h dh + 2 kv dh)`` (q, k, v) ``+ 2 n h dh d`` (o) ``+ 4 n^2 h dh`` (scores and
    weighted values) ``+ 2 n d m x 3`` (gated MLP; ``x 2`` for a plain one), with ``d`` the
    hidden size, ``h`` / ``kv`` the query / key-value heads, ``dh`` the head dimension and ``m``
    the MLP width.
    """
    d, h, kv, dh, m, gated = _flops_terms(vlm)
    n = float(n_tokens)
    return 2 * n * d * (h * dh + 2 * kv * dh) + 2 * n * h * dh * d + 4 * n * n * h * dh + 2 * n * d * m * (3 if gated else 2)


_FLOPS_TERMS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _flops_terms(vlm) -> tuple[int, int, int, int, int, bool]:
    """Return ``(d, h, kv, dh, m, gated)`` of ``layer_flops``, read once per model (the sweeps ask per row)."""
    terms = _FLOPS_TERMS.get(vlm.model)
    if terms is None:
        config = vlm.text_config
        d, h, kv = vlm.hidden_size, vlm.n_heads, vlm.n_kv_heads
        dh = int(getattr(config, "head_dim", None) or d // h)
        m = int(getattr(config, "intermediate_size", None) or 4 * d)
        mlp = getattr(vlm.layers[0], "mlp", None)
        gated = mlp is not None and any(hasattr(mlp, name) for name in ("gate_proj", "gate_up_proj", "w1"))
        terms = _FLOPS_TERMS[vlm.model] = (d, h, kv, dh, m, gated)
    return terms


def flops_saved(vlm, length: int, dropped_per_layer: Sequence[int]) -> float:
    """Return the % of prefill FLOPs saved when ``dropped_per_layer[l]`` tokens are gone in layer ``l``.

    Args:
        vlm: the model (its decoder's sizes).
        length: the full sequence length ``T``.
        dropped_per_layer: ``(n_layers,)`` tokens removed in each decoder layer.
    """
    if len(dropped_per_layer) != vlm.n_layers:
        raise InputError(f"give one dropped count per decoder layer ({vlm.n_layers})")
    full = vlm.n_layers * layer_flops(vlm, length)
    pruned = sum(layer_flops(vlm, length - int(d)) for d in dropped_per_layer)
    return 100.0 * (1.0 - pruned / full)


def _drop_from(vlm, length: int, n_dropped: int, layer: int) -> float:
    return flops_saved(vlm, length, [0] * layer + [n_dropped] * (vlm.n_layers - layer))


def n_to_keep(keep: float, n: int) -> int:
    """Return how many of ``n`` tokens a keep fraction keeps: ``round(keep * n)``, halves up."""
    return int(math.floor(keep * n + 0.5))


def _order(scores: np.ndarray, positions: torch.Tensor) -> torch.Tensor:
    """Image positions by descending score; ties keep sequence order; NaN last."""
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    return positions[torch.from_numpy(np.argsort(-scores, kind="stable").copy())]


def _patch_positions(prepared: PreparedInputs) -> torch.Tensor:
    """Return the positions of the image tokens that are patches (no newline or special tokens)."""
    return torch.as_tensor(prepared.patches.loc[prepared.patches["kind"] == "patch", "position"].to_numpy().copy())


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def last_attention_scores(vlm, prepared: PreparedInputs, layers: Iterable[int], block: Sequence[Edges] = (),
                          unmodified: Unmodified | None = None) -> dict[int, np.ndarray]:
    """Return ``{layer: (n_image,)}`` head-averaged attention from the last position to each image token.

    One forward up to the highest of ``layers`` (the layers above it do not run); ``block`` applies
    edges while recording (PyramidDrop's later stages). With ``unmodified``, the input's
    ``unmodified_run`` from position 0 (``_unmodified_run``: inside the sweeps' ``sharing()`` blocks,
    the forward that gave ``p_base``), only the language model runs, from the lowest recorded or
    blocked layer, resumed from its kept residual stream: layers below it are the unmodified run's
    (the same attention, bit for bit).
    """
    layers = sorted({vlm.check_layer(l) for l in layers})
    recording = Recording(rows=torch.tensor([prepared.last_position]), cols=prepared.image_positions,
                          wanted=frozenset(layers), mean_heads=True)
    above = range(layers[-1] + 1, vlm.n_layers)  # dead work for the recording
    with torch.no_grad(), probing(vlm, record=recording, block=[list(block)]), skipping(vlm, above), \
            last_position_only(vlm):
        if unmodified is None or unmodified.lm_kwargs is None or unmodified.start != 0:
            vlm.model(**prepared.inputs, logits_to_keep=1)
        else:
            start = min([layers[0], *(min(e.layers) for e in block if e.layers)])
            with skipping(vlm, range(start)), editing(vlm, {Site("resid_pre", start): replace(
                    unmodified.states[start])}) if start else contextlib.nullcontext():
                vlm.language_model(**unmodified.lm_kwargs, use_cache=False)
    return {l: recording.layers[l][0, 0, 0].numpy().astype(float) for l in layers}


def _vision_tower(vlm):
    for owner in (vlm.model, getattr(vlm.model, "model", None)):
        tower = getattr(owner, "vision_tower", None)
        if tower is not None:
            return tower
    return None


def _cls_layout(vlm) -> str:
    """Return how ``cls_attention`` maps the tower's patches to image tokens: ``"single"`` (one tile,
    LLaVA-1.5) or ``"anyres"`` (LLaVA-NeXT's overview + unpadded tile grid); raise where it cannot."""
    tower = _vision_tower(vlm)
    has_cls = tower is not None and any(name.endswith("class_embedding") for name, _ in tower.named_parameters())
    if not has_cls:
        raise UnsupportedModelError(
            f"{vlm.name} ({vlm.family}): its vision tower has no [CLS] token (SigLIP, Qwen2-VL's and Idefics3's "
            "towers have none), so rank_by='cls_attention' is undefined; use 'last_attention', 'attribution', "
            "'random' or 'oracle'"
        )
    if vlm.family == "llava":
        layout = "single"
    elif (isinstance(vlm.adapter, LlavaNextAdapter)
          and type(vlm.adapter).high_res_boxes is LlavaNextAdapter.high_res_boxes):
        layout = "anyres"  # LLaVA-NeXT's geometry, not resampled (LLaVA-OneVision resamples large grids)
    else:
        raise UnsupportedModelError(
            f"rank_by='cls_attention' maps the tower's patches to image tokens for single-tile layouts "
            f"(LLaVA-1.5) and LLaVA-NeXT's any-res tiles only; {vlm.family}'s layout is not mapped; use another "
            "ranking"
        )
    if getattr(vlm.model.config, "vision_feature_select_strategy", "default") != "default":
        raise UnsupportedModelError("rank_by='cls_attention' needs vision_feature_select_strategy='default' "
                                    "(the [CLS] token dropped, one image token per patch)")
    return layout


def check_cls(vlm) -> None:
    """Raise ``UnsupportedModelError`` unless ``cls_attention`` can rank this model's image tokens."""
    _cls_layout(vlm)


def _cls_sources(vlm, prepared: PreparedInputs, layout: str) -> np.ndarray:
    """Return ``(n_image, 2)``: the tower tile and the patch within it of each image token, ``(-1, -1)``
    for tokens that are no patch (LLaVA-NeXT's newlines); from the adapter's own geometry."""
    patches = prepared.patches
    sources = np.full((len(patches), 2), -1, dtype=np.int64)
    tile, row, col = (patches[c].to_numpy() for c in ("tile", "row", "col"))
    is_patch = (patches["kind"] == "patch").to_numpy()
    base = is_patch & (tile == 0)
    cols = prepared.grids[0][1]
    sources[base] = np.stack([np.zeros(base.sum(), np.int64), row[base] * cols + col[base]], axis=1)
    if layout == "anyres":
        high = is_patch & (tile == 1)
        grid = vlm.adapter.high_res_sources(prepared.image.size)
        if 1 in prepared.grids and tuple(prepared.grids[1]) != grid.shape[:2]:
            raise UnsupportedModelError(f"the high-resolution grid has {prepared.grids[1]} cells but the tiles "
                                        f"give {grid.shape[:2]}; cls_attention cannot map them")
        sources[high] = grid[row[high].astype(int), col[high].astype(int)]
    if (sources[is_patch] < 0).any() or set(np.unique(tile[is_patch])) - ({0, 1} if layout == "anyres" else {0}):
        raise UnsupportedModelError(f"{vlm.family}: image tokens on tiles cls_attention does not map")
    return sources


def cls_attention_scores(vlm, prepared: PreparedInputs) -> np.ndarray:
    """Return ``(n_image,)`` the vision tower's [CLS] attention to each image token's patch.

    Read in the feature layer (``vision_feature_layer``, the layer whose output the projector
    takes), averaged over heads, from an eager run of the vision tower alone.

    Tiled layouts (LLaVA-NeXT: an overview tile, then the tiles of the high-resolution canvas,
    each encoded on its own): every tile's forward gives its own [CLS] row, and each image token
    takes its patch's entry in the row of the tile it came from, mapped by the adapter's geometry
    (``LlavaNextAdapter.high_res_sources``: the canvas cells left after the model's unpadding).
    The tiles' scores are compared as they are, one ranking over every image token: each is the
    share of its tile's [CLS] attention (a softmax over the same ``1 + side^2`` keys in every
    tile), so the units agree, and no tile's view is preferred. FasterVLM's own LLaVA-NeXT code
    instead keeps the same number of top tokens in every tile (before unpadding); a joint ranking
    lets a tile with concentrated attention keep more. Newline tokens get NaN (no score: ranked
    last, as every unscored token).
    """
    layout = _cls_layout(vlm)
    tower = _vision_tower(vlm)
    feature_layer = vlm.model.config.vision_feature_layer
    if isinstance(feature_layer, (list, tuple)):
        feature_layer = feature_layer[-1]
    feature_layer = int(feature_layer)
    if feature_layer == 0:
        raise UnsupportedModelError("vision_feature_layer 0 is the patch embedding: no [CLS] attention there")
    index = feature_layer if feature_layer < 0 else feature_layer - 1  # hidden_states[f] is layer f-1's output
    sources = _cls_sources(vlm, prepared, layout)
    pixel_values = prepared.inputs["pixel_values"]
    tiles = pixel_values[0] if layout == "anyres" else pixel_values  # (tiles, 3, H, W)
    n_tiles = int(sources[:, 0].max()) + 1
    if len(tiles) < n_tiles:
        raise UnsupportedModelError(f"the image tokens come from {n_tiles} tiles but pixel_values has {len(tiles)}")
    config = tower.config
    previous = config._attn_implementation_internal
    config._attn_implementation_internal = "eager"  # attention weights need eager attention
    rows = []
    try:
        with torch.no_grad():
            for t in range(n_tiles):  # one tile at a time: every layer's attention weights are kept
                out = tower(tiles[t: t + 1].to(vlm.dtype), output_attentions=True)
                rows.append(out.attentions[index][0, :, 0, 1:].float().mean(0).cpu())
                del out
    finally:
        config._attn_implementation_internal = previous
    cls = torch.stack(rows).numpy()
    per_tile = prepared.grids[0][0] * prepared.grids[0][1]
    if cls.shape[1] != per_tile or (sources[:, 1] >= per_tile).any():
        raise UnsupportedModelError(f"{cls.shape[1]} tower patches per tile for {per_tile} image tokens per tile; "
                                    "cls_attention needs one image token per patch")
    scores = np.full(len(sources), np.nan)
    scored = sources[:, 0] >= 0
    scores[scored] = cls[sources[scored, 0], sources[scored, 1]]
    return scores


def oracle_order(prepared: PreparedInputs, boxes, masks=None, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Return the image positions in ground-truth order: the question's related patches first.

    Related patches (overlapping any box, ``PreparedInputs.related_positions``) come first, taken
    in turn from each object (round robin), each object's patches by how much of the patch the
    object covers (its pixel mask when given, else its box), most covered first; then every other
    image token in random order. Ties are broken at random.

    Args:
        prepared: the input.
        boxes: the question's objects, ``(x0, y0, x1, y1)`` in original-image pixels.
        masks: optional ``(n_objects, H, W)`` bool masks of the same objects in original pixels.
        rng: breaks ties and orders the unrelated tokens (seeded ``default_rng(0)`` when None).

    Returns:
        ``(n_image,)`` LongTensor of positions.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    image = prepared.image_positions
    related = prepared.related_positions(boxes)
    boxes = np.asarray(list(boxes), dtype=float).reshape(-1, 4)
    p = prepared.patches.set_index("position").loc[related.numpy()]
    px = p[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
    area = np.maximum((px[:, 2] - px[:, 0]) * (px[:, 3] - px[:, 1]), 1e-9)
    if masks is not None and len(masks) == len(boxes):
        masks = np.asarray(masks, dtype=bool)
        h, w = masks.shape[1:]
        cover = np.zeros((len(masks), len(px)))
        for j, (x0, y0, x1, y1) in enumerate(px):
            a, b = int(np.clip(np.floor(y0), 0, h)), int(np.clip(np.ceil(y1), 0, h))
            c, d = int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.ceil(x1), 0, w))
            if b > a and d > c:
                cover[:, j] = masks[:, a:b, c:d].mean(axis=(1, 2))
    else:
        ix = np.clip(np.minimum(px[None, :, 2], boxes[:, None, 2]) - np.maximum(px[None, :, 0], boxes[:, None, 0]), 0, None)
        iy = np.clip(np.minimum(px[None, :, 3], boxes[:, None, 3]) - np.maximum(px[None, :, 1], boxes[:, None, 1]), 0, None)
        cover = ix * iy / area[None]
    shuffle = rng.permutation(len(px))
    per_object = [shuffle[np.argsort(-c[shuffle], kind="stable")] for c in cover]
    chosen: list[int] = []
    seen = set()
    for rank in range(len(px)):
        for order in per_object:
            j = int(order[rank])
            if j not in seen:
                seen.add(j)
                chosen.append(j)
    first = related[torch.as_tensor(chosen, dtype=torch.long)]
    rest = image[~torch.isin(image, related)]
    return torch.cat([first, rest[torch.from_numpy(rng.permutation(len(rest)))]])


def attribution_scores(vlm, prepared: PreparedInputs, target: int, **kwargs) -> np.ndarray:
    """Return ``(n_image,)`` attribution scores of ``target`` over the image tokens (``attribute``)."""
    from analysis.probes.attribution import attribute

    options = {**DEFAULT_ATTRIBUTION, **kwargs}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        # only the order matters here: no convergence delta (its two forwards), so no convergence note per sample
        return np.asarray(attribute(vlm, prepared, target=target, features="patches", convergence_delta=False,
                                    **options).image_scores, float)


# --- token redundancy -----------------------------------------------------------------------
def _check_common(vlm, drop_layers, keep, rank_by, batch_size):
    if isinstance(rank_by, str):
        rank_by = (rank_by,)
    rank_by = tuple(dict.fromkeys(rank_by))
    unknown = [r for r in rank_by if r not in RANKINGS]
    if unknown or not rank_by:
        raise InputError(f"unknown ranking {unknown or rank_by!r}; use any of {', '.join(RANKINGS)}")
    if drop_layers is None:  # the LLM's input and FastV's K = 2 (the last layer on shallower models)
        drop_layers = (0, min(2, vlm.n_layers - 1))
    if isinstance(drop_layers, (int, np.integer)):
        drop_layers = (drop_layers,)
    if not len(drop_layers):
        raise InputError("give at least one drop layer")
    drop_layers = tuple(sorted({vlm.check_layer(l) for l in drop_layers}))
    if isinstance(keep, (int, float)):
        keep = (keep,)
    keep = tuple(float(k) for k in keep)
    if not keep or any(not 0 <= k <= 1 or math.isnan(k) for k in keep):
        raise InputError(f"keep fractions must lie in [0, 1] (1.0 = every image token); got {keep}")
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    if rank_by == ("last_attention",) and drop_layers == (0,):
        raise InputError("last_attention ranks by the attention of layer K-1, which does not exist for K = 0; "
                         "give drop layers >= 1 or another ranking")
    return drop_layers, tuple(dict.fromkeys(keep)), rank_by


def token_redundancy(
    vlm,
    samples: Iterable,
    drop_layers: int | Sequence[int] | None = None,
    keep: float | Sequence[float] = DEFAULT_KEEP,
    rank_by: str | Sequence[str] = ("last_attention", "random"),
    *,
    seed: int = 0,
    attribution: dict | None = None,
    only_correct: bool = False,
    batch_size: int = 16,
    progress: bool = True,
) -> RedundancyResult:
    """Drop all but the top-ranked image tokens from decoder layer ``K`` on; measure the answer.

    Args:
        vlm: the model.
        samples: ``Sample`` objects, dicts or zoo samples (image, question, answer, boxes,
            question_type; zoo samples' ``options`` give ``chance``); see ``as_samples``.
        drop_layers: the layers ``K`` from which the dropped tokens are gone (0 = at the language
            model's input; FastV: 2). Negative values count from the end. Default None:
            ``(0, 2)`` (``(0, n_layers - 1)`` on shallower models).
        keep: fractions of the image tokens kept, each in ``[0, 1]``; default
            ``(1.0, 0.5, 0.25, 0.1, 0.05)``. ``1.0`` is the unmodified model.
        rank_by: one or more of ``RANKINGS`` (see the module docstring). Default
            ``("last_attention", "random")``.
        seed: seeds ``random`` and the order within ``oracle``'s two groups (per sample).
        attribution: keyword arguments for ``analysis.probes.attribute`` (the ``attribution``
            ranking); default ``DEFAULT_ATTRIBUTION``.
        only_correct: keep only samples the model answers correctly (needs answers).
        batch_size: configurations per forward.
        progress: show a progress bar over samples.

    Returns:
        A ``RedundancyResult`` (tidy ``frame``, one row per sample x ranking x drop layer x keep).

    Raises:
        InputError: unknown ranking, keep outside ``[0, 1]``, layer out of range, ``oracle``
            without boxes, ``only_correct`` without answers.
        UnsupportedModelError: ``cls_attention`` on a tower without [CLS] (or a layout it does not map).
    """
    drop_layers, keep, rank_by = _check_common(vlm, drop_layers, keep, rank_by, batch_size)
    raw = list(samples)
    chances = _chances(raw)
    masks = [getattr(item, "masks", None) if not isinstance(item, dict) else item.get("masks") for item in raw]
    samples = as_samples(raw)
    if "cls_attention" in rank_by:
        check_cls(vlm)
    for s in samples:
        if "oracle" in rank_by and not s.boxes:
            raise InputError(f"rank_by='oracle' needs each sample's ground-truth boxes (x0, y0, x1, y1); sample "
                             f"{s.id!r} has none: drop 'oracle' or give boxes")
        if only_correct and s.answer is None:
            raise InputError("only_correct=True needs each sample's answer; pass answers or only_correct=False")
    attribution = dict(attribution or {})
    rows, skipped, n_kept_samples = [], [], 0
    for index, (sample, chance) in enumerate(tqdm(list(zip(samples, chances)), desc="token redundancy",
                                                  disable=not progress)):
        with sharing(fresh=True):  # one unmodified forward per sample: the answer, the ranking, the drops
            prepared = vlm.prepare(sample.image, sample.question)
            predicted, p_base, correct_base, _ = _base(vlm, prepared, sample)
            if only_correct and correct_base != 1.0:
                continue
            n_kept_samples += 1
            image = prepared.image_positions
            n_image = len(image)
            related = prepared.related_positions(sample.boxes) if sample.boxes else None

            orders: dict[tuple[str, int], torch.Tensor] = {}
            layer_free = {}
            if "cls_attention" in rank_by:
                layer_free["cls_attention"] = _order(cls_attention_scores(vlm, prepared), image)
            if "attribution" in rank_by:
                layer_free["attribution"] = _order(attribution_scores(vlm, prepared, predicted, **attribution), image)
            if "random" in rank_by:
                layer_free["random"] = image[torch.from_numpy(_rng(seed, index).permutation(n_image))]
            if "oracle" in rank_by:
                if len(related) == 0:
                    skipped += [{"sample": sample.id, "ranking": "oracle", "drop_layer": k,
                                 "reason": "the question's objects overlap no image patch"} for k in drop_layers]
                else:
                    layer_free["oracle"] = oracle_order(prepared, sample.boxes, masks[index], _rng(seed, index))
            if "last_attention" in rank_by:
                wanted = [k - 1 for k in drop_layers if k > 0]
                attention = last_attention_scores(vlm, prepared, wanted, unmodified=_unmodified_run(vlm, prepared)) \
                    if wanted else {}
                for k in drop_layers:
                    if k == 0:
                        skipped.append({"sample": sample.id, "ranking": "last_attention", "drop_layer": 0,
                                        "reason": "no layer before layer 0 to rank by"})
                    else:
                        orders[("last_attention", k)] = _order(attention[k - 1], image)
            for name, order in layer_free.items():
                for k in drop_layers:
                    orders[(name, k)] = order

            configs, index_of, meta = [[]], {(): 0}, []
            for (name, k), order in orders.items():
                for fraction in keep:
                    n_kept = n_to_keep(fraction, n_image)
                    dropped = order[n_kept:]
                    key = (k, tuple(sorted(dropped.tolist()))) if len(dropped) else ()
                    if key not in index_of:
                        index_of[key] = len(configs)
                        configs.append([drop_edges(prepared, dropped, range(k, vlm.n_layers))])
                    kept = order[:n_kept]
                    meta.append((name, k, fraction, n_kept, index_of[key],
                                 int(torch.isin(kept, related).sum()) if related is not None else math.nan,
                                 _drop_from(vlm, prepared.length, len(dropped), k)))
            logits = drop_logits(vlm, prepared, configs, batch_size=batch_size)
            probs = torch.softmax(logits, -1)[:, predicted]
            new_predictions = logits.argmax(-1).tolist()
            correct = [_correct(vlm, prepared, sample, p) for p in new_predictions]
            answer = vlm.tokenizer.decode([predicted]).strip()
            for name, k, fraction, n_kept, c, related_kept, saved in meta:
                p_new = float(probs[c])
                rows.append({
                    "sample": sample.id, "question_type": sample.question_type, "ranking": name, "drop_layer": k,
                    "keep": fraction, "n_image": n_image, "n_kept": n_kept,
                    "n_related": len(related) if related is not None else math.nan, "related_kept": related_kept,
                    "answer": answer, "p_base": p_base, "p_new": p_new, "change": 100.0 * (p_new - p_base) / p_base,
                    "correct_base": correct_base, "correct": correct[c],
                    "same_prediction": new_predictions[c] == predicted,
                    "chance": chance, "flops_saved": saved,
                })
    if only_correct and n_kept_samples == 0:
        raise InputError(f"none of the {len(samples)} samples was answered correctly; nothing to drop")
    frame = pd.DataFrame(rows, columns=REDUNDANCY_COLUMNS)
    return RedundancyResult(frame, n_samples=len(samples), n_kept_samples=n_kept_samples, rankings=rank_by,
                            drop_layers=drop_layers, keep=keep, skipped=skipped)


def drop_region(
    vlm,
    samples: Iterable,
    drop_layers: int | Sequence[int] = (0,),
    *,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> RegionDropResult:
    """Drop the question's own image tokens from layer ``K`` on, against as many other image tokens.

    The ground-truth check of the rankings: on a model whose vision tower does not mix patches
    (``zoo:shapes-llava-local``) dropping the related tokens from layer 0 must bring accuracy to
    chance, dropping as many others must leave it intact.

    Args:
        vlm: the model.
        samples: samples with ``boxes`` (and answers, for accuracy).
        drop_layers: layers ``K`` to drop from; default ``(0,)`` (the language model's input).
        seed: seeds the choice of the other tokens (per sample).
        batch_size, progress: as for ``token_redundancy``.

    Returns:
        A ``RegionDropResult``.
    """
    drop_layers, _, _ = _check_common(vlm, drop_layers, (1.0,), ("random",), batch_size)
    raw = list(samples)
    chances = _chances(raw)
    samples = as_samples(raw)
    rows, skipped = [], []
    for index, (sample, chance) in enumerate(tqdm(list(zip(samples, chances)), desc="region drop",
                                                  disable=not progress)):
        with sharing(fresh=True):  # one unmodified forward per sample: the answer, the ranking, the drops
            if not sample.boxes:
                raise InputError(f"sample {sample.id!r} has no boxes; drop_region needs the question's ground-truth "
                                 "region")
            prepared = vlm.prepare(sample.image, sample.question)
            image = prepared.image_positions
            related = prepared.related_positions(sample.boxes)
            patch = _patch_positions(prepared)
            others = patch[~torch.isin(patch, related)]
            if len(related) == 0 or len(others) == 0:
                skipped.append(sample.id)
                continue
            other = others[torch.from_numpy(_rng(seed, index).permutation(len(others))[: len(related)])]
            predicted, p_base, correct_base, _ = _base(vlm, prepared, sample)
            configs, meta = [], []
            for k in drop_layers:
                for name, dropped in (("related", related), ("other", other)):
                    configs.append([drop_edges(prepared, dropped, range(k, vlm.n_layers))])
                    meta.append((k, name, len(dropped)))
            logits = drop_logits(vlm, prepared, configs, batch_size=batch_size)
            probs = torch.softmax(logits, -1)[:, predicted]
            answer = vlm.tokenizer.decode([predicted]).strip()
            for (k, name, n), p, new in zip(meta, probs.tolist(), logits.argmax(-1).tolist()):
                rows.append({"sample": sample.id, "question_type": sample.question_type, "drop_layer": k,
                             "dropped": name,
                             "n_image": len(image), "n_dropped": n, "answer": answer, "p_base": p_base, "p_new": p,
                             "change": 100.0 * (p - p_base) / p_base, "correct_base": correct_base,
                             "correct": _correct(vlm, prepared, sample, new), "same_prediction": new == predicted,
                             "chance": chance, "flops_saved": _drop_from(vlm, prepared.length, n, k)})
    if not rows:
        raise InputError("no sample has both related and other image patches (the objects cover no patch or "
                         "every patch); use other samples")
    return RegionDropResult(pd.DataFrame(rows, columns=REGION_DROP_COLUMNS), n_samples=len(samples), skipped=skipped)


def pyramid_stages(n_layers: int, n_stages: int = 4) -> tuple[int, ...]:
    """Return PyramidDrop's stage boundaries: the layers where a stage ends and tokens are dropped.

    ``n_stages`` equal stages (4 for LLaVA-1.5's 32 layers: drops at 8, 16, 24); with fewer layers
    than stages, a drop after every layer.
    """
    if n_stages < 2:
        raise InputError("PyramidDrop needs at least 2 stages")
    step = max(1, n_layers // n_stages)
    return tuple(range(step, n_layers, step))[: n_stages - 1]


def pyramid_drop(
    vlm,
    samples: Iterable,
    ratios: float | Sequence[float] = (0.5,),
    stages: Sequence[int] | None = None,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """PyramidDrop: at the end of each stage keep ``ratio`` of the remaining image tokens.

    At each boundary layer ``b`` the remaining image tokens are ranked by the last position's
    head-averaged attention at layer ``b - 1`` (recorded with the earlier stages' drops in place),
    and the lowest ``1 - ratio`` are gone from layer ``b`` on.

    Args:
        vlm, samples: as for ``token_redundancy``.
        ratios: the fraction kept at each boundary, each in ``(0, 1]`` (the paper: 0.5).
        stages: boundary layers (each ``>= 1``), ascending; default ``pyramid_stages(n_layers)``.
        batch_size, progress: as for ``token_redundancy``.

    Returns:
        Tidy DataFrame, one row per sample x ratio (``PYRAMID_COLUMNS``): ``stages`` the
        boundaries as text, ``n_kept_final`` image tokens left after the last boundary,
        ``kept_mean`` the mean kept fraction over the decoder layers, other columns as in
        ``RedundancyResult.frame``.
    """
    if isinstance(ratios, (int, float)):
        ratios = (ratios,)
    ratios = tuple(float(r) for r in ratios)
    if not ratios or any(not 0 < r <= 1 for r in ratios):
        raise InputError(f"PyramidDrop ratios must lie in (0, 1]; got {ratios}")
    stages = pyramid_stages(vlm.n_layers) if stages is None else tuple(vlm.check_layer(s) for s in stages)
    if not stages or any(s < 1 for s in stages) or list(stages) != sorted(set(stages)):
        raise InputError(f"stages are ascending decoder layers >= 1 (this model: 1..{vlm.n_layers - 1}); got {stages}")
    raw = list(samples)
    chances = _chances(raw)
    rows = []
    for sample, chance in tqdm(list(zip(as_samples(raw), chances)), desc="PyramidDrop", disable=not progress):
        with sharing(fresh=True):  # one unmodified forward per sample: the answer, the ranking, the drops
            prepared = vlm.prepare(sample.image, sample.question)
            predicted, p_base, correct_base, _ = _base(vlm, prepared, sample)
            run = _unmodified_run(vlm, prepared)  # _base's: the recordings resume from it
            image = prepared.image_positions
            schedules, unblocked = [], {}  # unblocked: recordings without drops, the same for every ratio
            for ratio in ratios:
                edges, remaining, dropped_per_layer = [], image, [0] * vlm.n_layers
                for b in stages:
                    if edges:
                        attention = last_attention_scores(vlm, prepared, [b - 1], edges, run)[b - 1]
                    else:
                        if b not in unblocked:
                            unblocked[b] = last_attention_scores(vlm, prepared, [b - 1], unmodified=run)[b - 1]
                        attention = unblocked[b]
                    scores = attention[torch.isin(image, remaining).numpy()]
                    order = _order(scores, remaining)
                    n_kept = n_to_keep(ratio, len(remaining))
                    if n_kept < len(remaining):
                        edges.append(drop_edges(prepared, order[n_kept:], range(b, vlm.n_layers)))
                        for layer in range(b, vlm.n_layers):
                            dropped_per_layer[layer] += len(remaining) - n_kept
                    remaining = order[:n_kept].sort().values
                schedules.append((ratio, edges, len(remaining), dropped_per_layer))
            logits = drop_logits(vlm, prepared, [s[1] for s in schedules], batch_size=batch_size)
            probs = torch.softmax(logits, -1)[:, predicted]
            answer = vlm.tokenizer.decode([predicted]).strip()
            for (ratio, _, n_final, dropped), p, new in zip(schedules, probs.tolist(), logits.argmax(-1).tolist()):
                rows.append({"sample": sample.id, "question_type": sample.question_type, "ratio": ratio,
                             "stages": ",".join(map(str, stages)), "n_image": len(image), "n_kept_final": n_final,
                             "kept_mean": float(np.mean([1 - d / len(image) for d in dropped])), "answer": answer,
                             "p_base": p_base, "p_new": p, "change": 100.0 * (p - p_base) / p_base,
                             "correct_base": correct_base, "correct": _correct(vlm, prepared, sample, new),
                             "same_prediction": new == predicted, "chance": chance,
                             "flops_saved": flops_saved(vlm, prepared.length, dropped)})
    return pd.DataFrame(rows, columns=PYRAMID_COLUMNS)


def permute_image_tokens(
    vlm,
    samples: Iterable,
    n_permutations: int = 1,
    *,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """Shuffle the image tokens entering the language model; measure the answer ("global processing").

    The image patch tokens' embeddings (site ``embed``, after the projector) are permuted among the
    image patch positions; position ids, special and newline tokens stay where they are.

    Args:
        vlm, samples: as for ``token_redundancy``.
        n_permutations: seeded permutations per sample (run as one batch).
        seed: seeds the permutations (per sample).
        batch_size, progress: as for ``token_redundancy``.

    Returns:
        Tidy DataFrame, one row per sample x permutation (``PERMUTE_COLUMNS``); ``n_permuted``
        is the number of image patch tokens shuffled.
    """
    if n_permutations < 1 or batch_size < 1:
        raise InputError("n_permutations and batch_size must be at least 1")
    raw = list(samples)
    chances = _chances(raw)
    rows = []
    for index, (sample, chance) in enumerate(tqdm(list(zip(as_samples(raw), chances)), desc="permute image tokens",
                                                  disable=not progress)):
        with sharing(fresh=True):  # one unmodified forward per sample: the answer, the ranking, the drops
            prepared = vlm.prepare(sample.image, sample.question)
            predicted, p_base, correct_base, _ = _base(vlm, prepared, sample)
            patch = _patch_positions(prepared)
            rng = _rng(seed, index)
            perms = [patch[torch.from_numpy(rng.permutation(len(patch)))] for _ in range(n_permutations)]
            logits = []
            for start in range(0, n_permutations, batch_size):
                chunk = perms[start: start + batch_size]

                def shuffle(state: torch.Tensor, chunk=chunk) -> torch.Tensor:
                    out = state.clone()
                    for b, source in enumerate(chunk):
                        out[b, patch.to(state.device)] = state[b, source.to(state.device)]
                    return out

                with torch.no_grad(), editing(vlm, {"embed": shuffle}), last_position_only(vlm):
                    out = vlm.model(**vlm.adapter.repeat(prepared.inputs, len(chunk)), logits_to_keep=1).logits
                logits.append(out[:, -1].float().cpu())
            logits = torch.cat(logits)
            probs = torch.softmax(logits, -1)[:, predicted]
            answer = vlm.tokenizer.decode([predicted]).strip()
            for j, (p, new) in enumerate(zip(probs.tolist(), logits.argmax(-1).tolist())):
                rows.append({"sample": sample.id, "question_type": sample.question_type, "permutation": j,
                             "n_permuted": len(patch), "answer": answer, "p_base": p_base, "p_new": p,
                             "change": 100.0 * (p - p_base) / p_base, "correct_base": correct_base,
                             "correct": _correct(vlm, prepared, sample, new), "same_prediction": new == predicted,
                             "chance": chance})
    return pd.DataFrame(rows, columns=PERMUTE_COLUMNS)
