"""Tiny-model builders of the Qwen2-VL-like families (dynamic resolution, ``image_grid_thw``, M-RoPE): Qwen2-VL,
Qwen2.5-VL, Qwen3-VL, GLM-4.xV, PaddleOCR-VL, VideoLLaMA3."""

from __future__ import annotations

from transformers import (
    Glm4vConfig,
    Glm4vMoeConfig,
    Glm46VConfig,
    Glm46VImageProcessor,
    Glm46VProcessor,
    Glm46VVideoProcessor,
    GlmgaConfig,
    GlmOcrConfig,
    Glm4vImageProcessor,
    Glm4vProcessor,
    Glm4vVideoProcessor,
    PaddleOCRVLConfig,
    PaddleOCRVLImageProcessor,
    PaddleOCRVLProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen3VLConfig,
    Qwen3VLMoeConfig,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    VideoLlama3Config,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)

from analysis.testing._common import _QWEN_TEMPLATE, _Recipe, _TEXT, _VISION, _tokenizer


def _build_qwen(family: str, real: str | None = None, byte_level: bool = False) -> _Recipe:
    """Qwen2-VL / Qwen2.5-VL: 14 px patches, temporal 2, 2x2 merge, M-RoPE sections [2, 3, 3] of head_dim 16.
    ``byte_level``: the toy vocabulary as a byte-level BPE (``_tokenizer``)."""
    specials = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"]
    specials += ["<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=specials, chat_template=_QWEN_TEMPLATE,
                     real=real, byte_level=byte_level)
    size = {"shortest_edge": 56 * 56, "longest_edge": 256 * 28 * 28}  # at most 256 merged tokens per image
    processor_class = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
    processor = processor_class(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=_QWEN_TEMPLATE,
    )
    text = dict(
        **_TEXT,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        max_position_embeddings=32768,
        # Qwen2-VL-7B uses [16, 24, 24] of head_dim 128 (t, h, w); the same ratio of head_dim 16.
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
    )
    ids = {
        name: tok.convert_tokens_to_ids(token)
        for name, token in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]
    }
    vision_common = dict(depth=2, num_heads=4, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_vl":
        vision = dict(**vision_common, embed_dim=32, mlp_ratio=2, hidden_size=_TEXT["hidden_size"])
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    else:
        vision = dict(
            **vision_common,
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=_TEXT["hidden_size"],
            window_size=112,
            fullatt_block_indexes=[1],
        )
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    return config, processor


def _build_qwen3_vl(real: str | None = None, moe: bool = False) -> _Recipe:
    """Qwen3-VL: 16 px patches, temporal 2, merge 2 x 2 (32 px per token), interleaved M-RoPE, DeepStack (vision
    features of 2 tower layers added to the first 2 decoder layers' image positions); at most 256 tokens.
    ``moe``: Qwen3-VL-MoE (Qwen3-VL-30B-A3B), every decoder MLP a mixture of 4 experts, 2 per token (real: 128, 8)."""
    specials = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=specials, chat_template=_QWEN_TEMPLATE,
                     real=real)
    size = {"shortest_edge": 64 * 64, "longest_edge": 256 * 32 * 32}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2, image_mean=[0.5] * 3,
                                              image_std=[0.5] * 3),
        tokenizer=tok, video_processor=Qwen3VLVideoProcessor(size=size, patch_size=16), chat_template=_QWEN_TEMPLATE,
    )
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [2, 3, 3],
                                 "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=_TEXT["hidden_size"], num_position_embeddings=256,
                  deepstack_visual_indexes=[0, 1])
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    if moe:
        text |= dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
        return Qwen3VLMoeConfig(text_config=text, vision_config=vision, **ids), processor
    return Qwen3VLConfig(text_config=text, vision_config=vision, **ids), processor


# GLM-4.1V (zai-org/GLM-4.1V-9B-Thinking), without its thinking instructions.
_GLM4V_TEMPLATE = (
    "[gMASK]<sop>"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<|begin_of_image|><|image|><|end_of_image|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _build_glm4v(real: str | None = None, variant: str = "glm4v") -> _Recipe:
    """GLM-4.1V: Qwen2-VL's geometry (14 px patches, temporal 2, merge 2 x 2, ``image_grid_thw``) with a GLM-4 decoder
    (M-RoPE on half of each head: partial rotary 0.5, sections [1, 1, 2] of 4 (GLM-4.1V: [8, 12, 12] of 32)).

    ``variant``: ``"glm4v_moe"`` (GLM-4.5V: layer 0 dense, then a mixture of 4 routed experts, 2 per token, plus a
    shared one; real: 128 and 8), ``"glm46v"`` (GLM-4.6V: GLM-4.1V's model with its own processor classes),
    ``"glmga"`` (GLM-4.6V's model under its own config) or ``"glm_ocr"`` (GLM-OCR: its own config and model classes,
    GLM-4.6V's processor)."""
    specials = ["[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|begin_of_image|>", "<|image|>", "<|end_of_image|>",
                "<|begin_of_video|>", "<|video|>", "<|end_of_video|>"]
    tok = _tokenizer(bos=None, eos="<|endoftext|>", pad="<|pad|>", specials=specials, chat_template=_GLM4V_TEMPLATE,
                     real=real)
    size = {"shortest_edge": 56 * 56, "longest_edge": 256 * 28 * 28}
    if variant in ("glm46v", "glmga", "glm_ocr"):
        processor = Glm46VProcessor(image_processor=Glm46VImageProcessor(size=size), tokenizer=tok,
                                    video_processor=Glm46VVideoProcessor(), chat_template=_GLM4V_TEMPLATE)
    else:
        processor = Glm4vProcessor(image_processor=Glm4vImageProcessor(size=size), tokenizer=tok,
                                   video_processor=Glm4vVideoProcessor(), chat_template=_GLM4V_TEMPLATE)
    text = dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2],
                                 "partial_rotary_factor": 0.5})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, image_size=336, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=_TEXT["hidden_size"])
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image|>"), ("video_token_id", "<|video|>"), ("image_start_token_id", "<|begin_of_image|>"),
        ("image_end_token_id", "<|end_of_image|>"), ("video_start_token_id", "<|begin_of_video|>"),
        ("video_end_token_id", "<|end_of_video|>")]}
    if variant == "glm4v_moe":
        text |= dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
                     first_k_dense_replace=1)
        return Glm4vMoeConfig(text_config=text, vision_config=vision, **ids), processor
    if variant == "glm_ocr":
        return GlmOcrConfig(text_config=text, vision_config=vision, **ids), processor
    if variant in ("glm46v", "glmga"):
        return (Glm46VConfig if variant == "glm46v" else GlmgaConfig)(text_config={**text, "model_type": "glm4v_text"},
                            vision_config={**vision, "model_type": "glm4v_vision"}, **ids), processor
    return Glm4vConfig(text_config=text, vision_config=vision, **ids), processor


# PaddleOCR-VL (PaddlePaddle/PaddleOCR-VL), without its system turn.
_PADDLE_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ 'User: ' if message['role'] == 'user' else 'Assistant: ' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)


def _build_paddleocr_vl(real: str | None = None) -> _Recipe:
    """PaddleOCR-VL: Qwen2-VL's geometry (smart_resize, 14 px patches, no temporal patches, merged 2 x 2,
    ``image_grid_thw``; at most 256 tokens here, real 1536 x 1536 px) with a NaViT-style SigLIP tower and an ERNIE-4.5
    decoder with 3-D M-RoPE."""
    named = {"image_token": "<|IMAGE_PLACEHOLDER|>"}
    tok = _tokenizer(bos="<s>", eos="</s>", pad="<unk>" if real else "<pad>", specials=["<|IMAGE_START|>",
                     "<|IMAGE_END|>", "<|VIDEO_PLACEHOLDER|>", *named.values()], chat_template=_PADDLE_TEMPLATE,
                     real=real, named=named, extra_tokens=("User:", "Assistant:"))
    size = {"shortest_edge": 56 * 56, "longest_edge": 256 * 28 * 28}
    processor = PaddleOCRVLProcessor(image_processor=PaddleOCRVLImageProcessor(size=size), tokenizer=tok,
                                     chat_template=_PADDLE_TEMPLATE)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [2, 3, 3]})
    vision = dict(**_VISION, image_size=224, patch_size=14, spatial_merge_size=2)
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|IMAGE_PLACEHOLDER|>"), ("video_token_id", "<|VIDEO_PLACEHOLDER|>"),
        ("vision_start_token_id", "<|IMAGE_START|>"), ("vision_end_token_id", "<|IMAGE_END|>")]}
    return PaddleOCRVLConfig(text_config=text, vision_config=vision, **ids), processor


def _build_video_llama_3(real: str | None = None) -> _Recipe:
    """VideoLLaMA3: dynamic resolution (smart_resize, 14 px patches; images are not merged: ``image_merge_sizes`` 1),
    ``image_grid_thw``; at most 256 tokens here (real: 1280 x 2 x 2 patches of 14 px); a Qwen2 decoder, ChatML."""
    specials = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=specials, chat_template=_QWEN_TEMPLATE,
                     real=real)
    size = {"shortest_edge": 56 * 56, "longest_edge": 256 * 14 * 14}
    processor = VideoLlama3Processor(image_processor=VideoLlama3ImageProcessor(size=size), tokenizer=tok,
                                     video_processor=VideoLlama3VideoProcessor(), chat_template=_QWEN_TEMPLATE)
    text = dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, model_type="qwen2")
    vision = dict(**_VISION, patch_size=14)
    config = VideoLlama3Config(text_config=text, vision_config=vision,
                               image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                               video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"))
    return config, processor
