"""The attention backend shared by the attention probes: record slices, mask edges, stay exact.

It is an attention function registered with transformers' ``AttentionInterface`` (with the
matching ``AttentionMaskInterface`` mask function, without which causality would be lost) and
installed on the language model only. With no probe active it calls the implementation the
model was using (sdpa or eager) with the same arguments, so outputs are the stock outputs.

Inside ``probing(vlm, record=..., block=...)``:

- ``record``: per layer, the attention probabilities of chosen query rows over chosen key
  columns, in fp32, per head or averaged over heads; only ``rows x T`` scores are formed for the
  recorded rows, never the full ``T x T`` matrix.
- ``block``: per batch element, edge sets ``sources -> targets`` in chosen layers: queries at
  ``targets`` may not attend to keys at ``sources``. They are applied on top of the model's own
  mask (padding, prefix-LM bidirectionality, sliding windows and M-RoPE are untouched).

Positions are absolute sequence positions; with a key/value cache the queries of a call are the
last ``Q`` of ``K`` positions.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from analysis.errors import InputError, UnsupportedModelError
from analysis.models.adapters.generic import decoder_stack

BACKEND = "vlm_probes"
_BASES = {"sdpa": (sdpa_attention_forward, sdpa_mask), "eager": (None, eager_mask)}


@dataclass(frozen=True)
class Edges:
    """Blocked attention edges: queries at ``targets`` may not attend to keys at ``sources``.

    Attributes:
        sources: key positions, shape ``(n_sources,)``.
        targets: query positions, shape ``(n_targets,)``.
        layers: decoder layer indices where the block applies.
    """

    sources: torch.Tensor
    targets: torch.Tensor
    layers: frozenset[int]

    @classmethod
    def make(cls, sources, targets, layers) -> "Edges":
        """Build edges from any integer sequences; raise if either side names no position."""
        sources = torch.as_tensor(sources, dtype=torch.long).flatten()
        targets = torch.as_tensor(targets, dtype=torch.long).flatten()
        if sources.numel() == 0 or targets.numel() == 0:
            raise InputError("an edge set must name at least one source and one target position")
        return cls(sources=sources, targets=targets, layers=frozenset(int(l) for l in layers))


@dataclass
class Recording:
    """Attention recorded from ``rows`` to ``cols`` per layer.

    Attributes:
        rows, cols: absolute query / key positions recorded.
        mean_heads: whether heads were averaged on the fly.
        layers: ``{layer: tensor}`` of shape ``(batch, heads, n_rows, n_cols)`` (``heads`` is 1
            when averaged), fp32 on the CPU, filled during the forward pass.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    wanted: frozenset[int]
    mean_heads: bool = False
    layers: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class _State:
    config: object
    recording: Recording | None
    blocks: Sequence[Sequence[Edges]] | None


_ACTIVE: list[_State] = []


def _layer_index(module) -> int:
    index = getattr(module, "layer_idx", None)
    if index is None:
        raise UnsupportedModelError(
            f"{type(module).__name__} has no layer_idx, so its attention cannot be routed through the "
            "vlm-probes backend; this model's family is not supported by the attention probes"
        )
    return int(index)


def _base_forward(module, base: str):
    if base == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return _BASES[base][0]


def _as_bool_mask(mask: torch.Tensor | None, batch: int, q_len: int, k_len: int, device) -> torch.Tensor:
    """Return the mask as ``(batch, 1, Q, K)`` booleans, True where attention is allowed."""
    if mask is None:
        q_pos = torch.arange(k_len - q_len, k_len, device=device)
        allowed = q_pos[:, None] >= torch.arange(k_len, device=device)[None, :]
        return allowed.expand(batch, 1, q_len, k_len).clone()
    if mask.dtype == torch.bool:
        return mask.expand(batch, -1, q_len, k_len).clone()
    return (mask > torch.finfo(mask.dtype).min / 2).expand(batch, -1, q_len, k_len).clone()


def _apply_blocks(mask, blocks, layer, query, key):
    batch, q_len, k_len = query.shape[0], query.shape[2], key.shape[2]
    active = [[e for e in edges if layer in e.layers] for edges in blocks]
    if not any(active):
        return mask
    if len(blocks) != batch:
        raise InputError(f"{len(blocks)} edge configurations for a batch of {batch}; give one per batch element")
    allowed = _as_bool_mask(mask, batch, q_len, k_len, query.device)
    offset = k_len - q_len
    for b, edges in enumerate(active):
        for e in edges:
            rows = e.targets[(e.targets >= offset) & (e.targets < k_len)] - offset
            cols = e.sources[e.sources < k_len]
            allowed[b, :, rows[:, None], cols[None, :]] = False
    if mask is not None and mask.dtype != torch.bool:
        return torch.zeros_like(allowed, dtype=mask.dtype).masked_fill(~allowed, torch.finfo(mask.dtype).min)
    return allowed


def _record(recording: Recording, layer, module, query, key, mask, scaling, softcap):
    q_len, k_len = query.shape[2], key.shape[2]
    offset = k_len - q_len
    rows = recording.rows[(recording.rows >= offset) & (recording.rows < k_len)]
    if rows.numel() == 0:
        return
    k = repeat_kv(key, query.shape[1] // key.shape[1]).float()
    scores = query[:, :, rows - offset].float() @ k.transpose(-1, -2) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is None:  # sdpa's pure-causal fast path: no padding, no window, no prefix
        scores = scores.masked_fill(rows[:, None] < torch.arange(k_len, device=rows.device)[None, :], float("-inf"))
    else:
        m = mask[:, :, rows - offset, :]
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.float()
    probs = torch.softmax(scores, dim=-1).index_select(-1, recording.cols.to(scores.device))
    if recording.mean_heads:
        probs = probs.mean(dim=1, keepdim=True)
    recording.layers[layer] = probs.detach().cpu()


def _make_attention(base: str):
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        state = _ACTIVE[-1] if _ACTIVE and module.config is _ACTIVE[-1].config else None
        if state is not None:
            layer = _layer_index(module)
            if state.blocks is not None:
                attention_mask = _apply_blocks(attention_mask, state.blocks, layer, query, key)
            if state.recording is not None and layer in state.recording.wanted:
                _record(state.recording, layer, module, query, key, attention_mask,
                        scaling if scaling is not None else module.scaling, kwargs.get("softcap"))
        return _base_forward(module, base)(module, query, key, value, attention_mask,
                                           scaling=scaling, dropout=dropout, **kwargs)

    return attention


for _base, (_, _mask) in _BASES.items():
    AttentionInterface.register(f"{BACKEND}_{_base}", _make_attention(_base))
    AttentionMaskInterface.register(f"{BACKEND}_{_base}", _mask)


def install(vlm) -> None:
    """Route the language model's attention through the backend (idempotent).

    The vision tower keeps its own implementation. Raises ``UnsupportedModelError`` when the
    model does not dispatch attention through transformers' ``AttentionInterface``.
    """
    config = vlm.text_config
    current = config._attn_implementation
    if current.startswith(BACKEND):
        return
    base = "eager" if current == "eager" else "sdpa"
    if current not in ("eager", "sdpa"):
        raise UnsupportedModelError(
            f"{vlm.name} uses attn_implementation={current!r}, which ignores custom masks; reload it with "
            "attn_implementation='sdpa' or 'eager' to use the attention probes"
        )
    # The vision tower keeps its own attention implementation: only the decoder stack's class must dispatch (GOT-OCR2's
    # SAM tower does not); a stack that is no PreTrainedModel is judged by the whole model's class.
    decoder = decoder_stack(vlm.model)
    if not getattr(decoder, "_can_set_attn_implementation", vlm.model._can_set_attn_implementation)():
        raise UnsupportedModelError(
            f"{type(vlm.model).__name__}'s language model ({type(decoder).__name__}) does not route attention through "
            "transformers' AttentionInterface, so the attention probes cannot observe or mask it"
        )
    if not all(hasattr(layer.self_attn, "layer_idx") for layer in vlm.layers if hasattr(layer, "self_attn")):
        raise UnsupportedModelError(f"{vlm.name}: decoder attention modules have no layer_idx")
    config._attn_implementation_internal = f"{BACKEND}_{base}"


@contextlib.contextmanager
def probing(vlm, record: Recording | None = None, block: Sequence[Sequence[Edges]] | None = None) -> Iterator[None]:
    """Activate recording and/or edge blocking for forwards of ``vlm`` inside the block.

    Args:
        vlm: the model (the backend is installed on first use).
        record: a ``Recording`` to fill.
        block: one list of ``Edges`` per batch element of the forwards that follow.
    """
    install(vlm)
    if record is not None:
        for layer in record.wanted:
            vlm.check_layer(layer)
    _ACTIVE.append(_State(config=vlm.text_config, recording=record, blocks=block))
    try:
        yield
    finally:
        _ACTIVE.pop()
