"""The activation cache: served without the model, atomic, damage-detecting, resumable, strict on keys."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import analysis.cache as cache_module
from analysis.cache import ActivationCache, weights_fingerprint
from analysis.capture import capture
from analysis.data.samples import Sample
from analysis.testing import tiny_vlm

FAMILY = "qwen2_vl"  # the cheapest tiny model; the per-family cache round trip is in test_capture.py


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    rng = np.random.default_rng(3)
    questions = ["what color is the circle ?", "is there a red square ?", "how many shapes are there ?",
                 "what shape is red ?"]
    return [Sample(Image.fromarray(rng.integers(0, 256, (60 + 20 * i, 90, 3), dtype=np.uint8)), q, id=i)
            for i, q in enumerate(questions)]


class Forwards:
    """Counts the model's forward calls; optionally raises on call number ``fail_at``."""

    def __init__(self, vlm, fail_at: int | None = None):
        self.n, self.fail_at = 0, fail_at
        self.handle = vlm.model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.n += 1
        if self.n == self.fail_at:
            raise KeyboardInterrupt("simulated kill")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _run(vlm, samples, root, **kwargs):
    kwargs = dict(layers=[0, 1], roles=["image", "last"], batch_size=1, progress=False, **kwargs)
    return capture(vlm, samples, cache=root, **kwargs)


def _assert_same(a, b):
    assert a.ids == b.ids
    for key, value in a.features.items():
        assert torch.equal(value, b.features[key]), key


def test_second_run_is_served_without_the_model(tiny, samples, tmp_path):
    vlm = tiny(FAMILY)
    with Forwards(vlm) as forwards:
        first = _run(vlm, samples, tmp_path)
        assert forwards.n == len(samples) and not first.meta["cached"].any()
        cache = ActivationCache(tmp_path)
        second = _run(vlm, samples, cache)
        assert forwards.n == len(samples), "the second run called the model"
    assert second.meta["cached"].all() and cache.hits == len(samples) and cache.misses == 0
    _assert_same(first, second)
    pd_cols = ["prediction", "prediction_id", "correct"]
    assert first.meta[pd_cols].equals(second.meta[pd_cols])


def test_killed_writes_are_detected_and_the_run_resumes(tiny, samples, tmp_path, monkeypatch):
    vlm = tiny(FAMILY)
    clean = _run(vlm, samples, tmp_path / "clean")
    root = tmp_path / "cache"

    # 1. Killed between writing the tensors and writing the JSON of the second entry.
    real_replace, calls = os.replace, {"n": 0}

    def dying_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 4:  # entry 1: tensors, JSON; entry 2: tensors, then die before its JSON
            raise KeyboardInterrupt("simulated kill")
        real_replace(src, dst)

    monkeypatch.setattr(cache_module.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        _run(vlm, samples, root)
    monkeypatch.setattr(cache_module.os, "replace", real_replace)
    assert len(list(root.glob("*/*.json"))) == 1 and len(list(root.glob("*/*.safetensors"))) == 2

    # 2. Killed mid-forward on the fourth sample: the second and third are stored first.
    with Forwards(vlm, fail_at=3), pytest.raises(KeyboardInterrupt):
        _run(vlm, samples, root)
    entries = sorted(root.glob("*/*.json"))
    assert len(entries) == 3

    # 3. A truncated tensor file (a write cut short outside the atomic path) and an orphan temp file.
    damaged = entries[0].with_suffix(".safetensors")
    damaged.write_bytes(damaged.read_bytes()[:40])
    (entries[0].parent / ".orphan.safetensors.x.tmp").write_bytes(b"partial")

    cache = ActivationCache(root)
    with Forwards(vlm) as forwards:
        resumed = _run(vlm, samples, cache)
    assert forwards.n == 2, "only the damaged entry and the never-written fourth sample are recomputed"
    assert cache.corrupt == 1 and cache.hits == 2
    _assert_same(clean, resumed)
    assert cache.clean() == 1 and not list(root.glob("*/.*.tmp"))


def test_entries_with_different_key_fields_are_never_served(tiny, samples, tmp_path):
    vlm = tiny(FAMILY)
    _run(vlm, samples[:2], tmp_path)
    cache = ActivationCache(tmp_path)
    # A different request (layers, roles or pooling) misses.
    with Forwards(vlm) as forwards:
        _run(vlm, samples[:2], cache, pool=None)
        assert forwards.n == 2
    # Another model with the same architecture and name but other weights misses.
    other = tiny_vlm(FAMILY, seed=1)
    assert weights_fingerprint(other.model) != weights_fingerprint(vlm.model)
    with Forwards(other) as forwards:
        _run(other, samples[:2], cache)
        assert forwards.n == 2

    # An entry copied under another key (a collision, or a hand-edited file) is refused.
    fields_a = {"question": "what color is the circle ?", "layer": 0}
    fields_b = {"question": "what color is the square ?", "layer": 0}
    direct = ActivationCache(tmp_path / "direct")
    direct.store(fields_a, {"x": torch.ones(3)}, {"note": "a"})
    for src, dst in zip(direct.paths(fields_a), direct.paths(fields_b)):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    assert direct.load(fields_b) is None
    tensors, meta = direct.load(fields_a)
    assert torch.equal(tensors["x"], torch.ones(3)) and meta == {"note": "a"}
    # A JSON that does not parse is a miss, not an error.
    direct.paths(fields_a)[1].write_text("{not json")
    assert direct.load(fields_a) is None and direct.corrupt == 1
