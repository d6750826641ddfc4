"""What a real checkpoint brings that the tiny models must not hide: stable provenance across
transformers versions, full-width architectures, low-precision numerics."""

from __future__ import annotations

import torch
from PIL import Image

from analysis.models import VLM
from analysis.models.config_digest import config_digest, essential_fields
from analysis.published import PUBLISHED
from analysis.testing import full_width_parts, tiny_parts


def test_config_digest_is_the_same_under_every_transformers_version():
    """Digests checked equal under transformers 5.23.0 and 5.24.0 (where a hash of ``to_dict()``
    differed for every one of these configs): only fields that differ from the defaults count."""
    from transformers import AutoConfig

    from analysis.zoo.registry import checkpoint_path

    assert config_digest(AutoConfig.from_pretrained(checkpoint_path("shapes-llava-local"))) == "a9dc8cc06614e8ef"
    model, _ = tiny_parts("llava")
    config = model.config
    assert config_digest(config) == "6a6bed8f3be6695f"
    fields = essential_fields(config)
    assert "transformers_version" not in fields and "use_cache" not in fields["text_config"]  # a default
    assert fields["text_config"]["hidden_size"] == 64
    config.transformers_version = "9.99.0"
    assert config_digest(config) == "6a6bed8f3be6695f"
    config.get_text_config().num_hidden_layers = 3
    assert config_digest(config) != "6a6bed8f3be6695f"


# Image-token counts of the real processors, (width, height) -> <image> tokens, worked out from each
# processor's published rules:
#   LLaVA-1.5: 336 / 14 = 24 -> 24 x 24 = 576 for any image (CLS dropped).
#   LLaVA-NeXT any-res: base 576 + the best pinpoint's tiles after unpadding + one newline per row:
#     336 x 336 -> 336 x 672 canvas, 24 x 48 unpadded to 24 x 24: 576 + 24 + 576 = 1176;
#     672 x 672 -> 2 x 2 tiles, 48 x 48: 2304 + 48 + 576 = 2928;
#     1008 x 336 -> 1 x 3 tiles, 24 x 72: 1728 + 24 + 576 = 2328.
#   Qwen2-VL: 448 x 448 -> 32 x 32 patches of 14, merged 2 x 2 -> 256.
#   Idefics3: longest edge to 4 x 364 = 1456, 364 px tiles of 26 x 26 patches, pixel shuffle 2 -> 169
#     per tile; 1456 x 728 -> 4 x 2 tiles + the global one = 9 x 169 = 1521.
#   SmolVLM-256M: longest edge to 2048, 512 px tiles of 32 x 32 patches, shuffle 4 -> 64 per tile;
#     1024 x 512 -> 4 x 2 tiles + global = 9 x 64 = 576.
#   PaliGemma-224: 224 / 14 = 16 -> 256.
IMAGE_TOKENS = {
    "llava": {(336, 336): 576, (640, 480): 576},
    "llava_next": {(336, 336): 1176, (672, 672): 2928, (1008, 336): 2328},
    "qwen2_vl": {(448, 448): 256},
    "qwen2_5_vl": {(448, 448): 256},
    "idefics3": {(1456, 728): 1521},
    "smolvlm": {(1024, 512): 576},
    "paligemma": {(224, 224): 256, (640, 480): 256},
}


def test_full_width_architecture_and_image_token_counts(family, monkeypatch):
    """The published architecture (built on the meta device: shapes without weights) and the real
    processor's image-token counts, through ``prepare`` (inputs kept on the CPU)."""
    published = PUBLISHED[family]
    model, processor = full_width_parts(family, device="meta")
    text = published.text
    layer = model.get_decoder().layers[0]
    head_dim, heads, kv_heads = text["head_dim"], text["num_attention_heads"], text["num_key_value_heads"]
    assert tuple(layer.self_attn.q_proj.weight.shape) == (heads * head_dim, text["hidden_size"])
    assert tuple(layer.self_attn.k_proj.weight.shape) == (kv_heads * head_dim, text["hidden_size"])
    assert tuple(layer.mlp.gate_proj.weight.shape) == (text["intermediate_size"], text["hidden_size"])
    assert model.get_output_embeddings().weight.shape[0] >= text["vocab_size"] >= 32064
    assert len(model.get_decoder().layers) == 2
    monkeypatch.setattr(VLM, "device", property(lambda self: torch.device("cpu")))
    vlm = VLM.from_parts(model, processor, name=f"full:{family}")
    image_token = vlm.adapter.image_token_id
    for (width, height), expected in IMAGE_TOKENS[family].items():
        image = Image.new("RGB", (width, height), (120, 60, 30))
        prepared = vlm.prepare(image, "What colour is the square?")
        assert int((prepared.input_ids == image_token).sum()) == expected, (width, height)
        assert len(prepared.image_positions) == expected
        assert vlm.tokenizer.decode(prepared.input_ids[prepared.question_positions]).strip() == "What colour is the square?"
