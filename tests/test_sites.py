"""Activation sites: names, layer resolution, reading and editing, hooks that always clean up."""

from __future__ import annotations

import pytest
import torch

from analysis.errors import InputError
from analysis.models.sites import Site, ablate, add, editing, reading, replace, site, sites
from conftest import QUESTION, assert_detectable


def _forward(vlm, prepared):
    with torch.no_grad():
        return vlm.model(**prepared.inputs, output_hidden_states=True)


def test_site_names_and_negative_layers(tiny):
    vlm = tiny("llava")
    last = vlm.n_layers - 1
    assert site("resid_post.-1", vlm) == site(("resid_post", -1), vlm) == site("resid_post", vlm, -1) == \
        Site("resid_post", last)
    assert site("embed", vlm).name == "embed" and site(("attn_out", 0), vlm).name == "attn_out.0"
    assert sites(vlm, ["embed", "resid_post"]) == [Site("embed")] + [Site("resid_post", i) for i in range(last + 1)]
    for bad, message in [("resid.1", "unknown site"), ("resid_post", "needs a layer"), ("embed.2", "takes no layer"),
                         ("resid_post.x", "cannot read a layer"), (("resid_post", vlm.n_layers), "out of range")]:
        with pytest.raises(InputError, match=message):
            site(bad, vlm)


def test_reading_matches_output_hidden_states(family, tiny, photo):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    with reading(vlm, ["embed", "final"] + sites(vlm, ["resid_pre", "attn_out", "mlp_out", "resid_post"])) as got:
        out = _forward(vlm, prepared)
    states = out.hidden_states
    assert_detectable([(a - b).abs().max() for a, b in zip(states[1:], states[:-1])], 1e-5,
                      what="difference between adjacent layers' states")
    torch.testing.assert_close(got[Site("embed")], states[0])
    for i in range(vlm.n_layers):
        torch.testing.assert_close(got[Site("resid_pre", i)], states[i])
        parts = got[Site("resid_pre", i)] + got[Site("attn_out", i)] + got[Site("mlp_out", i)]
        torch.testing.assert_close(parts, got[Site("resid_post", i)], atol=1e-5, rtol=1e-5)
        if i < vlm.n_layers - 1:
            torch.testing.assert_close(got[Site("resid_post", i)], states[i + 1])
    torch.testing.assert_close(got[Site("final")], states[-1])  # transformers' last entry is final-normed
    with torch.no_grad():
        torch.testing.assert_close(vlm.final_norm(got[Site("resid_post", vlm.n_layers - 1)]), states[-1])
    assert (got[Site("resid_post", vlm.n_layers - 1)] - states[-1]).abs().max() > 1e-2  # the norm does something


def test_editing_adds_ablates_replaces_and_always_cleans_up(tiny, photo):
    vlm = tiny("qwen2_vl")
    prepared = vlm.prepare(photo, QUESTION)
    plain = _forward(vlm, prepared).hidden_states
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in vlm.model.modules()]
    delta = torch.randn(vlm.hidden_size, generator=torch.Generator().manual_seed(0))
    with reading(vlm, ["resid_pre.1"]) as got, editing(vlm, {"resid_post.0": add(delta)}):
        _forward(vlm, prepared)
    torch.testing.assert_close(got[Site("resid_pre", 1)], plain[1] + delta)
    with reading(vlm, ["resid_pre.1"]) as got, editing(vlm, {"resid_post.0": add(delta, "last")}):
        _forward(vlm, prepared)
    torch.testing.assert_close(got[Site("resid_pre", 1)][:, :-1], plain[1][:, :-1])
    torch.testing.assert_close(got[Site("resid_pre", 1)][:, -1], plain[1][:, -1] + delta)
    image = prepared.image_positions
    with reading(vlm, ["resid_pre.0"]) as got, editing(vlm, {"embed": ablate(image)}):
        _forward(vlm, prepared)
    assert got[Site("resid_pre", 0)][:, image].abs().max() == 0
    torch.testing.assert_close(got[Site("resid_pre", 0)][:, prepared.question_positions],
                               plain[0][:, prepared.question_positions])
    with reading(vlm, ["resid_pre.1"]) as got, editing(vlm, {("resid_post", 0): replace(delta, image[:1])}):
        _forward(vlm, prepared)
    torch.testing.assert_close(got[Site("resid_pre", 1)][0, image[0]], delta)
    with pytest.raises(RuntimeError, match="boom"), editing(vlm, {"resid_post.0": add(delta)}):
        raise RuntimeError("boom")
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in vlm.model.modules()] == hooks
    torch.testing.assert_close(_forward(vlm, prepared).hidden_states[1], plain[1])


def test_adapter_refuses_inputs_it_does_not_know(tiny, photo):
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    with pytest.raises(InputError, match="does not know the model input 'mystery_ids'"):
        vlm.adapter.repeat({**prepared.inputs, "mystery_ids": torch.zeros(1, prepared.length)}, 2)
