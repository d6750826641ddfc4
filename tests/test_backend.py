"""The attention backend: idle it is the stock model; it refuses what it cannot observe."""

from __future__ import annotations

import copy

import pytest
import torch

from analysis.errors import UnsupportedModelError
from analysis.probes import backend
from analysis.probes.backend import Edges, Recording, install, probing
from conftest import QUESTION


def test_idle_backend_gives_stock_logits(family, tiny, photo):
    vlm = copy.copy(tiny(family))
    vlm.model = copy.deepcopy(vlm.model)
    prepared = vlm.prepare(photo, QUESTION)
    with torch.no_grad():
        stock = vlm.model(**prepared.inputs).logits
        install(vlm)
        assert vlm.text_config._attn_implementation.startswith(backend.BACKEND)
        idle = vlm.model(**prepared.inputs).logits
    assert (idle - stock).abs().max() <= 1e-5


def test_vision_tower_keeps_its_implementation(tiny):
    vlm = copy.copy(tiny("llava"))
    vlm.model = copy.deepcopy(vlm.model)
    before = vlm.model.config.vision_config._attn_implementation
    install(vlm)
    assert vlm.model.config.vision_config._attn_implementation == before


def test_unroutable_attention_is_refused(tiny):
    vlm = copy.copy(tiny("llava"))
    vlm.model = copy.deepcopy(vlm.model)
    vlm.text_config._attn_implementation_internal = "flash_attention_2"
    with pytest.raises(UnsupportedModelError, match="ignores custom masks.*'sdpa' or 'eager'"):
        install(vlm)


def test_probing_always_cleans_up(tiny, photo):
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    recording = Recording(rows=torch.tensor([prepared.last_position]), cols=prepared.image_positions,
                          wanted=frozenset({0}))
    with pytest.raises(RuntimeError, match="boom"):
        with probing(vlm, record=recording):
            raise RuntimeError("boom")
    assert backend._ACTIVE == []
    edges = [[Edges.make(prepared.image_positions, [prepared.last_position], range(vlm.n_layers))]]
    with torch.no_grad():
        with probing(vlm, block=edges):
            blocked = vlm.model(**prepared.inputs).logits
        after = vlm.model(**prepared.inputs).logits
    assert backend._ACTIVE == []
    assert not torch.allclose(blocked, after)
