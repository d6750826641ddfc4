"""Sharded models (load_vlm(device_map=...)): with decoder layers offloaded to disk, every probe gives
the unsharded model's results (accelerate's hooks run on the CPU exactly as across GPUs)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import load_vlm
from analysis.capture import capture
from analysis.data.shapes import make_samples
from analysis.errors import InputError
from analysis.models.answers import next_token_logits
from analysis.models.vlm import _main_device
from analysis.probes import (
    attention_maps,
    attribute,
    implicit_alignment,
    information_flow,
    logit_lens,
    region_knockout,
    steer,
)

TOL = 1e-5
MODELS = ("zoo:shapes-llava", "tiny:qwen2_vl")  # a checkpoint folder (from_pretrained) and an in-memory build


def disk_map(vlm) -> dict:
    """A device map of ``vlm``'s modules: the odd decoder layers on "disk", everything else on "cpu"."""
    layers = next(name for name, module in vlm.model.named_modules() if module is vlm.layers)
    device_map, module, prefix = {}, vlm.model, ""
    for part in layers.split("."):  # every sibling on the way down to the layer list stays on the CPU
        device_map.update({prefix + name: "cpu" for name, _ in module.named_children() if name != part})
        device_map.update({prefix + name: "cpu" for name, _ in module.named_parameters(recurse=False)})
        module, prefix = getattr(module, part), prefix + part + "."
    device_map.update({f"{layers}.{i}": "disk" if i % 2 else "cpu" for i in range(len(vlm.layers))})
    return device_map


@functools.cache
def _pair(name: str, folder: str):
    plain = load_vlm(name, device="cpu")
    sharded = load_vlm(name, device_map=disk_map(plain), offload_folder=folder, dtype="float32")
    return plain, sharded


@pytest.fixture(scope="module", params=MODELS)
def pair(request, tmp_path_factory):
    plain, sharded = _pair(request.param, str(tmp_path_factory.mktemp("offload")))
    offloaded = [p for i, layer in enumerate(sharded.layers) if i % 2 for p in layer.parameters()]
    assert offloaded and all(p.device.type == "meta" for p in offloaded)  # really off the model
    assert sharded.device == torch.device("cpu") and sharded.dtype == torch.float32
    return plain, sharded


@functools.cache
def _samples():
    return make_samples(4, seed=1)


def _close(a, b, tol=TOL):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    assert np.allclose(a, b, atol=tol, rtol=0, equal_nan=True), float(np.nanmax(np.abs(a - b)))


def _frames_close(a: pd.DataFrame, b: pd.DataFrame, numeric: list[str]):
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    others = [c for c in a.columns if c not in numeric]
    pd.testing.assert_frame_equal(a[others].reset_index(drop=True), b[others].reset_index(drop=True))
    _close(a[numeric].to_numpy(), b[numeric].to_numpy())


def test_logits_and_attention_maps(pair):
    plain, sharded = pair
    s = _samples()[0]
    a, b = plain.prepare(s.image, s.question), sharded.prepare(s.image, s.question)
    _close(next_token_logits(plain, a), next_token_logits(sharded, b))
    maps_a = attention_maps(plain, a, rollout=True)
    maps_b = attention_maps(sharded, b, rollout=True)
    _close(maps_a.image_attention, maps_b.image_attention)
    _close(maps_a.rollout, maps_b.rollout)
    _close(maps_a.image_norms, maps_b.image_norms, tol=1e-4)
    _frames_close(maps_a.mass, maps_b.mass, ["mass"])


def test_knockout_region_knockout_and_logit_lens(pair):
    plain, sharded = pair
    samples = _samples()
    for blocks in (("question->last", "image->last", "last->last", "image->question"),
                   ("related->question", "other->question")):
        a = information_flow(plain, samples, blocks=blocks, window=1, only_correct=False, batch_size=4,
                             progress=False)
        b = information_flow(sharded, samples, blocks=blocks, window=1, only_correct=False, batch_size=4,
                             progress=False)
        _frames_close(a.frame.drop(columns="change"), b.frame.drop(columns="change"), ["p_base", "p_new"])
        _close(a.frame["change"], b.frame["change"], tol=1e-3)  # percent of p_base
    pd.testing.assert_frame_equal(region_knockout(plain, samples, progress=False).frame,
                                  region_knockout(sharded, samples, progress=False).frame)
    lens_a = logit_lens(plain, samples, positions=("question", "last"), progress=False)
    lens_b = logit_lens(sharded, samples, positions=("question", "last"), progress=False)
    _frames_close(lens_a.drop(columns="rank"), lens_b.drop(columns="rank"), ["prob"])


def test_capture_alignment_and_steering(pair):
    plain, sharded = pair
    samples = _samples()
    kwargs = dict(roles=("image", "question", "last", "answer"), kinds=("embed", "resid_post", "attn_out"),
                  batch_size=2, progress=False)
    a, b = capture(plain, samples, **kwargs), capture(sharded, samples, **kwargs)
    assert set(a.features) == set(b.features)
    for key in a.features:
        _close(a.features[key], b.features[key], tol=1e-4)
    pd.testing.assert_frame_equal(a.meta, b.meta)
    align_a = implicit_alignment(plain, samples, progress=False)
    align_b = implicit_alignment(sharded, samples, progress=False)
    numeric = [c for c in align_a.scores.columns if pd.api.types.is_float_dtype(align_a.scores[c])]
    _frames_close(align_a.scores, align_b.scores, numeric)

    vector = torch.randn(plain.hidden_size, generator=torch.Generator().manual_seed(0))
    s = samples[0]
    pa, pb = plain.prepare(s.image, s.question), sharded.prepare(s.image, s.question)
    with steer(plain, vector, layer=1, alpha=2.0):
        steered_a = next_token_logits(plain, pa)
        generated_a = plain.model.generate(**pa.inputs, max_new_tokens=3, do_sample=False)
    with steer(sharded, vector, layer=1, alpha=2.0):
        steered_b = next_token_logits(sharded, pb)
        generated_b = sharded.model.generate(**pb.inputs, max_new_tokens=3, do_sample=False)
    _close(steered_a, steered_b)
    assert torch.equal(generated_a, generated_b)
    assert (steered_a - next_token_logits(plain, pa)).abs().max() > 1e-3  # the steering does something


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "occlusion"])
def test_attributions_with_gradients(pair, method):
    plain, sharded = pair
    s = _samples()[1]
    a, b = plain.prepare(s.image, s.question), sharded.prepare(s.image, s.question)
    kwargs = dict(method=method, n_steps=8, baseline="mean") if method == "integrated_gradients" else dict(method=method)
    attr_a, attr_b = attribute(plain, a, **kwargs), attribute(sharded, b, **kwargs)
    assert attr_a.target_token == attr_b.target_token
    scale = max(1.0, float(np.nanmax(np.abs(attr_a.scores))))
    _close(attr_a.scores / scale, attr_b.scores / scale)
    _close(attr_a.target_value, attr_b.target_value)


def test_placement_arguments_get_clear_errors(tmp_path):
    with pytest.raises(InputError, match="either device='cpu'.*or device_map"):
        load_vlm("zoo:shapes-llava", device="cpu", device_map="auto")
    with pytest.raises(InputError, match="max_memory and offload_folder place a model with device_map"):
        load_vlm("zoo:shapes-llava", offload_folder=str(tmp_path))
    with pytest.raises(InputError, match="'disk': pass offload_folder"):
        load_vlm("zoo:shapes-llava", device_map={"": "disk"})
    with pytest.raises(InputError, match="device_map 'everywhere' is not one of"):
        load_vlm("zoo:shapes-llava", device_map="everywhere")
    assert _main_device({"a": "cpu", "b": "disk"}) == torch.device("cpu")
    assert _main_device({"a": "cpu", "b": 1, "c": 0}) == torch.device("cuda:1")


def test_auto_map_with_a_memory_limit_offloads_to_disk(tmp_path):
    # the zoo model is 1.3 MB: 0.7 MB of "CPU memory" keeps the vision embeddings, the rest goes to disk
    vlm = load_vlm("zoo:shapes-llava", device_map="auto", max_memory={"cpu": 700_000}, offload_folder=str(tmp_path))
    assert {"cpu", "disk"} <= set(vlm.model.hf_device_map.values())
    plain = load_vlm("zoo:shapes-llava", device="cpu")
    s = _samples()[2]
    _close(next_token_logits(plain, plain.prepare(s.image, s.question)),
           next_token_logits(vlm, vlm.prepare(s.image, s.question)))
