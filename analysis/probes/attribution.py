"""Attributions of a VLM's answer to image patches and question tokens, with captum.

``attribute(vlm, prepared, target="answer", method=...)`` explains the log-probability of one
token at the last prompt position (by default the model's own greedy answer) with a captum
method. No method is re-implemented here; this module is the glue captum lacks for VLMs:

- **Gradient methods** (``integrated_gradients``, ``saliency``, ``input_x_gradient``) act on
  the embeddings entering the language model, i.e. the projected image features already merged
  into ``inputs_embeds`` (or the question tokens' embeddings). One forward of the whole VLM
  captures every keyword argument its language model receives (``inputs_embeds``, the mask,
  M-RoPE position ids, PaliGemma's prefix mask); captum then differentiates a function that
  reruns only the language model from those inputs with the chosen positions replaced. Each
  token's attribution is summed over the hidden dimension (Saliency: captum's default absolute
  gradient, so its sum is the gradient's L1 norm).
- **Perturbation methods** (``occlusion``: captum's ``FeatureAblation``, one feature group
  removed at a time; ``kernel_shap``: captum's ``KernelShap``) act on a binary presence vector
  over feature groups (captum's interpretable-input pattern: 1 = present, baseline 0 = absent).
  What "absent" means is ``perturb``:

  * ``"pixels"`` (default for image features): the group's pixels in the original image are
    filled with a colour and the whole VLM reruns, so the vision tower sees the masked image
    (its inputs built pixel-wise when the processor treats each pixel on its own, else by one
    processor call per batch; both exact, see ``analysis.probes.runners``).
    This is occlusion as the literature defines it, and the only removal that also takes the
    patch out of the vision tower's own mixing (a CLIP patch embedding already carries its
    neighbours, so masking it after the projector leaves copies of it in the others).
  * ``"embeddings"``: the group's image-token (or question-token) embeddings entering the
    language model are replaced by a baseline vector and only the language model is rerun:
    faster, and it measures what the language model reads from each token, as gradients do.

  Perturbations run ``batch_size`` at a time (captum's ``perturbations_per_eval``), one forward
  per batch; the unperturbed input is not rerun (its value is the unmodified forward's).

One unmodified forward per call gives the target, its log-probability and the language model's
inputs; inside ``analysis.probes.sharing.sharing()`` it is shared by every method run on the
same input, and so is the gradient that Saliency and InputXGradient transform.

Features are ``"patches"`` (every image token; with ``perturb="pixels"`` every patch of the
reference tile, see ``PreparedInputs.reference_tile``), ``"question"`` (the question's tokens) or an integer
segment array: ``(n_image,)`` one group id per image token, or ``(H, W)`` one group id per
pixel of the original image (e.g. ``grid_segments`` or superpixels); negative ids are never
perturbed. A token belongs to the pixel segment at its box centre; with segments every token
reports its group's score (gradient methods: the sum over the group's tokens).

Why not captum's ``LLMAttribution`` / ``LLMGradientAttribution`` wrappers: the gradient one
differentiates the token-embedding layer, where a VLM's image tokens are still the ``<image>``
placeholder (the image features are merged in after it), and the perturbation one runs one
perturbation per forward. The attribution classes themselves are used unchanged (InputXGradient
as ``input * gradient`` of captum's Saliency without the absolute value, which is what it computes).

Scores are in log-probability units: Integrated Gradients sums to
``log p(x) - log p(baseline)`` up to captum's convergence delta (a warning says when the delta
exceeds 5% of that gap); the occlusion score of a group
is ``log p(x) - log p(x without the group)``.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image

from analysis.errors import InputError
from analysis.models import VLM, PreparedInputs
from analysis.models.answers import answer_tokens
from analysis.models.localisation import localisation_scores, positive_part
from analysis.probes.runners import EmbeddingRunner, PixelRunner, answer_logprob, unmodified
from analysis.probes.sharing import model_key, shared, sharing

GRADIENT_METHODS = ("integrated_gradients", "saliency", "input_x_gradient")
# captum's classes by name: captum is imported where an attribution runs (importing it costs every process
# that imports the probes ~0.9 s).
PERTURBATION_METHODS = {"occlusion": "FeatureAblation", "kernel_shap": "KernelShap"}
METHODS = (*GRADIENT_METHODS, *PERTURBATION_METHODS)
PERTURB = ("pixels", "embeddings")
FEATURES = ("patches", "question")
BASELINES = ("zero", "mean")


@dataclass
class Attribution:
    """One attribution map for one input, per feature token.

    Shapes use ``N`` = feature tokens (image tokens in sequence order, as ``prepared.patches``,
    for image features; the question's tokens for ``"question"``) and ``G`` = feature groups.

    Attributes:
        prepared: the input.
        method: the method name (one of ``METHODS``).
        features: ``"patches"``, ``"question"`` or ``"segments"``.
        perturb: ``"pixels"`` or ``"embeddings"`` for perturbation methods, None for gradients.
        target_token: the vocabulary id whose log-probability is explained.
        target_text: that token, decoded.
        target_value: its log-probability on the unmodified input.
        positions: ``(N,)`` absolute positions of the feature tokens.
        tokens: ``(N,)`` the feature tokens, decoded.
        groups: ``(N,)`` the group index (``0..G-1``) of each token; -1 when it is in no group.
        group_scores: ``(G,)`` the attribution of each group.
        scores: ``(N,)`` each token's group score (NaN for tokens in no group).
        delta: captum's convergence delta (Integrated Gradients), else None.
        seconds: wall-clock time of the attribution.
    """

    prepared: PreparedInputs
    method: str
    features: str
    perturb: str | None
    target_token: int
    target_text: str
    target_value: float
    positions: np.ndarray
    tokens: np.ndarray
    groups: np.ndarray
    group_scores: np.ndarray
    scores: np.ndarray
    delta: float | None
    seconds: float

    @property
    def is_image(self) -> bool:
        """Whether the features are image tokens (``patches`` or ``segments``)."""
        return self.features != "question"

    @property
    def image_scores(self) -> np.ndarray:
        """``(n_image,)`` scores per image token, drawable with ``analysis.plots.plot_token_overlay``."""
        if not self.is_image:
            raise InputError("this attribution is over question tokens; use .scores")
        return self.scores

    def to_grid(self, tile: int = 0) -> np.ndarray:
        """Return the scores on one tile's patch grid, ``(rows, cols)`` (NaN where no token)."""
        return self.prepared.to_grid(self.image_scores, tile)

    def localisation(self, region) -> dict[str, float | bool]:
        """Return ``share``, ``ratio``, ``hit`` and ``area_share`` of the positive part against a region.

        Args:
            region: boxes ``(x0, y0, x1, y1)`` in original-image pixels, or a zoo sample.
        """
        scores = localisation_scores(self.prepared, positive_part(self.image_scores), region)
        return {name: bool(v) if name == "hit" else float(v) for name, v in scores.items()}

    def to_frame(self) -> pd.DataFrame:
        """Return a tidy frame, one row per feature token.

        Columns: ``method, perturb, target, target_token, feature`` (``image`` / ``question``),
        ``position, token, tile, row, col, kind`` (image tokens only, else missing), ``group,
        score``.
        """
        frame = pd.DataFrame({
            "method": self.method, "perturb": self.perturb, "target": self.target_text,
            "target_token": self.target_token, "feature": "image" if self.is_image else "question",
            "position": self.positions, "token": self.tokens,
        })
        for column in ("tile", "row", "col", "kind"):
            frame[column] = self.prepared.patches[column].to_numpy() if self.is_image else None
        frame["group"] = self.groups
        frame["score"] = self.scores
        return frame


# --- feature groups -----------------------------------------------------------------------------
def grid_segments(prepared: PreparedInputs, block: int = 1, tile: int | None = None) -> np.ndarray:
    """Return a pixel segment map of ``block x block`` patch cells of one tile's grid.

    Args:
        prepared: the input.
        block: patches per cell side (1: one segment per patch).
        tile: the grid to use (default ``prepared.reference_tile()``).

    Returns:
        ``(H, W)`` int array over the original image: the segment id ``(row // block) *
        cells_per_row + col // block`` of the patch whose box contains the pixel's centre; -1 for
        pixels no patch of the tile covers (e.g. a centre crop's margins).
    """
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise InputError(f"block must be a positive integer; got {block!r}")
    tile = prepared.reference_tile() if tile is None else tile
    if tile not in prepared.grids:
        raise InputError(f"tile {tile} does not exist; this input has tiles {sorted(prepared.grids)}")
    width, height = prepared.image.size
    per_row = -(-prepared.grids[tile][1] // block)
    segments = np.full((height, width), -1, dtype=np.int64)
    p = prepared.patches[(prepared.patches["tile"] == tile) & (prepared.patches["kind"] == "patch")]
    for row, col, x0, y0, x1, y1 in p[["row", "col", "x0", "y0", "x1", "y1"]].itertuples(index=False):
        xs = np.clip(np.ceil([x0 - 0.5, x1 - 0.5]), 0, width).astype(int)  # pixel i has centre i + 0.5
        ys = np.clip(np.ceil([y0 - 0.5, y1 - 0.5]), 0, height).astype(int)
        segments[ys[0]:ys[1], xs[0]:xs[1]] = (row // block) * per_row + col // block
    return segments


def token_segments(prepared: PreparedInputs, segments: np.ndarray) -> np.ndarray:
    """Return ``(n_image,)``: the segment id at each image token's box centre (-1 without a box)."""
    height, width = segments.shape
    boxes = prepared.patches[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
    has_box = np.isfinite(boxes).all(axis=1)
    cx = np.clip(np.floor((boxes[has_box, 0] + boxes[has_box, 2]) / 2), 0, width - 1).astype(int)
    cy = np.clip(np.floor((boxes[has_box, 1] + boxes[has_box, 3]) / 2), 0, height - 1).astype(int)
    out = np.full(len(boxes), -1, dtype=np.int64)
    out[has_box] = segments[cy, cx]
    return out


@dataclass
class _Features:
    """Resolved features: the feature tokens, their groups and, for pixel masking, the segments."""

    name: str                          # "patches", "question" or "segments"
    positions: torch.Tensor            # (N,) absolute positions
    groups: np.ndarray                 # (N,) group index, -1 = in no group
    ids: np.ndarray                    # (G,) segment id of each group
    segments: np.ndarray | None = None  # (H, W) pixel segment ids, for pixel perturbation


def _index(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return the index of each of ``values`` in the sorted, non-empty ``ids``; -1 where absent."""
    index = np.minimum(np.searchsorted(ids, values), len(ids) - 1)
    return np.where((values >= 0) & (ids[index] == values), index, -1).astype(np.int64)


def _resolve_features(prepared: PreparedInputs, features, perturb: str | None) -> _Features:
    """Return the features named by ``features`` for ``perturb`` (None for gradient methods)."""
    image = prepared.image_positions
    if isinstance(features, str):
        if features not in FEATURES:
            raise InputError(f"unknown features {features!r}; use one of {', '.join(FEATURES)} or a segment array")
        if features == "question":
            n = len(prepared.question_positions)
            return _Features("question", prepared.question_positions, np.arange(n), np.arange(n))
        if perturb != "pixels":
            return _Features("patches", image, np.arange(len(image)), np.arange(len(image)))
        name, segments = "patches", grid_segments(prepared)
    else:
        width, height = prepared.image.size
        array = np.asarray(features.detach().cpu() if torch.is_tensor(features) else features)
        if array.shape not in ((len(image),), (height, width)) or not np.issubdtype(array.dtype, np.integer):
            raise InputError(
                f"features must be 'patches', 'question' or an integer segment array of shape ({len(image)},) "
                f"(one group id per image token) or ({height}, {width}) (one per image pixel, H x W); got a "
                f"{array.dtype} array of shape {array.shape}"
            )
        if array.ndim == 1:
            if perturb == "pixels":
                raise InputError(
                    f"pixel perturbation needs a pixel segment map of shape (H, W) = ({height}, {width}); "
                    "per-token groups work with perturb='embeddings' and with gradient methods"
                )
            ids = np.unique(array[array >= 0])
            if len(ids) == 0:
                raise InputError("the segment array has no non-negative id: nothing to attribute")
            return _Features("segments", image, _index(ids, array.astype(np.int64)), ids)
        name, segments = "segments", array.astype(np.int64)
    at_tokens = token_segments(prepared, segments)
    # Pixel masking can remove any segment; embedding masking and gradients only reach tokens.
    ids = np.unique(segments[segments >= 0] if perturb == "pixels" else at_tokens[at_tokens >= 0])
    if len(ids) == 0:
        raise InputError("the segment map covers no image token: nothing to attribute")
    return _Features(name, image, _index(ids, at_tokens), ids, segments if perturb == "pixels" else None)


# --- strategies: one per kind of method ---------------------------------------------------------
def _embedding_baseline(values: torch.Tensor, baseline: str | None) -> torch.Tensor:
    """Return the ``(1, N, hidden)`` embedding baseline: the tokens' mean for ``"mean"``, else zeros."""
    return values.mean(dim=1, keepdim=True).expand_as(values) if baseline == "mean" else torch.zeros_like(values)


@dataclass
class _EmbeddingGradients:
    """A gradient method of ``GRADIENT_METHODS`` on the embeddings entering the language model.

    captum differentiates the target's log-probability with respect to the ``(1, N, hidden)``
    embeddings of the ``N`` feature tokens. The forward maps ``(B, N, hidden)`` embeddings to
    ``(B,)`` log-probabilities (``EmbeddingRunner`` reruns the language model with them in
    place); Integrated Gradients runs ``B = batch_size`` interpolation steps per forward. The
    ``(1, N, hidden)`` attribution is summed over hidden into ``(N,)`` token scores, and those are
    summed over each of the ``G`` groups.

    Attributes:
        vlm: the model.
        prepared: the input.
        token: the vocabulary id whose log-probability is explained.
        features: the resolved features: ``N`` tokens in ``G`` groups.
        method: ``"integrated_gradients"``, ``"saliency"`` or ``"input_x_gradient"``.
        baseline: Integrated Gradients' ``(1, N, hidden)`` baseline: zeros (``"zero"`` or None,
            the default) or the mean of the ``N`` tokens' embeddings (``"mean"``). Unused by the others.
        n_steps: Integrated Gradients' steps.
        batch_size: Integrated Gradients' ``internal_batch_size``.
        convergence_delta: Integrated Gradients: compute captum's convergence delta (two more
            forwards) and warn when it is large; else the delta is None.
    """

    vlm: VLM
    prepared: PreparedInputs
    token: int
    features: _Features
    method: str
    baseline: str | None
    n_steps: int
    batch_size: int
    convergence_delta: bool = True

    def attribute(self) -> tuple[np.ndarray, float | None]:
        """Return the ``(G,)`` group scores and Integrated Gradients' convergence delta (else None)."""
        from captum.attr import IntegratedGradients, Saliency

        runner = EmbeddingRunner(self.vlm, self.prepared, self.token)
        positions = self.features.positions.to(self.vlm.device)
        values = runner.embeds[:, positions].clone().requires_grad_(True)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return runner.logprob(positions, x)

        delta = None
        if self.method == "integrated_gradients":
            base = _embedding_baseline(values, self.baseline)
            with torch.enable_grad():
                found = IntegratedGradients(forward).attribute(
                    values, baselines=base, n_steps=self.n_steps, internal_batch_size=self.batch_size,
                    return_convergence_delta=self.convergence_delta)
            if not self.convergence_delta:
                attr = found
            else:
                attr, deltas = found
                delta = float(deltas.sum())
                gap = float(attr.detach().sum()) - delta  # f(input) - f(baseline)
                if abs(delta) > 0.05 * abs(gap):
                    warnings.warn(
                        f"Integrated Gradients has not converged: its scores miss f(input) - f(baseline) = "
                        f"{gap:.3g} by {delta:.3g} with n_steps={self.n_steps}. Raise n_steps, or use "
                        "baseline='mean': the zero baseline converges slowly on models with RMSNorm (a near-zero "
                        "embedding's norm jumps).",
                        stacklevel=3,
                    )
        else:
            # Saliency (|gradient|, captum's default) and InputXGradient (input * gradient) transform the
            # same gradient, computed by captum's Saliency without the absolute value: once per input and
            # token inside analysis.probes.sharing.sharing(), as the sanity checks run both.
            key = ("gradient", *model_key(self.vlm.model, self.prepared), self.token, tuple(positions.tolist()))
            with torch.enable_grad():
                gradient = shared(key, lambda: Saliency(forward).attribute(values, abs=False))
            attr = gradient.abs() if self.method == "saliency" else values.detach() * gradient
        per_token = attr[0].float().sum(-1).detach().cpu().numpy().astype(float)
        groups = self.features.groups
        valid = groups >= 0
        return np.bincount(groups[valid], weights=per_token[valid], minlength=len(self.features.ids)), delta


@dataclass
class _Perturbation:
    """What the perturbation strategies share: a method of ``PERTURBATION_METHODS`` over group presence.

    captum perturbs a ``(1, G)`` presence vector of ones (1 = present, baseline 0 = absent),
    ``batch_size`` perturbations per forward, so the forward maps a ``(B, G)`` presence matrix to
    ``(B,)`` log-probabilities of the target; its ``(1, G)`` attribution gives the ``(G,)`` scores.
    The global RNG (and CUDA's on a GPU) is forked and seeded with ``seed`` around the call.

    Attributes:
        vlm: the model.
        prepared: the input.
        token: the vocabulary id whose log-probability is explained.
        features: the resolved features: ``N`` tokens in ``G`` groups.
        method: ``"occlusion"`` or ``"kernel_shap"``.
        n_samples: KernelSHAP's coalitions.
        batch_size: captum's ``perturbations_per_eval``.
        seed: the seed of captum's sampling.
    """

    vlm: VLM
    prepared: PreparedInputs
    token: int
    features: _Features
    method: str
    n_samples: int
    batch_size: int
    seed: int

    def _group_scores(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        """Return the ``(G,)`` scores of the method with ``forward``: ``(B, G)`` presence -> ``(B,)``.

        The unperturbed input alone (occlusion's first evaluation) is not rerun: its log-probability
        is the unmodified forward's, the same computation.
        """
        base = unmodified(self.vlm, self.prepared).logprob(self.token)

        def evaluate(present: torch.Tensor) -> torch.Tensor:
            if len(present) == 1 and bool(present.all()):
                return base.reshape(1).to(present.device)
            return forward(present)

        import captum.attr

        algorithm = getattr(captum.attr, PERTURBATION_METHODS[self.method])(evaluate)
        options = {"n_samples": self.n_samples} if self.method == "kernel_shap" else {}
        device = self.vlm.device
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            attr = algorithm.attribute(torch.ones(1, len(self.features.ids), device=device), baselines=0.0,
                                       perturbations_per_eval=self.batch_size, **options)
        return attr[0].float().cpu().numpy().astype(float)


@dataclass
class _EmbeddingPerturbation(_Perturbation):
    """Perturbation over embeddings: an absent group's tokens enter the language model as the baseline.

    The ``(1, N, hidden)`` embeddings of the ``N`` feature tokens become, for each row of a
    ``(B, G)`` presence matrix, ``baseline + present * (embeddings - baseline)`` per token (tokens in
    no group stay present), and ``EmbeddingRunner`` reruns only the language model on the
    ``(B, N, hidden)`` result.

    Attributes:
        baseline: the ``(1, N, hidden)`` absent value: zeros (``"zero"`` or None, the default) or
            the mean of the ``N`` tokens' embeddings (``"mean"``). The others as ``_Perturbation``.
    """

    baseline: str | None

    def attribute(self) -> tuple[np.ndarray, None]:
        """Return the ``(G,)`` group scores and None (no convergence delta)."""
        runner = EmbeddingRunner(self.vlm, self.prepared, self.token)
        positions = self.features.positions.to(self.vlm.device)
        values = runner.embeds[:, positions].clone()
        base = _embedding_baseline(values, self.baseline)
        groups = torch.as_tensor(self.features.groups, device=self.vlm.device)

        def forward(present: torch.Tensor) -> torch.Tensor:
            keep = torch.cat([present, present.new_ones(len(present), 1)], dim=1)[:, groups]  # -1: kept
            return runner.logprob(positions, base + keep[..., None].to(values.dtype) * (values - base))

        return self._group_scores(forward), None


_PIXEL_RUNNER = "pixel runner"  # the sharing() key of a PixelRunner (see input_side)


@dataclass
class _PixelPerturbation(_Perturbation):
    """Perturbation over pixels: an absent group's pixel segments are filled and the whole VLM reruns.

    For each row of a ``(B, G)`` presence matrix, ``PixelRunner`` fills the absent groups'
    segments of the ``(H, W)`` map ``features.segments`` with ``fill`` in the original image and
    reruns the VLM on the ``B`` images in one forward (their inputs built pixel-wise where that is
    exact, else by one processor call; see ``analysis.probes.runners``), giving ``(B,)``
    log-probabilities.

    Attributes:
        fill: the RGB fill colour. The others as ``_Perturbation``.
    """

    fill: tuple[int, int, int]

    def attribute(self) -> tuple[np.ndarray, None]:
        """Return the ``(G,)`` group scores and None (no convergence delta)."""
        segments = self.features.segments
        groups = _index(self.features.ids, segments.ravel()).reshape(segments.shape)
        # Inside sharing() occlusion and KernelSHAP on the same segments share one runner: its way of
        # running (and the check that it is exact) is decided once per input.
        key = (_PIXEL_RUNNER, *model_key(self.vlm.model, self.prepared), self.token, tuple(self.fill),
               hashlib.sha256(groups.tobytes()).hexdigest(), groups.shape, len(self.features.ids))
        runner = shared(key, lambda: PixelRunner(self.vlm, self.prepared, self.token, groups, len(self.features.ids),
                                                 self.fill))
        return self._group_scores(runner.logprob), None


def input_side(store: dict) -> dict:
    """Return the entries of a ``sharing()`` store that depend on the input side of the model only: the
    pixel runners (``PixelRunner``: their way of running, checked once, and a patch-local model's image-token
    embeddings come from the processor, the vision tower and the projector; their forwards run the model's
    weights of the moment). They stay valid for the same model object while only its decoder layers change
    (the cascading randomisation's decoder stages)."""
    return {key: value for key, value in store.items() if isinstance(key, tuple) and key[:1] == (_PIXEL_RUNNER,)}


# --- the public entry point ---------------------------------------------------------------------
def resolve_target(vlm: VLM, prepared: PreparedInputs, target: str | int = "answer",
                   logits: torch.Tensor | None = None) -> int:
    """Return the vocabulary id to explain.

    Args:
        vlm, prepared: the model and the input.
        target: ``"answer"`` (the model's greedy next token at the last position), a token id,
            or a word (its first token as an answer; to explain the word "answer" itself pass its
            token id).
        logits: the last position's logits ``(vocab,)`` if already computed.
    """
    vocab = int(vlm.lm_head.weight.shape[0])
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not 0 <= target < vocab:
            raise InputError(f"target token id {int(target)} is not in the vocabulary (ids 0..{vocab - 1})")
        return int(target)
    if not isinstance(target, str) or not target.strip():
        raise InputError(f"target must be 'answer', a token id or a word; got {target!r}")
    if target == "answer":
        return int((unmodified(vlm, prepared).logits if logits is None else logits).argmax())
    token = answer_tokens(vlm, prepared.prompt, target.strip()).target
    unk = vlm.tokenizer.unk_token_id
    if (unk is not None and token == unk) or token >= vocab:
        raise InputError(f"target {target!r} is not in the vocabulary: the tokenizer maps it to "
                         f"{vlm.tokenizer.decode([token])!r}; pass a word it knows or a token id")
    return token


def attribute(
    vlm: VLM,
    inputs: PreparedInputs,
    target: str | int = "answer",
    method: str = "integrated_gradients",
    features="patches",
    *,
    perturb: str | None = None,
    baseline: str | tuple[int, int, int] | None = None,
    n_steps: int = 50,
    n_samples: int = 256,
    batch_size: int = 16,
    seed: int = 0,
    convergence_delta: bool = True,
) -> Attribution:
    """Return a captum attribution of the target token's log-probability to image or question features.

    Args:
        vlm: the model.
        inputs: one prepared image + question (``vlm.prepare``).
        target: ``"answer"`` (the model's own next token), a token id, or a word (see
            ``resolve_target``).
        method: one of ``METHODS``: ``integrated_gradients``, ``saliency``, ``input_x_gradient``
            (gradients on the language model's input embeddings), ``occlusion`` (captum's
            ``FeatureAblation`` over feature groups), ``kernel_shap``.
        features: ``"patches"``, ``"question"`` or an integer segment array of shape
            ``(n_image,)`` or ``(H, W)`` (see the module docstring).
        perturb: for perturbation methods, ``"pixels"`` (mask the image and rerun the processor;
            default for image features) or ``"embeddings"`` (replace embeddings; the only choice
            for question features). Must be None for gradient methods.
        baseline: what "absent" is. Embeddings (IG's baseline too): ``"zero"`` (default) or
            ``"mean"`` (the mean of the feature tokens' embeddings). Pixels: ``"mean"`` (the
            image's mean colour, default), ``"zero"`` (black) or an RGB tuple.
        n_steps: Integrated Gradients' steps.
        n_samples: KernelSHAP's coalitions (raise it with the number of groups).
        batch_size: inputs per forward (IG's ``internal_batch_size``, perturbation methods'
            ``perturbations_per_eval``).
        seed: seeds KernelSHAP's sampling (the global RNG is left as it was).
        convergence_delta: Integrated Gradients: compute captum's convergence delta (``delta``; two
            more forwards: the input and the baseline) and warn when it exceeds 5% of
            ``f(input) - f(baseline)``. False: ``delta`` is None (for callers that use only the scores'
            order). Ignored by the other methods.

    Returns:
        An ``Attribution``.
    """
    if not isinstance(inputs, PreparedInputs):
        raise InputError("inputs must be a PreparedInputs; build it with vlm.prepare(image, question)")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; captum methods available here: {', '.join(METHODS)}")
    if batch_size < 1 or n_steps < 1 or n_samples < 1:
        raise InputError("batch_size, n_steps and n_samples must be positive")
    gradient = method in GRADIENT_METHODS
    question = isinstance(features, str) and features == "question"
    if gradient and perturb is not None:
        raise InputError(f"{method} differentiates the input embeddings; perturb applies to "
                         f"{' and '.join(PERTURBATION_METHODS)} only")
    if not gradient:
        perturb = perturb or ("embeddings" if question else "pixels")
        if perturb not in PERTURB:
            raise InputError(f"unknown perturb {perturb!r}; use one of {', '.join(PERTURB)}")
        if perturb == "pixels" and question:
            raise InputError("question tokens have no pixels; use perturb='embeddings' for question features")
    pixels = perturb == "pixels"
    if baseline is not None and not (baseline in BASELINES or (pixels and _is_rgb(baseline))):
        raise InputError(f"unknown baseline {baseline!r}; use one of {', '.join(BASELINES)}"
                         + (" or an RGB tuple" if pixels else ""))

    started = time.perf_counter()
    with sharing():  # one unmodified forward for the target, its value and the strategy
        logits = unmodified(vlm, inputs).logits
        token = resolve_target(vlm, inputs, target, logits)
        feats = _resolve_features(inputs, features, perturb)
        strategy: _EmbeddingGradients | _EmbeddingPerturbation | _PixelPerturbation
        if gradient:
            strategy = _EmbeddingGradients(vlm, inputs, token, feats, method, baseline, n_steps, batch_size,
                                           convergence_delta)
        elif pixels:
            strategy = _PixelPerturbation(vlm, inputs, token, feats, method, n_samples, batch_size, seed,
                                          fill=_fill(inputs.image, baseline or "mean"))
        else:
            strategy = _EmbeddingPerturbation(vlm, inputs, token, feats, method, n_samples, batch_size, seed,
                                              baseline=baseline)
        group_scores, delta = strategy.attribute()
    scores = np.where(feats.groups >= 0, group_scores[np.maximum(feats.groups, 0)], np.nan)
    ids = inputs.input_ids[feats.positions].tolist()
    return Attribution(
        prepared=inputs, method=method, features=feats.name, perturb=perturb, target_token=token,
        target_text=vlm.tokenizer.decode([token]).strip(),
        target_value=float(answer_logprob(logits, token)), positions=feats.positions.numpy(),
        tokens=np.asarray([vlm.tokenizer.decode([i]) for i in ids]), groups=feats.groups,
        group_scores=group_scores, scores=scores, delta=delta, seconds=time.perf_counter() - started,
    )


def _is_rgb(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 3 and all(
        isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in value)


def _fill(image: Image.Image, baseline) -> tuple[int, int, int]:
    """Return the RGB fill colour of pixel perturbation for ``baseline``."""
    if baseline == "zero":
        return (0, 0, 0)
    if baseline == "mean":
        return tuple(int(round(v)) for v in np.asarray(image, dtype=float).reshape(-1, 3).mean(axis=0))
    return tuple(int(v) for v in baseline)
