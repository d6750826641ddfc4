"""The knockout engine: next-token logits of one input under many attention-edge configurations.

Exact (each configuration equals a full forward with its edges blocked, ``reference_knockout``)
and computing only what a configuration changes:

* **one unmodified forward** per input (``unmodified_run``): its logits are the empty
  configuration's (p_base; never recomputed); it keeps the key/value cache of every position and
  the residual stream entering every decoder layer (site ``resid_pre``) from the first position
  that any configuration blocks;
* **layer skip**: a configuration whose first blocked layer is ``s`` leaves layers ``< s`` as in
  the unmodified run, so its forward starts at layer ``s`` from the kept residual stream
  (``analysis.models.sites.skipping`` leaves the layers below out);
* **suffix only**: a configuration whose first blocked query is position ``p`` leaves every
  position ``< p`` as in the unmodified run (causal attention), so only positions ``p..T-1`` are
  computed, attending to the kept cache of positions ``< p`` (one token for the ``->last`` edge
  sets). Not for prefix-LM families (PaliGemma), whose prompt attends bidirectionally, nor when
  ``p`` lies inside the image: there every position is recomputed, still from layer ``s`` on,
  by the language model alone (the vision tower does not run again);
* **batching**: configurations with the same ``p`` run together, in batches of ``batch_size``
  starting at the lowest ``s`` among them, as long as no member computes more than
  ``MERGE_TOKEN_LAYERS`` (positions x layers) that it does not need: one short forward's worth.
  A layer below a member's own ``s`` is an unmodified layer applied to unmodified states.

Memory: the kept cache (one copy: ``2 x layers x T x kv width``), the kept residual stream
(``layers x (T - p) x hidden``), and per batch the keys/values of one layer at a time
(``batch x T x kv width x 2``): the batch shares the cache as a view, never a copy
(``_SharedPrefix``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from analysis.errors import InputError
from analysis.models.inputs import PreparedInputs
from analysis.models.numerics import finite
from analysis.models.sites import Site, editing, language_model_inputs, last_position_only, reading, replace, skipping
from analysis.probes.backend import Edges, probing

__all__ = ["Unmodified", "first_recomputed", "knockout_logits", "knockout_probs", "unmodified_run"]


@dataclass
class Unmodified:
    """One unmodified forward of a prepared input (batch of one), kept for knockout sweeps.

    Attributes:
        logits: fp32 next-token logits at the last position, shape ``(vocab,)``.
        start: the first position whose residual stream is kept.
        states: ``states[l]`` is the residual stream entering decoder layer ``l`` at positions
            ``start..T-1``, shape ``(1, T - start, hidden)`` (model dtype and device).
        cache: the key/value cache of all ``T`` positions, every layer (None when ``start`` is 0:
            nothing is resumed from it).
        lm_kwargs: the keyword arguments the VLM passed its language model (``inputs_embeds``
            ``(1, T, hidden)``, position ids, masks; no cache), or None when the model does not
            pass them by keyword.
    """

    logits: torch.Tensor
    start: int
    states: list[torch.Tensor]
    cache: DynamicCache | None
    lm_kwargs: dict | None

    def __post_init__(self):
        if self.logits.dim() != 1:
            raise ValueError("logits are the last position's, shape (vocab,)")
        if any(s.shape[1] != self.states[0].shape[1] for s in self.states):
            raise ValueError("every kept state covers the same positions")
        if self.start > 0 and self.cache is None:
            raise ValueError("states kept from a position > 0 need the cache of the positions before")


class _SharedPrefix(DynamicLayer):
    """A cache layer holding the unmodified keys/values of positions ``0..p-1`` for a batch: the
    prefix ``(1, kv heads, p, head dim)`` is expanded to the batch (a view) and the new positions
    are returned with it but not kept, so the batch's keys/values live only while the layer runs."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, sliding: bool):
        super().__init__()
        self.keys, self.values, self.is_sliding = keys, values, sliding
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[0]
        return (torch.cat([self.keys.expand(n, -1, -1, -1), key_states], dim=-2),
                torch.cat([self.values.expand(n, -1, -1, -1), value_states], dim=-2))


# Configurations with the same first position share a batch, starting at the lowest first layer among
# them, while each member runs at most this many token x layer units it does not need (its positions
# times the layers below its own first layer): less than the fixed cost of one more forward for short
# suffixes (the ->last edge sets: one position), nothing for long ones (they batch by first layer).
MERGE_TOKEN_LAYERS = 64


def _first_layer(config: Sequence[Edges]) -> int | None:
    layers = [min(e.layers) for e in config if e.layers]
    return min(layers, default=None)


def first_recomputed(vlm, prepared: PreparedInputs, configs: Sequence[Sequence[Edges]],
                     reuse_prefix: bool = True) -> int:
    """Return the first position any configuration recomputes: its earliest blocked query when the
    positions before can be resumed from a cache (causal prompt, after the image), else 0."""
    targets = [int(e.targets.min()) for config in configs for e in config if e.layers]
    first = min(targets, default=prepared.last_position)
    resumable = reuse_prefix and not vlm.adapter.bidirectional_prompt and first > int(prepared.image_positions.max())
    return first if resumable else 0


def unmodified_run(vlm, prepared: PreparedInputs, start: int = 0) -> Unmodified:
    """Run ``prepared`` once without edges and keep what knockout configurations resume from.

    Args:
        start: the first position whose residual stream is kept (``first_recomputed``); with
            ``start > 0`` the key/value cache is kept too.
    """
    if not 0 <= start <= prepared.last_position:
        raise InputError(f"start must lie in 0..{prepared.last_position}; got {start}")
    states: dict[int, torch.Tensor] = {}

    def keep(site: Site, state: torch.Tensor) -> None:
        states[site.layer] = state[:, start:].detach().clone()

    cache = DynamicCache() if start > 0 else None
    extra = {vlm.adapter.cache_argument: cache, "use_cache": True} if cache is not None else {"use_cache": False}
    # A full forward (no last_position_only): these logits are p_base, bit for bit the model's own
    # (next_token_logits), and the empty configuration returns them.
    with torch.no_grad(), language_model_inputs(vlm) as captured, \
            reading(vlm, [Site("resid_pre", layer) for layer in range(vlm.n_layers)], on_value=keep):
        logits = vlm.model(**prepared.inputs, **extra, logits_to_keep=1).logits[0, -1].float()
    lm_kwargs = dict(captured)
    if lm_kwargs.pop("_args") or lm_kwargs.get("inputs_embeds") is None:
        lm_kwargs = None
    else:
        for name in ("past_key_values", "cache", "use_cache"):
            lm_kwargs.pop(name, None)
    return Unmodified(logits=finite(vlm, logits, "next-token logits (unmodified run)"), start=start,
                      states=[states[layer] for layer in range(vlm.n_layers)], cache=cache, lm_kwargs=lm_kwargs)


def knockout_probs(
    vlm,
    prepared: PreparedInputs,
    configs: Sequence[Sequence[Edges]],
    token: int,
    batch_size: int = 16,
    reuse_prefix: bool = True,
    unmodified: Unmodified | None = None,
) -> torch.Tensor:
    """Return the probability of ``token`` at the last position under each edge configuration.

    Arguments as for ``knockout_logits``; returns fp32 of shape ``(len(configs),)``.
    """
    logits = knockout_logits(vlm, prepared, configs, batch_size, reuse_prefix, unmodified)
    return torch.softmax(logits, dim=-1)[:, token]


def knockout_logits(
    vlm,
    prepared: PreparedInputs,
    configs: Sequence[Sequence[Edges]],
    batch_size: int = 16,
    reuse_prefix: bool = True,
    unmodified: Unmodified | None = None,
) -> torch.Tensor:
    """Return the next-token logits at the last position under each edge configuration.

    Args:
        vlm: the model.
        prepared: the input (batch of one).
        configs: one list of ``Edges`` per configuration (an empty list is the unmodified model).
        batch_size: configurations run together as one batch (default 16).
        reuse_prefix: compute only the positions from each configuration's first blocked query,
            over the unmodified cache of the positions before (default; automatically off for
            prefix-LM families and for queries inside the image).
        unmodified: the input's ``unmodified_run`` when the caller has it (its logits gave p_base);
            it must keep states from ``first_recomputed(...)`` or earlier. Made here when None.

    Returns:
        fp32 CPU tensor of shape ``(len(configs), vocab)``.
    """
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    start = first_recomputed(vlm, prepared, configs, reuse_prefix)
    if unmodified is None:
        unmodified = unmodified_run(vlm, prepared, start)
    elif unmodified.start > start:
        raise InputError(f"the unmodified run keeps states from position {unmodified.start}, but a configuration "
                         f"recomputes position {start}; make it with unmodified_run(vlm, prepared, {start})")
    out = [unmodified.logits.cpu()] * len(configs)
    plans = []
    for index, config in enumerate(configs):
        layer = _first_layer(config)
        if layer is not None:
            position = min(int(e.targets.min()) for e in config if e.layers) if unmodified.start else 0
            plans.append((max(position, unmodified.start), layer, index))
    plans.sort()
    while plans:
        position, layer = plans[0][:2]
        waste = MERGE_TOKEN_LAYERS // (prepared.length - position)  # layers a member may run that it does not need
        chunk = [p for p in plans[:batch_size] if p[0] == position and p[1] - layer <= waste]
        plans = plans[len(chunk):]
        logits = _resume(vlm, prepared, unmodified, [configs[i] for _, _, i in chunk], position, layer)
        for (_, _, index), row in zip(chunk, logits):
            out[index] = row
    return finite(vlm, torch.stack(out), "knockout logits")


def _resume(vlm, prepared: PreparedInputs, unmodified: Unmodified, chunk: list, position: int,
            layer: int) -> torch.Tensor:
    """Run ``chunk``'s configurations from decoder layer ``layer`` over positions ``position..T-1``;
    return their last-position logits, fp32 CPU ``(len(chunk), vocab)``."""
    n = len(chunk)
    state = unmodified.states[layer][:, position - unmodified.start:]
    with torch.no_grad(), probing(vlm, block=chunk), skipping(vlm, range(layer)), last_position_only(vlm), \
            editing(vlm, {Site("resid_pre", layer): replace(state)}) if layer else contextlib.nullcontext():
        if position > 0:
            cache = DynamicCache()
            cache.layers = [_SharedPrefix(c.keys[..., :position, :], c.values[..., :position, :], c.is_sliding)
                            for c in unmodified.cache.layers]
            batch = vlm.adapter.repeat(vlm.adapter.suffix(prepared.inputs, position), n)
            batch["attention_mask"] = torch.ones(n, prepared.length, dtype=torch.long, device=vlm.device)
            ids = unmodified.lm_kwargs.get("position_ids") if unmodified.lm_kwargs else None
            if ids is not None:
                ids = ids[..., position:]
                batch["position_ids"] = ids.expand(*ids.shape[:-2], n, ids.shape[-1])
            logits = vlm.model(**batch, **{vlm.adapter.cache_argument: cache}, use_cache=True, logits_to_keep=1,
                               cache_position=torch.arange(position, prepared.length, device=vlm.device)).logits[:, -1]
        elif unmodified.lm_kwargs is not None:
            kwargs = vlm.adapter.repeat_language_model_kwargs(unmodified.lm_kwargs, n)
            hidden = vlm.language_model(**kwargs, use_cache=False).last_hidden_state[:, -1]
            logits = vlm.unembed(hidden, final_norm=False)
        else:
            logits = vlm.model(**vlm.adapter.repeat(prepared.inputs, n), use_cache=False, logits_to_keep=1).logits[:, -1]
    return logits.float().cpu()
