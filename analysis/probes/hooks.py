"""Context managers for forward hooks that always clean up."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def residual_stream(vlm, layers=None) -> Iterator[dict[int, torch.Tensor]]:
    """Collect each chosen decoder layer's output (the residual stream after that layer).

    Yields a dict filled during forwards inside the block: ``{layer: (batch, T, hidden)}``,
    detached, in the model's dtype and device. Unlike ``output_hidden_states`` (whose last
    entry is already normalised in transformers 5), every entry here is pre-final-norm.
    """
    layers = range(vlm.n_layers) if layers is None else [vlm.check_layer(l) for l in layers]
    out: dict[int, torch.Tensor] = {}
    handles = []

    def hook(index):
        def store(module, args, output):
            out[index] = (output[0] if isinstance(output, tuple) else output).detach()

        return store

    try:
        for index in layers:
            handles.append(vlm.layers[index].register_forward_hook(hook(index)))
        yield out
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def decoder_position_ids(vlm) -> Iterator[dict[str, torch.Tensor | None]]:
    """Capture the ``position_ids`` the VLM passes to its language model.

    Yields a dict whose ``"ids"`` entry is set by the next forward: ``(batch, T)`` for 1-D RoPE,
    ``(3, batch, T)``-like for M-RoPE, or None when the language model derives them itself.
    """
    out: dict[str, torch.Tensor | None] = {}

    def store(module, args, kwargs):
        out["ids"] = kwargs.get("position_ids")

    handle = vlm.language_model.register_forward_pre_hook(store, with_kwargs=True)
    try:
        yield out
    finally:
        handle.remove()
