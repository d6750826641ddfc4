"""``last_position_only``: the last layer's MLP at the last position only gives the full forward's next-token
logits on every family with a tiny model, falls back to the full forward where it cannot apply, and always
removes its hook."""

from __future__ import annotations

import contextlib

import pytest
import torch

from analysis.models.sites import _last_mlp, editing, hooked, last_position_only
from analysis.testing import SUPPORTED_TINY_FAMILIES
from conftest import QUESTION, assert_detectable

TOLERANCE = 1e-5  # fp32 tiny models
# Families whose forward runs in full: no module outputs the MLP's write (Gemma 4's per-layer inputs and
# layer_scalar, Muse Spark's residual gates), or the MLP takes another per-position input (ERNIE 4.5-VL's
# token types route its experts).
IN_FULL = ("gemma4", "gemma4_unified", "muse_spark", "ernie4_5_vl_moe")


def _inputs(vlm, photo) -> dict:
    """Two rows of the same prompt (their embeddings scaled apart by ``_apart``)."""
    return vlm.adapter.repeat(vlm.prepare(photo, QUESTION).inputs, 2)


def _apart(state: torch.Tensor) -> torch.Tensor:
    return state * torch.tensor([1.0, 0.5], dtype=state.dtype, device=state.device)[:, None, None]


def _last_logits(vlm, inputs: dict) -> torch.Tensor:
    """``(B, vocab)`` fp32 next-token logits of a full-length forward (logits of every position computed)."""
    with torch.no_grad(), editing(vlm, {"embed": _apart}):
        return vlm.model(**inputs, use_cache=False).logits[:, -1].float()


def _hooks(vlm) -> list[tuple[int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in vlm.model.modules()]


@pytest.mark.parametrize("family", SUPPORTED_TINY_FAMILIES)
def test_last_position_logits_equal_the_full_forward(family, tiny, photo):
    vlm = tiny(family)
    inputs = _inputs(vlm, photo)
    length = inputs["input_ids"].shape[1]
    full = _last_logits(vlm, inputs)
    mlp = _last_mlp(vlm)
    seen = []  # the positions the last MLP computes, read after the block's own hook
    with last_position_only(vlm), contextlib.ExitStack() as stack:
        if mlp is not None:
            stack.enter_context(hooked(mlp, pre=lambda args, kwargs: seen.append(
                next(v for v in (*args, *kwargs.values()) if torch.is_tensor(v)).shape[1])))
        fast = _last_logits(vlm, inputs)
    if family in IN_FULL:
        assert seen in ([], [length]) and torch.equal(fast, full)
        return
    assert seen == [1]
    assert (fast - full).abs().max() <= TOLERANCE
    # The comparison would notice the MLP at another position: the first one's write is far off.
    with hooked(mlp, pre=lambda args, kwargs: ((args[0][:, :1], *args[1:]), kwargs)):
        wrong = _last_logits(vlm, inputs)
    assert_detectable([(wrong - full).abs().max()], TOLERANCE, what="logit difference of the wrong position")


def test_an_mlp_called_on_flattened_positions_runs_in_full(tiny, photo):
    """An MLP called on ``(B * T, H)`` (a MoE block's flattened call) is left as it is: the full forward."""
    vlm = tiny("llava")
    inputs = _inputs(vlm, photo)
    mlp = _last_mlp(vlm)
    shape = {}

    def flatten(args, kwargs):
        shape["in"] = args[0].shape
        return (args[0].flatten(0, 1), *args[1:]), kwargs

    seen = []
    with hooked(mlp, pre=flatten, post=lambda args, kwargs, out: out.view(shape["in"])):
        full = _last_logits(vlm, inputs)
        with last_position_only(vlm), hooked(mlp, pre=lambda args, kwargs: seen.append(tuple(args[0].shape))):
            fast = _last_logits(vlm, inputs)
    assert seen == [(2 * inputs["input_ids"].shape[1], vlm.hidden_size)] and torch.equal(fast, full)


def test_the_hook_is_removed_on_exit_and_after_an_error(tiny, photo):
    vlm = tiny("qwen2_vl")
    inputs = _inputs(vlm, photo)
    hooks = _hooks(vlm)
    full = _last_logits(vlm, inputs)
    with last_position_only(vlm):
        assert _hooks(vlm) != hooks
    assert _hooks(vlm) == hooks
    with pytest.raises(RuntimeError, match="boom"), last_position_only(vlm):
        raise RuntimeError("boom")
    assert _hooks(vlm) == hooks
    assert torch.equal(_last_logits(vlm, inputs), full)
