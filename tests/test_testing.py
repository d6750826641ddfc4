"""Tests for analysis.testing: tiny random VLMs of every family, built offline."""

from __future__ import annotations

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from analysis.testing import CORE_FAMILIES, SUPPORTED_TINY_FAMILIES, tiny_parts

# PaliGemmaProcessor calls np.array(torch tensor, copy=False) to build its labels (upstream noise).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

QUESTION = "what color is the circle ?"
OTHER_QUESTIONS = [
    "is there a red square ?",
    "how many circles are there ?",
    "What shape is left of the green star ?",
    "describe the image .",
]

# Image-placeholder tokens for a 200 x 150 (W x H) image: the family's real layout rules.
EXPECTED_IMAGE_TOKENS = {
    "llava": 256,  # 16 x 16 patches (224 px; real 336 px: 24 x 24)
    "llava_next": 624,  # base 256 + 1x2 tiles (224 px) unpadded to 16 x 22 + 16 newlines
    "qwen2_vl": 35,  # smart_resize to 140 x 196 -> 10 x 14 patches -> 5 x 7 merged
    "qwen2_5_vl": 35,
    "idefics3": 80,  # 2 x 2 tiles + global, 16 each (112 px tiles of 8 x 8 patches, shuffled by 2)
    "smolvlm": 80,  # 2 x 2 tiles + global, 16 each (256 px tiles of 16 x 16 patches, shuffled by 4)
    "paligemma": 256,  # 16 x 16 patches
    "gemma3": 256,  # 32 x 32 patches pooled 2 x 2
    "vipllava": 576,  # LLaVA-1.5's 336 px: 24 x 24 patches
    "llava_next_video": 624,  # as llava_next
    "llava_onevision": 1317,  # base 27 x 27 + 1 tile unpadded to 21 x 27 + 21 newlines
    "mistral3": 48,  # 200 x 150 rounded up to 224 x 168 -> 8 x 6 tokens of 28 px (+ 6 break/end tokens)
    "internvl": 448,  # 3 x 2 tiles + thumbnail, 8 x 8 each
    "qwen3_vl": 30,  # smart_resize to 192 x 160 -> 12 x 10 patches of 16 px -> 6 x 5 merged
    "video_llava": 256,  # 16 x 16 patches of a 224 px centre crop
    "glm4v": 35,  # as qwen2_vl
    "qwen3_vl_moe": 30,  # as qwen3_vl
    "glm4v_moe": 35,  # as qwen2_vl
    "glm46v": 35,
    "aya_vision": 448,  # as internvl: 3 x 2 tiles + global tile, 8 x 8 each
    "cohere2_vision": 64,  # one 224 px tile (the least up-scaling), 8 x 8
    "got_ocr2": 64,  # one 512 px tile, 32 x 32 patches -> two stride-2 convolutions -> 8 x 8
    "idefics2": 64,  # the perceiver's latents (token-level: no patch grid)
    "glmga": 35,  # as qwen2_vl
    "glm_ocr": 35,
    "lighton_ocr": 35,  # 200 x 150 rounded up to 14 px: 210 x 154 -> 7 x 5 tokens of 28 px (the rest dropped)
    "janus": 576,  # 24 x 24 patches of the 384 px padded square
    "deepseek_vl": 576,
    "paddleocr_vl": 35,  # as qwen2_vl
    "deepseek_vl_hybrid": 576,  # as janus
    "video_llama_3": 154,  # smart_resize to 196 x 154 -> 11 x 14 patches of 14 px, not merged
    "qwen2_5_omni_thinker": 35,  # as qwen2_5_vl (token-level: the generic path)
    "qwen3_omni_moe_thinker": 30,  # as qwen3_vl (token-level)
    "ovis2": 256,  # one 224 px tile, 16 x 16 visual-vocabulary atoms (token-level)
    "aria": 16,  # the projector's learned queries (token-level)
    "gemma4": 63,  # 16 px patches of the image at its aspect ratio, pooled 2 x 2, within 70 (token-level)
    "cosmos3_omni": 30,  # as qwen3_vl (token-level)
    "qianfan_ocr": 448,  # as internvl (token-level)
    "exaone4_5": 35,  # as qwen2_5_vl (token-level)
    "granite_docling": 64,  # one 512 px tile, 32 x 32 patches shuffled by 4 -> 8 x 8 (token-level)
    "kimi_k25": 48,  # padded to 224 x 168, 14 px patches merged 2 x 2 -> 8 x 6 (token-level)
    "cosmos3_edge": 30,  # smart_resize to 192 x 160, 16 px patches merged 2 x 2 -> 6 x 5 (token-level)
    "ernie4_5_vl_moe": 35,  # as qwen2_vl (token-level)
    "gemma4_unified": 63,  # 48 px model patches at the image's aspect ratio, within 70 (token-level)
    "muse_glimmer": 48,  # 224 x 168, 14 px patches shuffled 2 x 2 -> 8 x 6 (token-level)
    "muse_spark": 48,  # as muse_glimmer (token-level)
    "unlimited_ocr": 73,  # the 512 px global view: 8 x 8 + a separator per row + 1 (token-level)
    "step3p7": 16,  # a 224 px square, 16 x 16 patches, two stride-2 convolutions -> 4 x 4 (token-level)
    "molmo2": 65,  # 4 x 4 low-res view + a 7 x 7 grid of the crops (token-level)
    "hyperclovax_vision_v2": 35,  # as qwen2_5_vl (token-level)
}


@pytest.fixture(scope="module")
def image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(150, 200, 3), dtype=np.uint8)
    return Image.fromarray(pixels)  # uint8 H x W x 3 -> RGB


@pytest.fixture(scope="module", params=SUPPORTED_TINY_FAMILIES)
def parts(request):
    """Every family's tiny model and processor (the geometry and tokenizer checks, one forward each)."""
    family = request.param
    model, processor = tiny_parts(family)
    return family, model, processor


@pytest.fixture(scope="module", params=CORE_FAMILIES)
def core_parts(request):
    """The core families' (the other families' save/load and eager checks are in test_families_conformance)."""
    family = request.param
    model, processor = tiny_parts(family)
    return family, model, processor


def prompt_for(processor, question: str = QUESTION) -> str:
    """The family's chat-templated prompt, or PaliGemma's raw one."""
    if processor.chat_template is None:
        return "<image>answer en " + question
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def encode(processor, image: Image.Image) -> dict[str, torch.Tensor]:
    # GOT-OCR2's processor takes the tokens per tile as a call argument (256 by default; its adapter passes the
    # model's count, as here)
    extra = {"num_image_tokens": EXPECTED_IMAGE_TOKENS["got_ocr2"]} if type(processor).__name__ == "GotOcr2Processor" else {}
    inputs = processor(images=image, text=prompt_for(processor), return_tensors="pt", **extra)
    inputs.pop("labels", None)  # PaliGemma returns training labels (all -100 without a suffix)
    return dict(inputs)


def test_processor_and_model_geometry_agree(parts, image):
    family, model, processor = parts
    assert not model.training and model.dtype == torch.float32
    inputs = encode(processor, image)
    ids = inputs["input_ids"]
    n_image = int((ids == model.config.image_token_id).sum())
    assert n_image == EXPECTED_IMAGE_TOKENS[family]
    with torch.no_grad():
        logits = model(**inputs).logits  # the model checks #placeholders == #image features
    vocab = model.config.get_text_config().vocab_size
    assert vocab == len(processor.tokenizer)
    assert logits.shape == (1, ids.shape[1], vocab)
    assert torch.isfinite(logits).all()


def test_question_round_trips_through_the_tokenizer(parts, image):
    _, _, processor = parts
    tok = processor.tokenizer
    q_ids = tok.encode(QUESTION, add_special_tokens=False)
    assert tok.unk_token_id not in q_ids
    assert tok.decode(q_ids) == QUESTION
    for question in OTHER_QUESTIONS:  # spaced punctuation round-trips exactly
        other_ids = tok.encode(question, add_special_tokens=False)
        assert tok.unk_token_id not in other_ids and tok.decode(other_ids) == question
    # the toy WordLevel tokenizers split punctuation off; a byte-level toy BPE (HyperCLOVA X) keeps the text as written
    byte_level = type(tok.backend_tokenizer.pre_tokenizer).__name__ == "ByteLevel"
    assert tok.decode(tok.encode("circle?", add_special_tokens=False)) == ("circle?" if byte_level else "circle ?")
    ids = encode(processor, image)["input_ids"][0].tolist()
    starts = [i for i in range(len(ids)) if ids[i : i + len(q_ids)] == q_ids]
    assert len(starts) == 1  # the question appears once, as the same ids as on its own


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_same_seed_same_weights(family):
    a, _ = tiny_parts(family, seed=0)
    b, _ = tiny_parts(family, seed=0)
    c, _ = tiny_parts(family, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_save_and_reload_offline(core_parts, image, tmp_path, monkeypatch):
    _, model, processor = core_parts
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model2 = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    processor2 = AutoProcessor.from_pretrained(tmp_path)
    assert type(model2) is type(model) and type(processor2) is type(processor)
    assert len(processor2.tokenizer) == len(processor.tokenizer)
    assert processor2.chat_template == processor.chat_template
    inputs, inputs2 = encode(processor, image), encode(processor2, image)
    assert inputs.keys() == inputs2.keys()
    assert torch.equal(inputs["input_ids"], inputs2["input_ids"])
    with torch.no_grad():
        logits, logits2 = model(**inputs).logits, model2(**inputs2).logits
    assert (logits - logits2).abs().max().item() < 1e-5


def test_eager_attention_outputs(core_parts, image):
    family, _, processor = core_parts
    model, _ = tiny_parts(family)
    inputs = encode(processor, image)
    with torch.no_grad():
        sdpa_logits = model(**inputs).logits
        model.set_attn_implementation("eager")
        out = model(**inputs, output_attentions=True)
    text = model.config.get_text_config()
    T = inputs["input_ids"].shape[1]
    assert (out.logits - sdpa_logits).abs().max().item() < 1e-4
    assert len(out.attentions) == text.num_hidden_layers
    for attn in out.attentions:
        assert attn.shape == (1, text.num_attention_heads, T, T)
        torch.testing.assert_close(attn.sum(-1), torch.ones(1, text.num_attention_heads, T))
    first_to_last = out.attentions[0][0, :, 0, T - 1]
    if family == "paligemma":  # prefix-LM: the whole prompt (image + text + "\n") is bidirectional
        assert (first_to_last > 0).all()
    else:
        assert (first_to_last == 0).all()


def test_unknown_family_lists_supported():
    with pytest.raises(ValueError, match="llava_next.*qwen2_5_vl.*paligemma"):
        tiny_parts("blip2")


def test_published_image_geometry_at_tiny_widths():
    """``image_geometry="published"``: the real checkpoint's image geometry on a tiny model (the attention benchmark's
    LLaVA-NeXT length): a 672 x 672 image on 336 px tiles is 576 + 2 x 2 tiles of 24 x 24 + 48 newlines = 2928 tokens
    (the tiny default, on 224 px tiles, makes 1312), and the model runs on them."""
    model, processor = tiny_parts("llava_next", image_geometry="published")
    image = Image.new("RGB", (672, 672), (20, 160, 90))
    inputs = encode(processor, image)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 2928
    with torch.no_grad():
        assert torch.isfinite(model(**inputs, logits_to_keep=1).logits).all()
    _, tiny_processor = tiny_parts("llava_next")
    assert int((encode(tiny_processor, image)["input_ids"] == model.config.image_token_id).sum()) == 1312
    with pytest.raises(ValueError, match="image_geometry must be 'tiny' or, for .*'published'; got 'published' for 'glm4v'"):
        tiny_parts("glm4v", image_geometry="published")
