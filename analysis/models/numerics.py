"""One check that a model's numbers are finite, with an error that says what to change.

Low precision fails silently: a float16 model whose activations overflow returns NaN logits,
and every probability, knockout effect and attribution computed from them is NaN too (fp16 with
eager attention is the failure users of the reference code report most). Probes pass their
model outputs through ``finite`` so that the first non-finite value stops the run with the
dtype and attention implementation named.
"""

from __future__ import annotations

import torch

from analysis.errors import NumericsError


def finite(vlm, values: torch.Tensor, what: str) -> torch.Tensor:
    """Return ``values`` unchanged if every element is finite; else raise ``NumericsError``.

    Args:
        vlm: the model that produced ``values`` (named in the message with its dtype and
            attention implementation).
        values: any tensor computed from the model's outputs.
        what: what ``values`` are, for the message (e.g. ``"next-token logits"``).
    """
    if bool(torch.isfinite(values).all()):
        return values
    attention = getattr(vlm.text_config, "_attn_implementation", None) or "default"
    dtype = str(vlm.dtype).removeprefix("torch.")
    advice = "load the model with dtype='bfloat16' (same range as float32) or 'float32'"
    if dtype == "float16" and "eager" in attention:
        advice += ", or keep float16 with attn_implementation='sdpa' (eager float16 softmax overflows first)"
    raise NumericsError(
        f"{what} of {vlm.name} are not finite (NaN or inf) in {dtype} with attention '{attention}'; {advice}"
    )
