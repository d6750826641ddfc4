"""Bad input gets a clear error that says what to do."""

from __future__ import annotations

import numpy as np
import pytest
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
