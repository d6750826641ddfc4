"""Published architectures of one checkpoint per supported family, for shape-faithful test models.

Each entry holds the values of the checkpoint's ``config.json`` (text decoder, vision tower,
the fields that tie them) and ``preprocessor_config.json`` that decide tensor shapes and the
image-token layout: widths, heads, key/value heads, head_dim, MLP width, vocabulary, RoPE,
vision width, image and patch size, tiling and merging. ``analysis.testing.full_width_parts``
builds them with the depth cut to 2 text and 2 vision layers and random weights.

Sources (Hugging Face model repositories, files ``config.json`` / ``preprocessor_config.json``):

* llava: ``llava-hf/llava-1.5-7b-hf`` (Vicuna-7B text, CLIP ViT-L/14-336 vision)
* llava_next: ``llava-hf/llava-v1.6-vicuna-7b-hf`` (same text and vision as LLaVA-1.5, any-res
  pinpoints); its Llama-2 tokenizer is the real one offline
* qwen2_vl: ``Qwen/Qwen2-VL-7B-Instruct``
* qwen2_5_vl: ``Qwen/Qwen2.5-VL-7B-Instruct``
* idefics3: ``HuggingFaceM4/Idefics3-8B-Llama3`` (Llama-3-8B text, SigLIP so400m vision, 364 px tiles)
* smolvlm: ``HuggingFaceTB/SmolVLM-256M-Instruct`` (SmolLM2-135M text, SigLIP base/16-512 vision)
* paligemma: ``google/paligemma-3b-pt-224`` (Gemma-2B text, SigLIP so400m vision)

The vocabulary is the published one, or the offline tokenizer's where that is larger (the
stand-ins of ``analysis.testing.REAL_TOKENIZER`` for PaliGemma and SmolVLM, and Llama-3 with the
Idefics3 tile tokens), so that every token id has an embedding row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PUBLISHED", "Published"]


@dataclass(frozen=True)
class Published:
    """One checkpoint's published architecture.

    Attributes:
        checkpoint: the Hugging Face repository the values are from.
        text: text-config fields (depth excluded).
        vision: vision-config fields (depth excluded).
        top: fields of the composite config (projector, feature layer, tiling).
        processor: image-processor settings (``size`` etc.) and processor arguments.
    """

    checkpoint: str
    text: dict
    vision: dict
    top: dict = field(default_factory=dict)
    processor: dict = field(default_factory=dict)


_CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, image_size=336, patch_size=14,
                   projection_dim=768, layer_norm_eps=1e-5, hidden_act="quick_gelu")
_VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                  head_dim=128, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
_QWEN2_7B = dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
                 head_dim=128, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
                 rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]})
_QWEN_PIXELS = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}  # min_pixels 3136, max_pixels 12845056
_SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, patch_size=14)

_LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]

PUBLISHED: dict[str, Published] = {
    "llava": Published(
        "llava-hf/llava-1.5-7b-hf", _VICUNA_7B, _CLIP_L_336,
        top=dict(vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
                 image_seq_length=576),
        processor=dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
    ),
    "llava_next": Published(
        "llava-hf/llava-v1.6-vicuna-7b-hf", _VICUNA_7B, _CLIP_L_336,
        top=dict(vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
                 image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS, image_seq_length=576),
        processor=dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                       image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS),
    ),
    "qwen2_vl": Published(
        "Qwen/Qwen2-VL-7B-Instruct", _QWEN2_7B,
        dict(embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16, patch_size=14, spatial_merge_size=2,
             temporal_patch_size=2),
        processor=dict(size=_QWEN_PIXELS),
    ),
    "qwen2_5_vl": Published(
        "Qwen/Qwen2.5-VL-7B-Instruct", _QWEN2_7B,
        dict(hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584, window_size=112,
             patch_size=14, spatial_merge_size=2, temporal_patch_size=2, hidden_act="silu",
             fullatt_block_indexes=[1]),  # published [7, 15, 23, 31] of 32: every 8th; the last of 2 here
        processor=dict(size=_QWEN_PIXELS),
    ),
    "idefics3": Published(
        "HuggingFaceM4/Idefics3-8B-Llama3",
        dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
             vocab_size=128259, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
        dict(_SIGLIP_SO400M, image_size=364),
        top=dict(scale_factor=2),
        processor=dict(size={"longest_edge": 4 * 364}, max_image_size={"longest_edge": 364}, image_seq_len=169),
    ),
    "smolvlm": Published(
        "HuggingFaceTB/SmolVLM-256M-Instruct",
        dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
             vocab_size=49280, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
        dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, image_size=512, patch_size=16),
        top=dict(scale_factor=4),
        processor=dict(size={"longest_edge": 4 * 512}, max_image_size={"longest_edge": 512}, image_seq_len=64),
    ),
    "paligemma": Published(
        "google/paligemma-3b-pt-224",
        dict(hidden_size=2048, intermediate_size=16384, num_attention_heads=8, num_key_value_heads=1, head_dim=256,
             vocab_size=257216, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh"),
        dict(_SIGLIP_SO400M, image_size=224, vision_use_head=False),
        top=dict(hidden_size=2048, projection_dim=2048),
    ),
}
