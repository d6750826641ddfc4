"""Plain reference implementations that the fast probes are checked and benchmarked against.

They use the textbook computation: eager attention, one full forward per configuration, no
cache reuse, no batching. Slow on purpose; not for analysis.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Sequence

import torch

from analysis.models.sites import hooked
from analysis.probes.backend import Edges


def eager_copy(vlm) -> torch.nn.Module:
    """Return a deep copy of ``vlm.model`` whose language model uses eager attention."""
    model = copy.deepcopy(vlm.model)
    model.config.get_text_config()._attn_implementation_internal = "eager"
    return model


def reference_knockout(vlm, prepared, configs: Sequence[Sequence[Edges]], token: int, model=None) -> torch.Tensor:
    """Probability of ``token`` at the last position, one eager full forward per edge configuration.

    The edges are applied by rewriting the 4-D additive mask that each eager attention layer
    receives (``mask[..., targets, sources] = -inf``), on top of the model's own mask.

    Args:
        model: an ``eager_copy(vlm)`` to reuse across calls (made here when None).

    Returns:
        fp32 tensor of shape ``(len(configs),)``.
    """
    model = eager_copy(vlm) if model is None else model
    out = []
    for edges in configs:
        with contextlib.ExitStack() as stack:
            for index, layer in enumerate(model.get_decoder().layers):
                def pre(args, kwargs, index=index):
                    mask = kwargs["attention_mask"].clone()
                    for e in edges:
                        if index in e.layers:
                            mask[..., e.targets[:, None], e.sources[None, :]] = torch.finfo(mask.dtype).min
                    return args, {**kwargs, "attention_mask": mask}

                stack.enter_context(hooked(layer.self_attn, pre=pre))
            with torch.no_grad():
                logits = model(**prepared.inputs, logits_to_keep=1).logits[0, -1].float()
        out.append(torch.softmax(logits, -1)[token])
    return torch.stack(out)
