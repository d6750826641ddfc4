"""Residual streams of lower decoder layers, kept for model states that share those layers.

The cascading randomisation (``analysis.probes.sanity``) re-initialises the language model's
decoder layers from the top down: at the stage that randomises layers ``k..L-1``, layers
``0..k-1`` are still the original ones, so on the same input batch the residual stream entering
layer ``k`` is the one the original model computes. For one input, inside ``keeping(states)``:

* recording (the default): every language-model forward of a perturbation batch without
  gradient (the perturbation methods' ``EmbeddingRunner`` runs) keeps the residual stream entering
  every layer ``1..L-1`` (site ``resid_pre``), under a digest of the batch (the positions replaced
  and their embeddings);
* ``states.resume(k)``: a forward of a recorded batch starts at layer ``k`` from the kept state
  (``analysis.models.sites.skipping`` and ``editing``): bit for bit the full forward's result, as
  the skipped layers would compute the same state from the same batch.

Gradient runs (Integrated Gradients, Saliency) and batches never recorded run in full. Memory: the
kept states of one input, ``batches x B x T x hidden x (L - 1)`` in the model's dtype, at most
``budget`` bytes (default 1 GiB); past it, nothing more is kept and those batches run in full.
"""

from __future__ import annotations

import contextlib
import hashlib
from contextvars import ContextVar
from typing import Iterator

import torch

from analysis.models.sites import Site, editing, last_position_only, reading, replace, skipping

_ACTIVE: ContextVar[LowerStates | None] = ContextVar("analysis_probes_lower_states", default=None)


class LowerStates:
    """Kept residual streams of one input's perturbation batches (see the module docstring).

    Args:
        budget: bytes of kept states at most.

    Attributes:
        resumed: forwards that started from a kept state so far.
    """

    def __init__(self, budget: int = 1 << 30):
        self.budget, self.used = budget, 0
        self.states: dict[bytes, list[torch.Tensor]] = {}  # digest -> resid_pre of layers 1..L-1
        self.layer: int | None = None  # None: record; else resume at this layer
        self.resumed = 0

    def resume(self, layer: int) -> None:
        """From now on, start every forward of a recorded batch at decoder layer ``layer`` (0: in full)."""
        self.layer = layer

    def last_hidden(self, vlm, embeds: torch.Tensor, kwargs: dict, positions: torch.Tensor,
                    values: torch.Tensor) -> torch.Tensor:
        """Return the language model's ``(B, hidden)`` last-position output for ``inputs_embeds=embeds``."""
        if self.layer == 0:
            return _run(vlm, embeds, kwargs)
        key = _digest(positions, values)
        if self.layer is not None:
            if key not in self.states:
                return _run(vlm, embeds, kwargs)
            self.resumed += 1
            state = self.states[key][self.layer - 1]
            with skipping(vlm, range(self.layer)), editing(vlm, {Site("resid_pre", self.layer): replace(state)}):
                return _run(vlm, embeds, kwargs)
        size = embeds.numel() * embeds.element_size() * (vlm.n_layers - 1)
        if key in self.states or vlm.n_layers < 2 or self.used + size > self.budget:
            return _run(vlm, embeds, kwargs)
        kept: dict[int, torch.Tensor] = {}
        with reading(vlm, [Site("resid_pre", layer) for layer in range(1, vlm.n_layers)],
                     on_value=lambda site, state: kept.__setitem__(site.layer, state.detach().clone())):
            hidden = _run(vlm, embeds, kwargs)
        self.states[key] = [kept[layer] for layer in range(1, vlm.n_layers)]
        self.used += size
        return hidden


def _run(vlm, embeds: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """The language model's ``(B, hidden)`` last-position output (its last layer's MLP at that position only)."""
    with last_position_only(vlm):
        return vlm.language_model(inputs_embeds=embeds, **kwargs).last_hidden_state[:, -1]


def _digest(positions: torch.Tensor, values: torch.Tensor) -> bytes:
    digest = hashlib.blake2b(positions.detach().cpu().numpy().tobytes(), digest_size=16)
    digest.update(str((tuple(values.shape), values.dtype)).encode())
    digest.update(values.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.digest()


@contextlib.contextmanager
def keeping(states: LowerStates) -> Iterator[LowerStates]:
    """Make ``states`` the store of the ``EmbeddingRunner`` forwards inside the block."""
    token = _ACTIVE.set(states)
    try:
        yield states
    finally:
        _ACTIVE.reset(token)


def last_hidden(vlm, embeds: torch.Tensor, kwargs: dict, positions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The language model's ``(B, hidden)`` last-position output for ``inputs_embeds=embeds`` (``values`` at
    ``positions``): through the active ``LowerStates`` inside ``keeping`` without gradient, else a plain forward."""
    states = _ACTIVE.get()
    if states is None or torch.is_grad_enabled():
        return _run(vlm, embeds, kwargs)
    return states.last_hidden(vlm, embeds, kwargs, positions, values)
