"""Bad input gets a clear error that says what to do."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from analysis import load_vlm
from analysis.data import load_image
from analysis.errors import ImageError, InputError, ModelNotFoundError, PromptTooLongError, UnsupportedModelError
from conftest import QUESTION


def test_missing_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model folder.*check the path"):
        load_vlm(tmp_path / "does-not-exist")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_vlm(tmp_path)


def test_hub_id_while_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"HF_HUB_OFFLINE=1.*--local-dir DIR.*load_vlm\('DIR'\)"):
        load_vlm("llava-hf/llava-1.5-7b-hf")


def test_unsupported_family(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"'llama' is not a supported.*LLaVA-1\.5.*Qwen2-VL.*PaliGemma"):
        load_vlm(tmp_path)


def test_known_unsupported_families_say_why_and_the_nearest_supported_one(tmp_path):
    from transformers import Gemma3nConfig, MllamaConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    from analysis.models.adapters import NOT_SUPPORTED, SUPPORTED_FAMILIES

    assert set(NOT_SUPPORTED) <= set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)  # real model types, no typos
    assert {nearest for nearest, _ in NOT_SUPPORTED.values()} <= set(SUPPORTED_FAMILIES)
    Gemma3nConfig().save_pretrained(tmp_path / "gemma3n")
    with pytest.raises(UnsupportedModelError, match=r"'gemma3n' is not a supported VLM family \(not adapted yet: "
                                                    r"a Gemma decoder.*nearest supported family is PaliGemma"):
        load_vlm(tmp_path / "gemma3n")
    MllamaConfig().save_pretrained(tmp_path / "mllama")
    with pytest.raises(UnsupportedModelError, match=r"'mllama'.*refused: its language model reads the image through "
                                                    r"cross-attention"):
        load_vlm(tmp_path / "mllama")


def test_unknown_zoo_name():
    with pytest.raises(ModelNotFoundError, match=r"no-such-model.*python -m analysis\.zoo\.train --all"):
        load_vlm("zoo:no-such-model")


def test_missing_and_unreadable_image(tiny, tmp_path):
    vlm = tiny("llava")
    with pytest.raises(ImageError, match="does not exist"):
        vlm.prepare(tmp_path / "missing.png", QUESTION)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="cannot read"):
        vlm.prepare(bad, QUESTION)
    with pytest.raises(ImageError, match="unsupported image type"):
        vlm.prepare(12, QUESTION)
    with pytest.raises(ImageError, match="uint8"):
        vlm.prepare(np.zeros((8, 8, 3), dtype=np.float32), QUESTION)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_non_rgb_images_are_converted(tiny, tmp_path, mode):
    image = Image.new("RGB", (40, 30), (200, 30, 60)).convert(mode)
    path = tmp_path / f"image.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    image.save(path)
    for source in (image, path):
        prepared = tiny("llava").prepare(source, QUESTION)
        assert prepared.image.mode == "RGB" and prepared.image.size == (40, 30)


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.zeros((4, 4), dtype=np.uint8)).mode == "RGB"


def test_prompt_too_long(tiny, photo):
    vlm = tiny("llava")
    question = " ".join(["circle"] * (vlm.max_length + 1))
    with pytest.raises(PromptTooLongError, match="accepts at most"):
        vlm.prepare(photo, question)


def test_bad_question_and_layer(tiny, photo):
    vlm = tiny("llava")
    with pytest.raises(InputError, match="non-empty"):
        vlm.prepare(photo, "   ")
    with pytest.raises(InputError, match=r"layers 0\.\.1"):
        vlm.check_layer(vlm.n_layers)
    with pytest.raises(InputError, match="unknown dtype"):
        load_vlm("llava-hf/llava-1.5-7b-hf", dtype="float8")


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_question_with_image_placeholder(tiny, photo, family):
    vlm = tiny(family)
    placeholder = vlm.processor.image_token
    with pytest.raises(InputError, match=rf"contains '{re.escape(placeholder)}'.*remove it from the question"):
        vlm.prepare(photo, f"what is {placeholder} showing ?")


def test_invalid_device_string():
    with pytest.raises(InputError, match=r"device 'gpu0' is not available here; use one of 'auto', 'cpu'"):
        load_vlm("tiny:llava", device="gpu0")


def test_missing_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=r"device 'cuda' is not available here; use one of 'auto', 'cpu'"):
        load_vlm("tiny:llava", device="cuda")


def test_cuda_index_beyond_the_gpus_here(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match=r"device 'cuda:1' is not available.*'cuda', 'cuda:0'"):
        load_vlm("tiny:llava", device="cuda:1")


@pytest.mark.parametrize("size", [(5000, 10), (10, 5000)])
def test_image_too_elongated_for_qwen2_vl(tiny, size):
    with pytest.raises(ImageError, match=rf"Qwen2-VL processor cannot take this {size[0]}x{size[1]} image .*"
                                         r"aspect ratio must be smaller than 200.*less elongated shape"):
        tiny("qwen2_vl").prepare(Image.new("RGB", size), QUESTION)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_tiny_image_warns_that_it_is_upsampled(tiny, family):
    vlm = tiny(family)
    with pytest.warns(UserWarning, match=r"2x2 image is far below the model's input resolution.*upsampled image"):
        prepared = vlm.prepare(Image.new("RGB", (2, 2)), QUESTION)
    assert prepared.image.size == (2, 2)


def test_normal_images_do_not_warn(tiny, photo, family):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tiny(family).prepare(photo, QUESTION)


def test_cache_path_that_is_a_file(tmp_path):
    from analysis.cache import ActivationCache

    path = tmp_path / "cache.txt"
    path.write_text("not a folder")
    with pytest.raises(InputError, match="needs a folder.*is a file"):
        ActivationCache(path)


def test_generic_path_takes_or_refuses_by_structure():
    """Without an adapter, a model type goes to the generic token-level path, which checks the model's structure
    (here on default configs built on the meta device) and says what is missing."""
    from analysis.families import structure
    from analysis.models.adapters import TokenLevelAdapter, adapter_for

    assert adapter_for("idefics2") is TokenLevelAdapter and structure("idefics2") == []
    assert any("no image placeholder token" in p for p in structure("kosmos-2"))
    assert any("bypasses transformers' AttentionInterface" in p for p in structure("glm5_next"))
    with pytest.raises(UnsupportedModelError, match=r"'qwen3_5'.*refused: linear-attention"):
        adapter_for("qwen3_5")


def test_families_command_matches_the_readme(monkeypatch):
    """`python -m analysis families` (every image-text-to-text model type of transformers, with the
    supported families' tiny-model conformance) is the README's table."""
    import re
    from pathlib import Path

    import analysis.families
    from analysis.families import STATUSES, family_table, markdown
    from analysis.models import SUPPORTED_FAMILIES
    from conftest import conformance_of

    monkeypatch.setattr(analysis.families, "_conformance", conformance_of)  # computed once per session
    rows = family_table(checks=True)
    assert {r["status"] for r in rows} <= set(STATUSES)
    assert [r["model_type"] for r in rows if r["status"] == "full"] == sorted(SUPPORTED_FAMILIES)
    assert all(r["checks"] == "pass" for r in rows if r["status"] == "full" or r.get("tiny"))
    full = sum(r["status"] == "full" for r in rows)
    assert full >= 25 and full + sum(r["status"] == "token-level" for r in rows) >= 40  # issue 13's acceptance
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"<!-- families:begin -->\n(.*?)\n<!-- families:end -->", readme, re.S).group(1)
    assert block == markdown(rows), "README's families table is stale: paste `python -m analysis families`"
