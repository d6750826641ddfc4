"""How attributions run the model: the unmodified forward, the language model from embeddings,
and the whole VLM on masked images, each batched.

- ``unmodified(vlm, prepared)``: one forward of the unmodified input that gives both the last
  position's logits and every keyword argument the VLM passes its language model. Inside
  ``analysis.probes.sharing.sharing()`` it runs once per (model, input) for every method.
- ``EmbeddingRunner``: the language model alone, from ``inputs_embeds`` with some positions
  replaced; ``(B, N, hidden)`` replacements -> ``(B,)`` log-probabilities in one forward.
- ``PixelRunner``: the VLM on ``B`` copies of the image with some pixel segments filled with a
  colour, in one forward. The ``B`` masked images are built with one gather, and the fastest of
  three exact ways runs them (chosen once per input; the first two are checked bit for bit):

  * **local**: processing is pixel-wise (below) and each image token's embedding entering the
    language model depends only on its own patch (a patch-local vision tower, as
    ``zoo:shapes-llava-local``'s): a masked image's embeddings are the original's for tokens of
    kept groups and the fully filled image's for tokens of filled groups, and only the language
    model reruns. Checked on two complementary random masks: the VLM's own embeddings (and
    every other language-model input) must equal the construction;
  * **pixel-wise** (no processor call per batch): when the image processor treats every pixel on
    its own (no resize, crop, padding or tiling: the image already has the model's input size,
    as the zoo's 64 px scenes), a masked image's ``pixel_values`` are the original image's where
    a pixel is kept and the fully filled image's where it is filled. Checked on the same two
    masks: the processor's output must equal the construction (a resize or a per-image
    normalisation would blend the masks' borders or shift every value);
  * **the processor**, called once per batch on the ``B`` images; the text inputs must come out as
    the input's own (the number of image tokens does not depend on the pixels).

  Memory: ``B`` masked images (``B x H x W x 3`` bytes) and one batch of model inputs at a time;
  the local mode keeps two ``(N, hidden)`` embedding sets per input.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from transformers.utils import logging as hf_logging

from analysis.errors import InputError
from analysis.models import VLM, PreparedInputs
from analysis.models.numerics import finite
from analysis.models.sites import language_model_inputs, last_position_only
from analysis.probes.lower_states import last_hidden
from analysis.probes.sharing import model_key, shared


@dataclass
class Unmodified:
    """One unmodified forward of a prepared input (batch of one).

    Attributes:
        logits: fp32 next-token logits at the last prompt position, ``(vocab,)``.
        embeds: ``(1, T, hidden)`` the ``inputs_embeds`` the VLM passed its language model (model
            dtype), or None when it does not pass them by keyword.
        kwargs: the other keyword arguments of that call (position ids, masks; no cache).
    """

    logits: torch.Tensor
    embeds: torch.Tensor | None
    kwargs: dict

    def logprob(self, token: int) -> torch.Tensor:
        """Return the log-probability of ``token`` at the last position, a 0-d float64 tensor."""
        return answer_logprob(self.logits, token)


def answer_logprob(logits: torch.Tensor, token: int) -> torch.Tensor:
    """Return ``log p(token)`` from logits ``(..., vocab)``, computed in float64: ``(...)``.

    Attribution scores are differences of these. fp32's ``log_softmax`` subtracts two numbers of the
    logits' size, which leaves every log-probability ~eps32 x |logit| (~1e-6) of rounding: a confident
    answer's occlusion scores are often that small, and their ranks (the sanity checks' rank
    correlations) would be the rounding of the CPU's kernels. In float64 what is left is the model's own
    fp32 noise, relative to the score (on ``zoo:shapes-llava-local`` the occlusion maps of the model in
    fp32 and in float64 then agree to rank correlation >= 0.9999).
    """
    return torch.log_softmax(logits.double(), dim=-1)[..., token]


def unmodified(vlm: VLM, prepared: PreparedInputs) -> Unmodified:
    """Return the unmodified forward of ``prepared`` (shared inside ``sharing()``)."""
    return shared(_key(vlm, prepared), lambda: _unmodified(vlm, prepared))


def offer_unmodified(vlm: VLM, prepared: PreparedInputs, logits: torch.Tensor, lm_kwargs: dict) -> None:
    """Offer a forward computed elsewhere as ``unmodified(vlm, prepared)`` inside a ``sharing()`` block.

    Args:
        logits: fp32 next-token logits at the last prompt position, ``(vocab,)``.
        lm_kwargs: the keyword arguments the VLM passed its language model, ``inputs_embeds`` among them
            (e.g. ``analysis.probes.knockout.unmodified_run(...).lm_kwargs``).
    """
    kwargs = {k: v for k, v in lm_kwargs.items() if k not in ("inputs_embeds", "past_key_values", "cache")}
    run = Unmodified(logits=logits, embeds=lm_kwargs["inputs_embeds"].detach(), kwargs={**kwargs, "use_cache": False})
    shared(_key(vlm, prepared), lambda: run)


def _key(vlm: VLM, prepared: PreparedInputs) -> tuple:
    return ("unmodified", *model_key(vlm.model, prepared))


def _unmodified(vlm: VLM, prepared: PreparedInputs) -> Unmodified:
    # A full forward (no last_position_only): the model's own logits, bit for bit, as unmodified_run's that
    # offer_unmodified shares in its place.
    with torch.no_grad(), language_model_inputs(vlm) as captured:
        logits = vlm.model(**prepared.inputs, use_cache=False, logits_to_keep=1).logits[0, -1].float()
    captured = dict(captured)
    args = captured.pop("_args")
    embeds = None if args else captured.pop("inputs_embeds", None)
    for key in ("past_key_values", "cache"):
        captured.pop(key, None)
    captured["use_cache"] = False
    return Unmodified(logits=finite(vlm, logits, "next-token logits"),
                      embeds=None if embeds is None else embeds.detach(), kwargs=captured)


class EmbeddingRunner:
    """The language model run from ``inputs_embeds``, with everything else the VLM passes it.

    Args:
        vlm: the model.
        prepared: the input (batch of one).
        token: the vocabulary id whose log-probability is returned.
    """

    def __init__(self, vlm: VLM, prepared: PreparedInputs, token: int):
        run = unmodified(vlm, prepared)
        if run.embeds is None:
            raise InputError(
                f"{type(vlm.model).__name__} does not pass inputs_embeds to its language model by keyword; "
                "gradient attributions and embedding perturbation need it"
            )
        self.vlm, self.token = vlm, token
        self.embeds, self.kwargs = run.embeds, run.kwargs

    def logprob(self, positions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Return ``(B,)`` float64 log-probabilities with ``values`` ``(B, N, hidden)`` at ``positions``."""
        n = values.shape[0]
        embeds = self.embeds.expand(n, -1, -1).clone()
        embeds[:, positions.to(embeds.device)] = values.to(embeds.dtype)
        kwargs = self.vlm.adapter.repeat_language_model_kwargs(self.kwargs, n)
        hidden = last_hidden(self.vlm, embeds, kwargs, positions, values)  # kept lower layers' states, where given
        return answer_logprob(finite(self.vlm, self.vlm.unembed(hidden, final_norm=False), "attribution logits"),
                              self.token)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-call processor warnings (PaliGemma's) while the processor reruns."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


@dataclass
class _Local:
    """A patch-local model's image-token embeddings: kept ``(N, hidden)``, filled ``(N, hidden)``,
    and the ``(N,)`` group of each image token (-1: never filled)."""

    kept: torch.Tensor
    filled: torch.Tensor
    groups: torch.Tensor


class PixelRunner:
    """The VLM on copies of the image with some pixel segments filled with a colour, ``B`` per forward.

    Three exact ways to run a ``(B, G)`` presence matrix, chosen once per input (the first two are
    checked on two complementary random masks, bit for bit, against the slower way):

    * ``"local"``: processing is pixel-wise and every image token's embedding entering the
      language model depends on its own patch only (a patch-local vision tower, as
      ``zoo:shapes-llava-local``'s, whose attention weights are zero), and every token's patch lies
      in one group: a masked image's embeddings are the original's where the token's group is
      present and the fully filled image's where it is absent, so only the language model reruns
      (``EmbeddingRunner``);
    * ``"pixelwise"``: processing is pixel-wise: ``pixel_values`` are built from the original and
      the fully filled image's, and the whole VLM reruns;
    * ``"processor"``: the processor runs once per batch on the ``B`` masked images, then the VLM.

    Args:
        vlm: the model.
        prepared: the input (batch of one).
        token: the vocabulary id whose log-probability is returned.
        groups: ``(H, W)`` the group index (``0..G-1``) of each pixel of the original image; -1
            for pixels never filled.
        n_groups: ``G``.
        fill: the RGB fill colour.
    """

    def __init__(self, vlm: VLM, prepared: PreparedInputs, token: int, groups: np.ndarray, n_groups: int,
                 fill: tuple[int, int, int]):
        self.vlm, self.prepared, self.token = vlm, prepared, token
        self.pixels = np.asarray(prepared.image)
        self.groups, self.n_groups, self.fill = groups, n_groups, np.asarray(fill, dtype=np.uint8)
        self._mode: str | None = None
        self._pixel_values: tuple[torch.Tensor, torch.Tensor] | None = None  # original, fully filled
        self._local: _Local | None = None
        self._language_model: EmbeddingRunner | None = None  # local mode: the language model alone

    @property
    def mode(self) -> str:
        """``"local"``, ``"pixelwise"`` or ``"processor"`` (decided at the first use)."""
        if self._mode is None:
            self._mode = self._choose()
        return self._mode

    def filled(self, absent: np.ndarray) -> np.ndarray:
        """Return ``(B, H, W)`` booleans, True where a pixel is filled, for ``(B, G)`` absent groups."""
        absent = np.concatenate([absent.astype(bool), np.zeros((len(absent), 1), dtype=bool)], axis=1)
        return absent[:, self.groups]  # group -1 picks the appended column: never filled

    def masked_images(self, absent: np.ndarray) -> list[Image.Image]:
        """Return the ``B`` images with the ``(B, G)`` absent groups filled."""
        pixels = np.where(self.filled(absent)[..., None], self.fill, self.pixels)
        return [Image.fromarray(p) for p in pixels]

    def process(self, images: list[Image.Image]) -> dict:
        """Return the processor's inputs for ``images`` (one call), checked against the input's text."""
        with _quiet_transformers():
            batch = dict(self.vlm.processor(text=[self.prepared.prompt] * len(images), images=[[i] for i in images],
                                            return_tensors="pt"))
        batch.pop("labels", None)  # PaliGemma's processor adds training labels
        ids = self.prepared.inputs["input_ids"].to(batch["input_ids"].device)
        if batch["input_ids"].shape != (len(images), self.prepared.length) or not (batch["input_ids"] == ids).all():
            raise RuntimeError("a masked image changed the text inputs (number of image tokens); please report this")
        return batch

    def inputs(self, absent: np.ndarray) -> dict:
        """Return the VLM inputs of the ``(B, G)`` absent groups (built pixel-wise when exact, else processed)."""
        if self.mode == "processor":
            return self.process(self.masked_images(absent))
        original, full = self._pixel_values
        filled = torch.from_numpy(self.filled(absent)).to(original.device)[:, None]  # (B, 1, H, W)
        inputs = self.vlm.adapter.repeat(self.prepared.inputs, len(absent))
        inputs["pixel_values"] = torch.where(filled, full, original)
        return inputs

    def logprob(self, present: torch.Tensor) -> torch.Tensor:
        """Return ``(B,)`` float64 log-probabilities for a ``(B, G)`` presence matrix (0 = filled)."""
        absent = (present == 0).cpu().numpy()
        if self.mode == "local":
            return self._language_model.logprob(self.prepared.image_positions, self._local_embeds(absent))
        batch = {k: v.to(self.vlm.device) if torch.is_tensor(v) else v for k, v in self.inputs(absent).items()}
        with last_position_only(self.vlm):
            logits = self.vlm.model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
        return answer_logprob(finite(self.vlm, logits, "attribution logits"), self.token)

    def _local_embeds(self, absent: np.ndarray, local: _Local | None = None) -> torch.Tensor:
        """Return ``(B, N, hidden)`` image-token embeddings of the ``(B, G)`` absent groups (local mode)."""
        local = local or self._local
        absent = torch.from_numpy(np.concatenate([absent, np.zeros((len(absent), 1), dtype=bool)], axis=1))
        gone = absent.to(local.kept.device)[:, local.groups]  # (B, N); group -1 picks the appended False
        return torch.where(gone[..., None], local.filled, local.kept)

    # --- choosing the way, exactly ----------------------------------------------------------
    def _choose(self) -> str:
        """Return the fastest exact mode for this input (see the class docstring)."""
        pixel_values = self.prepared.inputs.get("pixel_values")
        image_keys = [k for k in self.prepared.inputs if k in self.vlm.adapter.image_inputs]
        height, width = self.pixels.shape[:2]
        if (image_keys != ["pixel_values"] or pixel_values is None or pixel_values.dim() != 4
                or tuple(pixel_values.shape[-2:]) != (height, width) or self.n_groups < 2):
            return "processor"
        half = np.random.default_rng(0).random(self.n_groups) < 0.5
        if half.all() or not half.any():
            half[0] = not half[0]
        rows = np.stack([np.zeros(self.n_groups, bool), np.ones(self.n_groups, bool), half, ~half])
        batch = self.process(self.masked_images(rows))
        values = batch.pop("pixel_values")
        original, full = values[:1], values[1:2]
        constructed = torch.where(torch.from_numpy(self.filled(rows[2:]))[:, None], full, original)
        same_text = all(torch.equal(v, self.prepared.inputs[k].to(v.device).expand_as(v))
                        for k, v in batch.items() if torch.is_tensor(v))
        if not (same_text and torch.equal(constructed, values[2:])):
            return "processor"
        device = pixel_values.device
        self._pixel_values = original.to(device), full.to(device)
        self._mode = "pixelwise"  # the inputs of the local check are built pixel-wise
        self._local = self._check_local(rows[1:])
        return "pixelwise" if self._local is None else "local"

    def _token_groups(self) -> np.ndarray | None:
        """Return ``(N,)`` the one group under each image token's patch box (-1: none), or None if a box
        has pixels of two groups (or of a group and of no group) or no box."""
        boxes = self.prepared.patches[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
        if not np.isfinite(boxes).all():
            return None
        height, width = self.groups.shape
        out = np.empty(len(boxes), dtype=np.int64)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            xs = np.clip(np.ceil([x0 - 0.5, x1 - 0.5]), 0, width).astype(int)  # pixel i has centre i + 0.5
            ys = np.clip(np.ceil([y0 - 0.5, y1 - 0.5]), 0, height).astype(int)
            under = np.unique(self.groups[ys[0]:ys[1], xs[0]:xs[1]])
            if len(under) != 1:
                return None
            out[i] = under[0]
        return out

    def _check_local(self, rows: np.ndarray) -> _Local | None:
        """Return the local-mode embeddings if ``rows`` (fully filled, a random mask, its complement)
        give the embeddings the construction predicts, bit for bit, and the same other inputs; else None."""
        token_groups = self._token_groups()
        run = unmodified(self.vlm, self.prepared)
        if token_groups is None or run.embeds is None:
            return None
        batch = {k: v.to(self.vlm.device) if torch.is_tensor(v) else v for k, v in self.inputs(rows).items()}
        with torch.no_grad(), language_model_inputs(self.vlm) as captured, last_position_only(self.vlm):
            self.vlm.model(**batch, use_cache=False, logits_to_keep=1)
        captured = dict(captured)
        embeds = captured.pop("inputs_embeds", None)
        if captured.pop("_args") or embeds is None:
            return None
        image = self.prepared.image_positions.to(embeds.device)
        text = torch.ones(embeds.shape[1], dtype=torch.bool, device=embeds.device)
        text[image] = False
        local = _Local(kept=run.embeds[0, image], filled=embeds[0, image],
                       groups=torch.from_numpy(token_groups).to(embeds.device))
        constructed = self._local_embeds(rows[1:], local)
        same_text = torch.equal(embeds[:, text], run.embeds[:, text].expand(len(rows), -1, -1))
        same_kwargs = all(_same_batch(captured.get(k), v) for k, v in run.kwargs.items() if k != "use_cache")
        if not (same_text and same_kwargs and torch.equal(constructed, embeds[1:, image])):
            return None
        self._language_model = EmbeddingRunner(self.vlm, self.prepared, self.token)
        return local


def _same_batch(batch, one) -> bool:
    """Whether ``batch`` (from a forward of ``B`` rows) is ``one`` (from the batch of one) for every row."""
    if isinstance(one, dict):
        return isinstance(batch, dict) and all(_same_batch(batch.get(k), v) for k, v in one.items())
    if not torch.is_tensor(one):
        return True  # flags and None: not per row
    if not torch.is_tensor(batch):
        return False
    if one.dim() >= 2 and batch.shape[1:] == one.shape[1:]:
        return bool((batch == one).all())  # broadcasts the batch axis
    if one.dim() >= 2 and batch.shape[:-2] == one.shape[:-2]:  # M-RoPE position ids (3, B, T)
        return bool((batch == one).all())
    return torch.equal(batch, one)
