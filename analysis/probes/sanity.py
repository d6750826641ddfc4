"""Sanity checks for any per-image-token map: randomisation, localisation, deletion, comparison.

A *map method* is anything that turns ``(vlm, prepared, token)`` into one score per image token
(``MapMethod``): attention of the last position at a layer, attention rollout, and every captum
attribution of ``analysis.probes.attribution``. On the same samples (by default only those the
model answers correctly; the explained token is the model's answer) this module measures:

- **Cascading model-parameter randomisation** (Adebayo et al., "Sanity Checks for Saliency
  Maps", NeurIPS 2018). On a deep copy of the model, the language model's decoder layers are
  re-initialised from the top down, then the projector, then the vision tower, cumulatively; after
  each stage every method's map is recomputed and compared with the original map by Spearman
  rank correlation of the absolute scores over the patch tokens. Re-initialising redraws every
  weight tensor i.i.d. from a normal with that tensor's own mean and standard deviation (the
  scale survives, the learned structure does not; constant tensors such as untrained norm
  weights stay as they are). A map that still correlates after everything is randomised
  explains the input, not the model: ``comparison_table`` flags it.
- **Localisation** against ground-truth boxes (``analysis.models.localisation``): the pointing
  game (is the arg-max patch related) and the share of the map's positive mass on related
  patches over their share of the area.
- **Deletion** (faithfulness): the ``k`` patches a map ranks highest are knocked out (attention
  from every other position to them is blocked in every layer, with the attention backend,
  exactly) and the relative drop of the answer's probability is compared with knocking out
  ``k`` random patches (the same draws for every method).

``sanity_report`` runs all of them and builds the comparison table (methods as rows).

Cost: every method runs once per kept sample on the model and once per sample and evaluated
stage of the cascade (``1 + stages`` model states). Per model state and sample, the methods share
what they have in common (``analysis.probes.sharing``): one unmodified forward (the answer, its
log-probability, the language model's inputs), one recorded forward for every attention row, one
gradient for Saliency and InputXGradient; the perturbation methods run batched (see
``analysis.probes.runners``). Results are identical to running each method alone. The cascade's
decoder-layer stages run one sample at a time, each with the original weights below its first
redrawn layer, and the perturbation methods' forwards start at that layer from the states the
original model's forwards kept (``analysis.probes.lower_states``; at most 1 GiB per sample): the
stage that redraws layers ``k..L-1`` computes ``L - k`` of the ``L`` layers. The result is the
plain cascade's, bit for bit (tested).
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm.auto import tqdm

from analysis.data.samples import Sample, as_samples
from analysis.errors import InputError, UnsupportedModelError
from analysis.models import VLM, PreparedInputs
from analysis.models.answers import answer_tokens, is_correct
from analysis.models.localisation import localisation_scores, positive_part
from analysis.probes.attention import attention_maps
from analysis.probes.attribution import attribute, grid_segments, input_side
from analysis.probes.backend import Edges
from analysis.probes.flow import knockout_probs
from analysis.probes.lower_states import LowerStates, keeping
from analysis.probes.runners import unmodified
from analysis.probes.sharing import active, model_key, shared, sharing

PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger")
VISION_NAMES = ("vision_tower", "visual", "vision_model")
SURVIVAL_THRESHOLD = 0.5

MapFunction = Callable[[VLM, PreparedInputs, int], np.ndarray]


@dataclass(frozen=True)
class MapMethod:
    """A named way to score image tokens.

    Attributes:
        name: row label in tables and figures, e.g. ``"attention L3"``.
        kind: ``"attention"``, ``"gradient"``, ``"perturbation"`` or any label of your own.
        compute: ``(vlm, prepared, token) -> (n_image,)`` scores, one per image token in sequence
            order; ``token`` is the vocabulary id being explained (attention ignores it).
    """

    name: str
    kind: str
    compute: MapFunction


def attention_method(layer: int, name: str | None = None) -> MapMethod:
    """Return the head-averaged attention of the last position to the image at ``layer``.

    Inside ``analysis.probes.sharing.sharing()`` (as ``compute_maps`` and ``randomisation`` run
    the methods) one recorded forward of every layer's last row serves every attention method.
    """

    def compute(vlm, prepared, token):
        index = vlm.check_layer(layer)
        if active():
            maps = shared(("attention rows", *model_key(vlm.model, prepared)),
                          lambda: attention_maps(vlm, prepared, layers=None, query="last"))
        else:
            maps = attention_maps(vlm, prepared, layers=[index], query="last")
        return maps.image_map(layer=index)

    return MapMethod(name or f"attention L{layer}", "attention", compute)


def rollout_method(layer: int = -1, name: str | None = None) -> MapMethod:
    """Return attention rollout (Abnar & Zuidema) of the last position up to ``layer``."""

    def compute(vlm, prepared, token):
        index = vlm.check_layer(layer)
        maps = attention_maps(vlm, prepared, layers=[index], query="last", rollout=True)
        return maps.image_map(layer=index, kind="rollout")

    return MapMethod(name or "rollout", "attention", compute)


def attribution_method(method: str, name: str | None = None, block: int = 1, **options) -> MapMethod:
    """Return a captum attribution (``analysis.probes.attribution.attribute``) as a map method.

    Args:
        method: one of ``analysis.probes.attribution.METHODS``.
        name: row label (default: the method name).
        block: with the default ``features="patches"``, attribute to cells of ``block x block``
            patches of each input's grid (``grid_segments``; every token reports its cell's score)
            instead of to every patch; 1 (default) keeps every patch.
        **options: passed to ``attribute`` (``features``, ``perturb``, ``n_steps``, ...).
    """
    kind = "perturbation" if method in ("occlusion", "kernel_shap") else "gradient"
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise InputError(f"block must be a positive integer; got {block!r}")
    if block > 1 and "features" in options:
        raise InputError("block applies to the default patch features; pass either block or features")

    def compute(vlm, prepared, token):
        features = grid_segments(prepared, block) if block > 1 else options.get("features", "patches")
        return attribute(vlm, prepared, target=token, method=method,
                         **{**options, "features": features}).image_scores

    return MapMethod(name or method, kind, compute)


def default_methods(vlm: VLM, attention_layers: Sequence[int] | None = None, n_steps: int = 64,
                    n_samples: int = 256, batch_size: int = 16, perturbation_block: int = 1) -> list[MapMethod]:
    """Return the comparison's rows: attention at a few layers, rollout, IG, saliency, InputXGradient,
    occlusion and KernelSHAP (pixel perturbation of every patch, or of patch cells).

    IG integrates from the mean of the image-token embeddings (``baseline="mean"``), not from the
    zero vector: zero is far from every embedding the LLM sees, and on ``zoo:shapes-llava-local``
    (78 correctly answered questions) it put the arg-max on the question's objects in 76% of
    them, against 91% from the mean.

    Args:
        vlm: the model (for its depth).
        attention_layers: layers of the attention rows (default: first, middle and last).
        n_steps, n_samples, batch_size: passed to the attributions (IG's steps, KernelSHAP's
            coalitions, inputs per forward).
        perturbation_block: occlusion and KernelSHAP perturb cells of ``block x block`` patches
            (``attribution_method``'s ``block``); 1 (default): every patch. Occlusion runs one
            forward per cell, so a model with many patches (LLaVA-1.5: 576) costs 576 forwards per
            map at 1 and 64 at 3.
    """
    n = vlm.n_layers
    layers = sorted({0, n // 2, n - 1}) if attention_layers is None else [vlm.check_layer(l) for l in attention_layers]
    return [
        *(attention_method(layer) for layer in layers),
        rollout_method(n - 1),
        attribution_method("integrated_gradients", "IG", n_steps=n_steps, batch_size=batch_size, baseline="mean"),
        attribution_method("saliency"),
        attribution_method("input_x_gradient", "InputXGradient"),
        attribution_method("occlusion", block=perturbation_block, batch_size=batch_size),
        attribution_method("kernel_shap", "KernelSHAP", block=perturbation_block, n_samples=n_samples,
                           batch_size=batch_size),
    ]


@dataclass
class MapSet:
    """Every method's map on every kept sample, from one model.

    Attributes:
        methods: the map methods, in table order.
        samples: the kept samples.
        prepared: their prepared inputs.
        tokens: the explained token per sample (the model's greedy answer).
        maps: ``{method name: [(n_image,) array per sample]}``.
        seconds: tidy frame ``sample, method, seconds`` (wall-clock time of each map).
        n_samples: samples given, before keeping the correctly answered ones.
    """

    methods: list[MapMethod]
    samples: list[Sample]
    prepared: list[PreparedInputs]
    tokens: list[int]
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    seconds: pd.DataFrame | None = None
    n_samples: int = 0


def _check_methods(methods: Iterable[MapMethod]) -> list[MapMethod]:
    methods = list(methods)
    if not methods or not all(isinstance(m, MapMethod) for m in methods):
        raise InputError("methods must be a non-empty list of MapMethod (see default_methods)")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise InputError(f"method names must be unique; got {names}")
    return methods


def _compute(method: MapMethod, vlm: VLM, prepared: PreparedInputs, token: int) -> np.ndarray:
    """Run one map method and check that it gives one finite-or-NaN score per image token."""
    scores = method.compute(vlm, prepared, token)
    scores = np.asarray(scores.detach().float().cpu() if torch.is_tensor(scores) else scores, dtype=float)
    if scores.shape != (len(prepared.patches),):
        raise InputError(f"map method {method.name!r} returned shape {scores.shape}; expected "
                         f"({len(prepared.patches)},), one score per image token")
    return scores


def compute_maps(vlm: VLM, samples: Iterable, methods: Iterable[MapMethod] | None = None,
                 only_correct: bool = True, progress: bool = True) -> MapSet:
    """Return every method's map on every (correctly answered) sample.

    Args:
        vlm: the model.
        samples: ``Sample`` objects, dicts or zoo samples (see ``as_samples``).
        methods: map methods (default: ``default_methods(vlm)``).
        only_correct: keep only correctly answered samples (rule ``"first_token"`` of
            ``analysis.models.answers``).
        progress: show a progress bar over samples.
    """
    return _maps(vlm, samples, methods, only_correct, progress)


def _maps(vlm: VLM, samples: Iterable, methods: Iterable[MapMethod] | None, only_correct: bool, progress: bool,
          then: Callable[[int, PreparedInputs, int, LowerStates], None] | None = None) -> MapSet:
    """``compute_maps``; with ``then``, each kept sample's perturbation forwards keep their lower layers'
    states (``LowerStates``), handed to ``then(index, prepared, token, states)`` right after its maps."""
    methods = _check_methods(default_methods(vlm) if methods is None else methods)
    samples = as_samples(samples)
    out = MapSet(methods=methods, samples=[], prepared=[], tokens=[], maps={m.name: [] for m in methods},
                 n_samples=len(samples))
    seconds = []
    for sample in tqdm(samples, desc="maps", disable=not progress):
        prepared = vlm.prepare(sample.image, sample.question)
        states = LowerStates() if then is not None else None
        with sharing(fresh=True), keeping(states) if states is not None else contextlib.nullcontext():
            token = int(unmodified(vlm, prepared).logits.argmax())  # one forward serves the answer and every method
            if only_correct:
                if sample.answer is None:
                    raise InputError("only_correct=True needs each sample's answer; pass answers or only_correct=False")
                if not is_correct(vlm, answer_tokens(vlm, prepared.prompt, sample.answer), predicted=token):
                    continue
            out.samples.append(sample)
            out.prepared.append(prepared)
            out.tokens.append(token)
            for method in methods:
                started = time.perf_counter()
                out.maps[method.name].append(_compute(method, vlm, prepared, token))
                seconds.append({"sample": sample.id, "method": method.name, "seconds": time.perf_counter() - started})
        if then is not None:
            then(len(out.samples) - 1, prepared, token, states)
    if not out.samples:
        raise InputError(f"none of the {len(samples)} samples was answered correctly; nothing to explain")
    out.seconds = pd.DataFrame(seconds)
    return out


# --- localisation -------------------------------------------------------------------------------
def localisation(maps: MapSet) -> pd.DataFrame:
    """Return localisation scores, one row per sample x method.

    Columns: ``sample, method, hit`` (pointing game), ``share`` (positive mass on related
    patches), ``area_share`` (their share of the area), ``ratio`` (``share / area_share``).
    """
    rows = []
    for i, (sample, prepared) in enumerate(zip(maps.samples, maps.prepared)):
        if not sample.boxes:
            raise InputError(f"sample {sample.id!r} has no ground-truth boxes; localisation needs them")
        for method in maps.methods:
            scores = localisation_scores(prepared, positive_part(maps.maps[method.name][i]), sample.boxes)
            rows.append({"sample": sample.id, "method": method.name, "hit": bool(scores["hit"]),
                         "share": float(scores["share"]), "area_share": float(scores["area_share"]),
                         "ratio": float(scores["ratio"])})
    return pd.DataFrame(rows)


# --- deletion -----------------------------------------------------------------------------------
def top_patches(prepared: PreparedInputs, scores: np.ndarray, k: int) -> np.ndarray:
    """Return the positions of the ``k`` patch tokens with the highest finite scores (ties: earlier first)."""
    patch = (prepared.patches["kind"].to_numpy() == "patch") & np.isfinite(scores)
    candidates = np.flatnonzero(patch)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    return prepared.patches["position"].to_numpy()[order[:k]]


def knockout_edges(vlm: VLM, prepared: PreparedInputs, positions) -> Edges:
    """Return edges that cut ``positions`` off: no other position attends to them, in any layer."""
    positions = torch.as_tensor(np.asarray(positions), dtype=torch.long)
    others = torch.arange(prepared.length)[~torch.isin(torch.arange(prepared.length), positions)]
    return Edges.make(positions, others, range(vlm.n_layers))


def deletion(vlm: VLM, maps: MapSet, k: int | float = 0.1, n_random: int = 8, seed: int = 0,
             batch_size: int = 16) -> pd.DataFrame:
    """Return the answer-probability drop when each map's top-``k`` patches are knocked out.

    Args:
        vlm: the model the maps were computed on.
        maps: from ``compute_maps``.
        k: patches removed: a count, or a fraction of each input's patch tokens (at least 1).
        n_random: random ``k``-sets per sample (shared by every method).
        seed: seeds the random sets.
        batch_size: knockout configurations per forward.

    Returns:
        One row per sample x method: ``sample, method, k, p_base, p_top, p_random`` (mean over the
        random sets), ``drop_top`` and ``drop_random`` in percent of ``p_base``.
    """
    if n_random < 1:
        raise InputError("n_random must be at least 1")
    rng = np.random.default_rng(seed)
    rows = []
    for i, (sample, prepared, token) in enumerate(zip(maps.samples, maps.prepared, maps.tokens)):
        patch_positions = prepared.patches["position"].to_numpy()[prepared.patches["kind"].to_numpy() == "patch"]
        n = len(patch_positions)
        count = int(k) if isinstance(k, (int, np.integer)) else max(1, int(round(k * n)))
        if not 1 <= count <= n:
            raise InputError(f"k must select between 1 and {n} patches; got {k!r}")
        random_sets = [rng.choice(patch_positions, size=count, replace=False) for _ in range(n_random)]
        tops = [top_patches(prepared, maps.maps[m.name][i], count) for m in maps.methods]
        configs = [[]] + [[knockout_edges(vlm, prepared, p)] for p in tops + random_sets]
        probs = knockout_probs(vlm, prepared, configs, token, batch_size=batch_size).numpy().astype(float)
        p_base, p_top, p_random = probs[0], probs[1:1 + len(tops)], probs[1 + len(tops):].mean()
        for method, p in zip(maps.methods, p_top):
            rows.append({"sample": sample.id, "method": method.name, "k": count, "p_base": p_base, "p_top": p,
                         "p_random": p_random, "drop_top": 100 * (p_base - p) / p_base,
                         "drop_random": 100 * (p_base - p_random) / p_base})
    return pd.DataFrame(rows)


# --- cascading randomisation --------------------------------------------------------------------
def _find(model: torch.nn.Module, names: tuple[str, ...]) -> torch.nn.Module | None:
    """Return the first submodule whose attribute name is one of ``names``."""
    return next((m for path, m in model.named_modules() if path.rsplit(".", 1)[-1] in names), None)


def randomisation_stages(vlm: VLM) -> list[tuple[str, list[torch.nn.Parameter]]]:
    """Return the cascade, in order: each stage's name and the parameters it re-initialises.

    Stages: ``"LLM layer {L-1}"`` down to ``"LLM layer 0"``, ``"projector"``, ``"vision tower"``
    (the vision tower's parameters that are not the projector's, e.g. Qwen2-VL's merger).
    """
    projector, vision = _find(vlm.model, PROJECTOR_NAMES), _find(vlm.model, VISION_NAMES)
    if projector is None or vision is None:
        raise UnsupportedModelError(
            f"{type(vlm.model).__name__}: cannot find the projector ({', '.join(PROJECTOR_NAMES)}) or the "
            f"vision tower ({', '.join(VISION_NAMES)}) for cascading randomisation"
        )
    stages = [(f"LLM layer {i}", list(vlm.layers[i].parameters())) for i in reversed(range(vlm.n_layers))]
    projector_ids = {id(p) for p in projector.parameters()}
    stages.append(("projector", list(projector.parameters())))
    stages.append(("vision tower", [p for p in vision.parameters() if id(p) not in projector_ids]))
    return stages


@torch.no_grad()
def reinitialise(parameters: Iterable[torch.nn.Parameter], seed: int) -> None:
    """Redraw each tensor in place from a normal with its own mean and std (constant tensors stay)."""
    generator = torch.Generator().manual_seed(seed)
    for p in parameters:
        values = p.detach().float()
        std = float(values.std()) if p.numel() > 1 else 0.0
        if std > 0:
            drawn = torch.randn(p.shape, generator=generator) * std + float(values.mean())
            p.copy_(drawn.to(device=p.device, dtype=p.dtype))


def rank_correlation(prepared: PreparedInputs, a: np.ndarray, b: np.ndarray) -> float:
    """Return Spearman's rho between ``|a|`` and ``|b|`` over patch tokens finite in both (NaN if constant)."""
    keep = (prepared.patches["kind"].to_numpy() == "patch") & np.isfinite(a) & np.isfinite(b)
    x, y = np.abs(a[keep]), np.abs(b[keep])
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic)


class _LayerWeights:
    """A copied decoder layer's parameters, switchable by reference between its own (redrawn) and the
    original layer's (no copy; the modules, their hooks and their config stay the copy's)."""

    def __init__(self, copied: torch.nn.Module, original: torch.nn.Module):
        self.slots = [(module, name, own, original_module._parameters[name])
                      for module, original_module in zip(copied.modules(), original.modules())
                      for name, own in module._parameters.items() if own is not None]

    def use(self, original: bool) -> None:
        for module, name, own, theirs in self.slots:
            module._parameters[name] = theirs if original else own


class _Cascade:
    """A deep copy of the model, randomised stage by stage, and the maps each evaluated stage gives.

    Every decoder layer is redrawn up front (the same draws as stage by stage: a stage redraws its
    own tensors only, from their own statistics). ``decoder_stages`` runs one sample through the
    decoder-layer stages, each with the original weights (``vlm``'s, by reference) below its first
    redrawn layer; ``later_stages`` then redraws the projector and the vision tower, cumulatively,
    over every sample.
    """

    def __init__(self, vlm: VLM, methods: list[MapMethod], stages: Sequence[str] | None, seed: int):
        model = copy.deepcopy(vlm.model)
        self.vlm, self.methods, self.seed = vlm, methods, seed
        self.randomised = VLM(model=model.eval(), processor=vlm.processor,
                              adapter=type(vlm.adapter)(model, vlm.processor), name=f"{vlm.name} (randomised)")
        self.stages = randomisation_stages(self.randomised)
        names = [name for name, _ in self.stages]
        unknown = sorted(set(stages or ()) - set(names))
        if unknown:
            raise InputError(f"unknown stages {unknown}; the cascade is {names}")
        self.evaluated = [stages is None or name in stages for name in names]
        for index in range(vlm.n_layers):
            reinitialise(self.stages[index][1], seed=seed * 1000 + index)
        self.weights = [_LayerWeights(copied, original) for copied, original in zip(self.randomised.layers, vlm.layers)]
        self.computed: dict[tuple[int, int], list[np.ndarray]] = {}  # (stage index, sample index) -> maps

    def _compute(self, index: int, i: int, prepared: PreparedInputs, token: int, carried: dict | None = None) -> dict:
        """Compute stage ``index``'s maps of sample ``i``; return what a later decoder stage may reuse
        (``input_side``: the vision tower and projector are the same until the later stages)."""
        with sharing(fresh=True) as store:  # this stage's weights and this sample only
            store.update(carried or {})
            self.computed[index, i] = [_compute(method, self.randomised, prepared, token) for method in self.methods]
            return input_side(store)

    def decoder_stages(self, i: int, prepared: PreparedInputs, token: int, states: LowerStates, recorded: bool) -> None:
        """Run sample ``i`` through the evaluated decoder-layer stages. ``states``: its perturbation forwards'
        lower-layer states, recorded on the original model (``recorded``) or, else, at the first stage here."""
        n = self.vlm.n_layers
        carried = None  # the pixel runners of the first stage (the vision tower and projector stay)
        try:
            with keeping(states):
                for count, index in enumerate(index for index in range(n) if self.evaluated[index]):
                    first = n - 1 - index  # the stage's first redrawn layer
                    if recorded or count:
                        states.resume(first)
                    for layer, held in enumerate(self.weights):
                        held.use(original=layer < first)
                    carried = self._compute(index, i, prepared, token, carried)
        finally:
            for held in self.weights:
                held.use(original=False)

    def later_stages(self, maps: MapSet, progress: bool) -> None:
        """Redraw the projector, then the vision tower, and run every sample after each."""
        items = list(enumerate(zip(maps.prepared, maps.tokens)))
        for index in tqdm(range(self.vlm.n_layers, len(self.stages)), desc="randomisation (projector, vision)",
                          disable=not progress):
            reinitialise(self.stages[index][1], seed=self.seed * 1000 + index)
            if self.evaluated[index]:
                for i, (prepared, token) in items:
                    self._compute(index, i, prepared, token)

    def frame(self, maps: MapSet) -> pd.DataFrame:
        rows = []
        for index, (name, _) in enumerate(self.stages):
            if not self.evaluated[index]:
                continue
            for i, (sample, prepared) in enumerate(zip(maps.samples, maps.prepared)):
                for method, scores in zip(maps.methods, self.computed[index, i]):
                    rows.append({"stage_index": index, "stage": name, "sample": sample.id, "method": method.name,
                                 "rho": rank_correlation(prepared, maps.maps[method.name][i], scores)})
        return pd.DataFrame(rows)


def randomisation(vlm: VLM, maps: MapSet, stages: Sequence[str] | None = None, seed: int = 0,
                  progress: bool = True) -> pd.DataFrame:
    """Return the rank correlation between original and cascade-randomised maps.

    The model is deep-copied once (``vlm`` is untouched; this needs memory for a second copy)
    and randomised cumulatively (``randomisation_stages``): the decoder-layer stages one sample at
    a time, each running ``vlm``'s own weights below its first redrawn layer, then the projector and
    the vision tower. The perturbation methods' forwards of the first decoder stage keep their
    lower layers' states, and later stages start at their first redrawn layer from them
    (``analysis.probes.lower_states``; ``sanity_report`` keeps them from the original maps already).
    The result is the same, bit for bit, as running each stage over every sample in turn.

    Args:
        vlm: the model the maps were computed on.
        maps: from ``compute_maps``.
        stages: stage names at which to recompute the maps (default: every stage); the cascade
            still re-initialises every stage before them.
        seed: seeds the re-initialisation.
        progress: show progress bars.

    Returns:
        One row per evaluated stage x sample x method: ``stage_index`` (0 = top LLM layer),
        ``stage``, ``sample``, ``method``, ``rho``.
    """
    cascade = _Cascade(vlm, maps.methods, stages, seed)
    for i, (prepared, token) in tqdm(list(enumerate(zip(maps.prepared, maps.tokens))),
                                     desc="randomisation (decoder layers)", disable=not progress):
        cascade.decoder_stages(i, prepared, token, LowerStates(), recorded=False)
    cascade.later_stages(maps, progress)
    return cascade.frame(maps)


# --- the comparison -----------------------------------------------------------------------------
def comparison_table(maps: MapSet, localised: pd.DataFrame, deleted: pd.DataFrame, randomised: pd.DataFrame,
                     threshold: float = SURVIVAL_THRESHOLD) -> pd.DataFrame:
    """Return one row per method (in ``maps.methods`` order) with every check's mean over samples.

    Columns: ``method, kind, pointing_game`` (fraction of hits), ``mass_ratio``, ``deletion_drop``
    and ``random_drop`` (percent), ``rho_top`` (after the first evaluated stage, normally the top
    LLM layer), ``rho_all`` (after the last evaluated stage, normally everything randomised),
    ``seconds`` (per sample), ``survives_randomisation`` (``rho_all >= threshold``), ``n_samples``.
    """
    first, last = randomised["stage_index"].min(), randomised["stage_index"].max()
    rows = []
    for method in maps.methods:
        loc = localised[localised["method"] == method.name]
        dele = deleted[deleted["method"] == method.name]
        rnd = randomised[randomised["method"] == method.name]
        rho_all = rnd.loc[rnd["stage_index"] == last, "rho"].mean()
        rows.append({
            "method": method.name, "kind": method.kind,
            "pointing_game": loc["hit"].mean(), "mass_ratio": loc["ratio"].mean(),
            "deletion_drop": dele["drop_top"].mean(), "random_drop": dele["drop_random"].mean(),
            "rho_top": rnd.loc[rnd["stage_index"] == first, "rho"].mean(), "rho_all": rho_all,
            "seconds": maps.seconds.loc[maps.seconds["method"] == method.name, "seconds"].mean(),
            "survives_randomisation": bool(rho_all >= threshold), "n_samples": len(maps.samples),
        })
    table = pd.DataFrame(rows)
    stage = randomised.drop_duplicates("stage_index").set_index("stage_index")["stage"]
    table.attrs.update(threshold=threshold, first_stage=stage[first], last_stage=stage[last], n_given=maps.n_samples)
    return table


@dataclass
class SanityReport:
    """All checks on one model and one sample set.

    Attributes:
        maps: the maps (``compute_maps``).
        localisation, deletion, randomisation: the tidy frames of each check.
        table: ``comparison_table`` (methods as rows).
    """

    maps: MapSet
    localisation: pd.DataFrame
    deletion: pd.DataFrame
    randomisation: pd.DataFrame
    table: pd.DataFrame


def sanity_report(vlm: VLM, samples: Iterable, methods: Iterable[MapMethod] | None = None, *,
                  k: int | float = 0.1, n_random: int = 8, stages: Sequence[str] | None = None,
                  threshold: float = SURVIVAL_THRESHOLD, only_correct: bool = True, seed: int = 0,
                  batch_size: int = 16, progress: bool = True) -> SanityReport:
    """Run every sanity check on the same samples and return the report with its comparison table.

    Args:
        vlm: the model.
        samples: samples with image, question, answer and ground-truth ``boxes`` (zoo samples).
        methods: map methods (default: ``default_methods(vlm)``).
        k, n_random: see ``deletion``.
        stages: see ``randomisation``.
        threshold: ``rho_all`` at or above which a method is flagged as surviving randomisation.
        only_correct: keep only correctly answered samples.
        seed: seeds the random deletions and the re-initialisation.
        batch_size: knockout configurations per forward.
        progress: show progress bars.
    """
    methods = _check_methods(default_methods(vlm) if methods is None else methods)
    cascade = _Cascade(vlm, methods, stages, seed)  # each sample's decoder stages run right after its maps,
    maps = _maps(vlm, samples, methods, only_correct, progress,  # from the original lower layers' states
                 then=lambda i, prepared, token, states: cascade.decoder_stages(i, prepared, token, states, True))
    localised = localisation(maps)
    deleted = deletion(vlm, maps, k=k, n_random=n_random, seed=seed, batch_size=batch_size)
    cascade.later_stages(maps, progress)
    randomised = cascade.frame(maps)
    return SanityReport(maps=maps, localisation=localised, deletion=deleted, randomisation=randomised,
                        table=comparison_table(maps, localised, deleted, randomised, threshold))
