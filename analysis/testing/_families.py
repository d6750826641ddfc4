"""Tiny-model builders of the families with an adapter, except the Qwen2-VL-like ones (``_qwen_like``)."""

from __future__ import annotations

from transformers import (
    AyaVisionConfig,
    AyaVisionProcessor,
    Cohere2VisionConfig,
    Cohere2VisionImageProcessor,
    Cohere2VisionProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ImageProcessor,
    Gemma3Processor,
    Gemma3TextConfig,
    DeepseekVLConfig,
    DeepseekVLHybridConfig,
    DeepseekVLHybridImageProcessor,
    DeepseekVLHybridProcessor,
    DeepseekVLImageProcessor,
    DeepseekVLProcessor,
    GemmaConfig,
    GotOcr2Config,
    GotOcr2ImageProcessor,
    GotOcr2Processor,
    GotOcr2VisionConfig,
    Idefics3Config,
    Idefics3ImageProcessor,
    Idefics3Processor,
    Idefics3VisionConfig,
    InternVLConfig,
    InternVLProcessor,
    InternVLVideoProcessor,
    InternVLVisionConfig,
    JanusConfig,
    JanusImageProcessor,
    JanusProcessor,
    LightOnOcrConfig,
    LightOnOcrProcessor,
    Mistral3Config,
    MistralConfig,
    LlavaConfig,
    LlavaNextConfig,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaNextVideoConfig,
    LlavaNextVideoProcessor,
    LlavaNextVideoVideoProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    LlavaProcessor,
    PaliGemmaConfig,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    PixtralImageProcessor,
    PixtralProcessor,
    PixtralVisionConfig,
    QianfanOCRConfig,
    QianfanOCRProcessor,
    QianfanOCRVisionConfig,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SmolVLMConfig,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
    SmolVLMVisionConfig,
    VideoLlavaConfig,
    VideoLlavaImageProcessor,
    VideoLlavaProcessor,
    VideoLlavaVideoProcessor,
    VipLlavaConfig,
)

from analysis.testing._common import (
    _GEMMA3_TEMPLATE, _IDEFICS_BODY, _IDEFICS_TILE_TOKENS, _LLAVA_NEXT_TEMPLATE, _LLAVA_TEMPLATE,
    _ONEVISION_TEMPLATE, _QWEN_TEMPLATE, _Recipe, _TEXT, _VISION, _llama, _tokenizer,
)


def _build_llava(real: str | None = None) -> _Recipe:
    """LLaVA-1.5: CLIP 224/14 (real: 336/14; +CLS, dropped), 256 image tokens (real: 576), Vicuna-style prompt."""
    tok = _tokenizer(
        bos="<s>", eos="</s>", pad="<pad>", specials=["<image>"], chat_template=_LLAVA_TEMPLATE, add_bos_token=True,
        real=real,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=_LLAVA_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_VISION, image_size=224, patch_size=14),
        text_config=_llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=256,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return config, processor


# LLaVA-NeXT's pinpoints (llava-hf/llava-v1.6-*: 336 px tiles in 1x2, 2x1, 2x2, 3x1, 1x3 grids) on the tiny
# models' 224 px tiles: the same grids, so the same any-res selection, unpadding and newline rules, with 16 x 16
# patches per tile instead of 24 x 24 (1368 image tokens for a 200 x 150 image made LLaVA-NeXT the slowest core family).
_LLAVA_NEXT_PINPOINTS = [[224, 448], [448, 224], [448, 448], [672, 224], [224, 672]]


def _build_llava_next(real: str | None = None) -> _Recipe:
    """LLaVA-NeXT: anyres over 224 px tiles (real: 336; the real pinpoints scaled by 2/3), unpadding, image_newline.

    The toy tokenizer gets the Mistral variant's template; a real (Llama-2) one the Vicuna variant's
    (llava-hf/llava-v1.6-vicuna-7b-hf), which is LLaVA-1.5's.
    """
    template = _LLAVA_NEXT_TEMPLATE if real is None else _LLAVA_TEMPLATE
    tok = _tokenizer(
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        specials=["<image>"],
        chat_template=template,
        add_bos_token=True,
        extra_tokens=("[INST]", "[/INST]") if real is None else (),
        real=real,
    )
    pinpoints = _LLAVA_NEXT_PINPOINTS
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=template,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_VISION, image_size=224, patch_size=14),
        text_config=_llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        image_seq_length=256,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return config, processor


def _build_idefics(family: str, real: str | None = None) -> _Recipe:
    """Idefics3 (112/14, scale 2) or SmolVLM (256/16, scale 4): 16 tokens per tile, 2x2 tiles at most + global. The
    real tiles are 364 and 512 px (``analysis.published``); at 512 px, 1,024 patches per tile made the tiny SmolVLM
    the slowest core family."""
    tile, patch, scale = (112, 14, 2) if family == "idefics3" else (256, 16, 4)
    image_seq_len = (tile // patch) ** 2 // scale**2
    sizes = dict(size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile}, do_image_splitting=True)
    vision = dict(**_VISION, image_size=tile, patch_size=patch)
    specials = ["<fake_token_around_image>", "<image>", "<global-img>", *_IDEFICS_TILE_TOKENS]
    if family == "idefics3":
        template = "<|begin_of_text|>" + _IDEFICS_BODY
        tok = _tokenizer(
            bos="<|begin_of_text|>",
            eos="<end_of_utterance>",
            pad="<|reserved_special_token_0|>",
            specials=specials,
            chat_template=template,
            real=real,
        )
        processor = Idefics3Processor(
            image_processor=Idefics3ImageProcessor(**sizes),
            tokenizer=tok,
            image_seq_len=image_seq_len,
            chat_template=template,
        )
        config_class, vision_config = Idefics3Config, Idefics3VisionConfig(**vision)
    else:
        template = "<|im_start|>" + _IDEFICS_BODY
        tok = _tokenizer(
            bos="<|im_start|>",
            eos="<end_of_utterance>",
            pad="<|im_end|>",
            specials=[*specials, "<video>"],
            chat_template=template,
            real=real,
        )
        processor = SmolVLMProcessor(
            image_processor=SmolVLMImageProcessor(**sizes),
            tokenizer=tok,
            video_processor=SmolVLMVideoProcessor(size=sizes["size"], max_image_size=sizes["max_image_size"]),
            image_seq_len=image_seq_len,
            chat_template=template,
        )
        config_class, vision_config = SmolVLMConfig, SmolVLMVisionConfig(**vision)
    config = config_class(
        vision_config=vision_config,
        text_config=_llama(tok),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=tok.pad_token_id,
    )
    return config, processor


def _build_paligemma(real: str | None = None) -> _Recipe:
    """PaliGemma: SigLIP 224/14 -> 256 image tokens, prefix-LM Gemma, raw prompts (no chat template)."""
    tok = _tokenizer(bos="<bos>", eos="<eos>", pad="<pad>", specials=["<image>"], chat_template=None, real=real)
    image_processor = SiglipImageProcessor(
        size={"height": 224, "width": 224}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    image_processor.image_seq_length = 256
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)  # adds <loc..>/<seg..> tokens
    text = GemmaConfig(
        **_TEXT,
        head_dim=16,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(**_VISION, image_size=224, patch_size=14, vision_use_head=False),
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vocab_size=len(tok),
        projection_dim=_TEXT["hidden_size"],
        hidden_size=_TEXT["hidden_size"],
    )
    return config, processor


def _build_gemma3(real: str | None = None) -> _Recipe:
    """Gemma 3: SigLIP 448/14 -> 32 x 32 patches, average-pooled 2 x 2 to 16 x 16 = 256 image tokens.

    Gemma-3-4B has SigLIP 896/14 (64 x 64 patches) pooled 4 x 4 to the same 256 tokens; the tiny tower
    takes 448 px so that its attention over 1024 (not 4096) patches stays fast on a CPU. The decoder
    alternates a sliding-window layer (window 128, shorter than the prompt) and a global one, and image
    tokens attend to each other bidirectionally (``token_type_ids`` 1).
    """
    image_tokens = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = _tokenizer(bos="<bos>", eos="<eos>", pad="<pad>", specials=["<start_of_turn>", "<end_of_turn>",
                     *image_tokens.values()], chat_template=_GEMMA3_TEMPLATE, extra_tokens=("model",) if real is None else (),
                     real=real, named=image_tokens)
    image_processor = Gemma3ImageProcessor(size={"height": 448, "width": 448}, image_mean=[0.5] * 3,
                                           image_std=[0.5] * 3, do_pan_and_scan=False)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, chat_template=_GEMMA3_TEMPLATE,
                                image_seq_length=256)
    text = Gemma3TextConfig(
        **_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, query_pre_attn_scalar=16, sliding_window=128,
        layer_types=["sliding_attention", "full_attention"],
    )
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(**_VISION, image_size=448, patch_size=14, vision_use_head=False),
        text_config=text,
        mm_tokens_per_image=256,
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
    )
    return config, processor


# ViP-LLaVA (llava-hf/vip-llava-7b-hf), without its system sentence.
_VIPLLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '###Human: ' if message['role'] == 'user' else '###Assistant: ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '###Assistant:' }}{% endif %}"
)


def _build_vipllava(real: str | None = None) -> _Recipe:
    """ViP-LLaVA: LLaVA-1.5's geometry (CLIP 336/14, CLS dropped, 576 tokens) with features of five vision
    layers concatenated (``(-2, -5, -8, -11, 6)`` of 24; here ``(-2, -1, 0, 1, 2)`` of the tiny tower's 3 states)."""
    tok = _tokenizer(bos="<s>", eos="</s>", pad="<pad>", specials=["<image>"], chat_template=_VIPLLAVA_TEMPLATE,
                     add_bos_token=True, extra_tokens=("###Human:", "###Assistant:"), real=real)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=_VIPLLAVA_TEMPLATE)
    config = VipLlavaConfig(
        vision_config=CLIPVisionConfig(**_VISION, image_size=336, patch_size=14),
        text_config=_llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layers=[-2, -1, 0, 1, 2],
    )
    return config, processor


def _build_llava_next_video(real: str | None = None) -> _Recipe:
    """LLaVA-NeXT-Video (llava-hf/LLaVA-NeXT-Video-7B-hf): LLaVA-NeXT's image geometry (anyres 224 px tiles,
    unpadding, newlines), a Vicuna prompt, and a ``<video>`` token (unused by the image probes)."""
    tok = _tokenizer(bos="<s>", eos="</s>", pad="<pad>", specials=["<image>", "<video>"],
                     chat_template=_LLAVA_TEMPLATE, add_bos_token=True, real=real)
    pinpoints = _LLAVA_NEXT_PINPOINTS
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(), image_processor=image_processor, tokenizer=tok,
        patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=_LLAVA_TEMPLATE,
    )
    config = LlavaNextVideoConfig(
        vision_config=CLIPVisionConfig(**_VISION, image_size=224, patch_size=14),
        text_config=_llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return config, processor


def _build_llava_onevision(real: str | None = None) -> _Recipe:
    """LLaVA-OneVision (llava-hf/llava-onevision-qwen2-0.5b-ov-hf): SigLIP 384/14 -> 27 x 27 = 729 tokens per
    tile (no CLS, strategy "full"), the base image first, then the unpadded any-res grid (real pinpoints, up to
    6 x 6 tiles) with a newline per row, downsampled when above 9 tiles' worth (``anyres_max_9``); ChatML."""
    specials = ["<|im_start|>", "<image>", "<video>"]
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=specials,
                     chat_template=_ONEVISION_TEMPLATE, real=real)
    image_processor = LlavaOnevisionImageProcessor(size={"height": 384, "width": 384}, image_mean=[0.5] * 3,
                                                   image_std=[0.5] * 3)
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor, tokenizer=tok, video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=729, vision_feature_select_strategy="full", chat_template=_ONEVISION_TEMPLATE,
    )
    text = dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, model_type="qwen2")
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**_VISION, image_size=384, patch_size=14, vision_use_head=False),
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=image_processor.image_grid_pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return config, processor


# Mistral-Small-3.1 (mistralai/Mistral-Small-3.1-24B-Instruct-2503), without its system prompt.
_MISTRAL3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST]' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '[IMG]' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ '[/INST]' }}"
    "{% else %}{% for item in message['content'] | selectattr('type', 'equalto', 'text') %}{{ item['text'] }}"
    "{% endfor %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def _build_mistral3(real: str | None = None) -> _Recipe:
    """Mistral 3 (Pixtral vision): the image kept at its own size up to a longest edge (1540 px in Mistral-Small-3.1;
    448 here), rounded up to 14 px patches, merged 2 x 2; each row of merged tokens ends with ``[IMG_BREAK]``,
    the last with ``[IMG_END]`` (text tokens; only ``[IMG]`` carries image features)."""
    specials = ["[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]
    tok = _tokenizer(bos="<s>", eos="</s>", pad="<pad>", specials=specials, chat_template=_MISTRAL3_TEMPLATE,
                     real=real)
    image_processor = PixtralImageProcessor(size={"longest_edge": 448}, patch_size={"height": 14, "width": 14})
    processor = PixtralProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14, spatial_merge_size=2,
                                 chat_template=_MISTRAL3_TEMPLATE)
    vision = PixtralVisionConfig(**_VISION, head_dim=8, image_size=448, patch_size=14)
    text = MistralConfig(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, sliding_window=None)
    config = Mistral3Config(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("[IMG]"),
                            spatial_merge_size=2, vision_feature_layer=-1)
    return config, processor


# InternVL3 (OpenGVLab/InternVL3-1B-hf): ChatML with a system prompt; the image as "<IMG_CONTEXT>\n".
_INTERNVL_TEMPLATE = _QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n")


def _build_internvl(real: str | None = None, qianfan: bool = False) -> _Recipe:
    """InternVL: GOT-OCR2 tiling (closest aspect ratio of at most 6 tiles + a thumbnail; InternVL3 allows 12),
    224 px tiles here (InternVL3's are 448 px: 256 tokens each) -> 16 x 16 patches pixel-shuffled to 8 x 8 = 64
    ``<IMG_CONTEXT>`` tokens per tile between ``<img>`` and ``</img>``; a Qwen2 decoder.

    ``qianfan``: Qianfan-OCR (baidu/Qianfan-OCR; token-level): the same tiling and tower under its own config and
    processor classes, whose template writes ``<image>`` for the processor to expand; a Qwen3 decoder."""
    image_tokens = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                    "video_token": "<video>"}
    template = _INTERNVL_TEMPLATE.replace("<IMG_CONTEXT>", "<image>") if qianfan else _INTERNVL_TEMPLATE
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=["<|im_start|>", *image_tokens.values(),
                     *(["<image>"] if qianfan else [])], chat_template=template, real=real, named=image_tokens)
    image_processor = GotOcr2ImageProcessor(size={"height": 224, "width": 224}, crop_to_patches=True, min_patches=1,
                                            max_patches=6)
    vision = dict(**_VISION, image_size=[224, 224], patch_size=[14, 14])
    text = dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, model_type="qwen3" if qianfan else "qwen2")
    common = dict(text_config=text, image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=64,
                  downsample_ratio=0.5, vision_feature_layer=-1, vision_feature_select_strategy="default")
    if qianfan:
        processor = QianfanOCRProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=64,
                                        chat_template=template)
        return QianfanOCRConfig(vision_config=QianfanOCRVisionConfig(**vision), **common), processor
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tok,
                                  video_processor=InternVLVideoProcessor(), image_seq_length=64, chat_template=template)
    return InternVLConfig(vision_config=InternVLVisionConfig(**vision), **common), processor


def _build_video_llava(real: str | None = None) -> _Recipe:
    """Video-LLaVA (LanguageBind/Video-LLaVA-7B-hf): LLaVA's layout on a 224 px CLIP image (patch 14 -> 16 x 16 = 256
    tokens, CLS dropped), Vicuna prompt; a ``<video>`` token (unused by the image probes)."""
    tok = _tokenizer(bos="<s>", eos="</s>", pad="<pad>", specials=["<image>", "<video>"], chat_template=_LLAVA_TEMPLATE,
                     add_bos_token=True, real=real)
    image_processor = VideoLlavaImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    processor = VideoLlavaProcessor(image_processor=image_processor, video_processor=VideoLlavaVideoProcessor(),
                                    tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                                    num_additional_image_tokens=1, chat_template=_LLAVA_TEMPLATE)
    config = VideoLlavaConfig(
        vision_config=CLIPVisionConfig(**_VISION, image_size=224, patch_size=14),
        text_config=_llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_seq_length=256,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return config, processor


# Aya Vision / Cohere2-Vision (CohereLabs/aya-vision-8b, command-a-vision): Cohere turns.
_COHERE_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|START_OF_TURN_TOKEN|>' + ('<|USER_TOKEN|>' if message['role'] == 'user' else '<|CHATBOT_TOKEN|>') }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ '<|END_OF_TURN_TOKEN|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"
)
_COHERE_SPECIALS = ["<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>",
                    "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>"]


def _cohere2(tok: PreTrainedTokenizerFast) -> dict:
    """A tiny Cohere2 decoder over ``tok``: parallel attention and MLP blocks, LayerNorm, a sliding-window layer
    (window 128, shorter than the prompt) then a global one, logits scaled by ``logit_scale`` (0.5 here; Aya
    Vision's is 0.0625, which would flatten a tiny random model's distribution below what the tests can see)."""
    return dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, model_type="cohere2", logit_scale=0.5, sliding_window=128,
                layer_types=["sliding_attention", "full_attention"])


def _build_aya_vision(real: str | None = None) -> _Recipe:
    """Aya Vision: GOT-OCR2 tiling (at most 6 tiles of 224 px + a global tile; real: 12 of 364 px), SigLIP patch 14 ->
    16 x 16 pixel-shuffled to 8 x 8 = 64 ``<|IMG_PATCH|>`` tokens per tile (real: 169), each tile led by ``TILE_i``
    (the global one by ``TILE_GLOBAL``); a Cohere2 decoder."""
    tiles = ["TILE", "TILE_GLOBAL", *(f"TILE_{i}" for i in range(1, 7))]
    tok = _tokenizer(bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", pad="<PAD>", specials=[*_COHERE_SPECIALS, "<image>",
                     *tiles], chat_template=_COHERE_TEMPLATE, real=real)
    image_processor = GotOcr2ImageProcessor(size={"height": 224, "width": 224}, crop_to_patches=True, min_patches=1,
                                            max_patches=6, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = AyaVisionProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14, downsample_factor=2,
                                   img_size=224, chat_template=_COHERE_TEMPLATE)
    config = AyaVisionConfig(
        vision_config=SiglipVisionConfig(**_VISION, image_size=224, patch_size=14, vision_use_head=False),
        text_config=_cohere2(tok), downsample_factor=2, image_token_index=tok.convert_tokens_to_ids("<|IMG_PATCH|>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1,
    )
    return config, processor


def _build_cohere2_vision(real: str | None = None) -> _Recipe:
    """Cohere2-Vision: tiles of 224 px (real: SigLIP2 512 px / patch 16) arranged by the processor's own rule (at most
    6, then a thumbnail), SigLIP patch 14 -> 16 x 16 pixel-shuffled to 8 x 8 = 64 ``<|IMG_PATCH|>`` tokens per tile
    (real: 256), each tile followed by ``<|IMG_LINE_BREAK|>``; a Cohere2 decoder."""
    named = {"boi_token": "<|START_OF_IMG|>", "eoi_token": "<|END_OF_IMG|>", "image_token": "<|IMG_PATCH|>",
             "img_line_break_token": "<|IMG_LINE_BREAK|>"}
    template = _COHERE_TEMPLATE.replace("'<image>'", "'<|IMG_PATCH|>'")
    tok = _tokenizer(bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", pad="<PAD>", specials=_COHERE_SPECIALS,
                     chat_template=template, real=real, named=named)
    image_processor = Cohere2VisionImageProcessor(size={"height": 224, "width": 224}, patch_size=8,
                                                  crop_to_patches=True, min_patches=1, max_patches=6)
    processor = Cohere2VisionProcessor(image_processor=image_processor, tokenizer=tok, chat_template=template)
    config = Cohere2VisionConfig(
        vision_config=SiglipVisionConfig(**_VISION, image_size=224, patch_size=14, vision_use_head=False),
        text_config=_cohere2(tok), downsample_factor=2, image_token_id=tok.convert_tokens_to_ids("<|IMG_PATCH|>"),
        alignment_intermediate_size=64,
    )
    return config, processor


def _build_got_ocr2(real: str | None = None) -> _Recipe:
    """GOT-OCR2: a SAM-style ViT (windowed + global attention, relative positions) on the whole image resized to one
    512 px tile (real: 1024), patch 16 -> 32 x 32, two stride-2 convolutions -> 8 x 8 = 64 ``<imgpad>`` tokens (real:
    256) between ``<img>`` and ``</img>``; a Qwen2 decoder; a ChatML template with a system prompt (the checkpoints have
    none: the adapter then writes GOT's own ChatML)."""
    template = _QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<img><imgpad></img>\n")
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=["<|im_start|>", "<img>", "</img>",
                     "<imgpad>"], chat_template=template, real=real)
    image_processor = GotOcr2ImageProcessor(size={"height": 512, "width": 512}, crop_to_patches=False)
    processor = GotOcr2Processor(image_processor=image_processor, tokenizer=tok, chat_template=template)
    vision = GotOcr2VisionConfig(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=4,
                                 mlp_dim=64, image_size=512, patch_size=16, window_size=14, global_attn_indexes=[1])
    text = dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, model_type="qwen2")
    config = GotOcr2Config(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<imgpad>"),
                           image_seq_length=64)
    return config, processor


def _build_lighton_ocr(real: str | None = None) -> _Recipe:
    """LightOnOCR: Pixtral's vision (the image at its own aspect ratio, longest edge 448 here, real 1540; 14 px patches
    merged 2 x 2) without break tokens: ``rows x cols`` ``<|image_pad|>`` tokens, row-major; a Qwen3 decoder, ChatML."""
    named = {"image_token": "<|image_pad|>", "image_break_token": "<|vision_pad|>", "image_end_token": "<|vision_end|>"}
    template = _QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<|image_pad|>")
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=["<|im_start|>", *named.values()],
                     chat_template=template, real=real, named=named)
    image_processor = PixtralImageProcessor(size={"longest_edge": 448}, patch_size={"height": 14, "width": 14})
    processor = LightOnOcrProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14, spatial_merge_size=2,
                                    chat_template=template)
    vision = PixtralVisionConfig(**_VISION, head_dim=8, image_size=448, patch_size=14)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, model_type="qwen3", sliding_window=None)
    config = LightOnOcrConfig(vision_config=vision, text_config=text, spatial_merge_size=2,
                              image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"))
    return config, processor


# Janus (deepseek-community/Janus-Pro-1B): DeepSeek's "<|User|>:" / "<|Assistant|>:" turns.
_JANUS_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|User|>: ' if message['role'] == 'user' else '<|Assistant|>: ' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image_placeholder>\n' }}{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{{ '\n\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|Assistant|>:' }}{% endif %}"
)


def _build_janus(real: str | None = None) -> _Recipe:
    """Janus: the image resized to a longest side of 384 px and padded to a square (centred), SigLIP-style patch 16 ->
    24 x 24 = 576 ``<image_placeholder>`` tokens between ``<begin_of_image>`` and ``<end_of_image>``; a Llama decoder.
    The image-generation VQ model is built tiny (unused by the probes)."""
    named = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
    tok = _tokenizer(bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", pad="<｜▁pad▁｜>",
                     specials=list(named.values()), chat_template=_JANUS_TEMPLATE, real=real, named=named,
                     extra_tokens=("<|User|>:", "<|Assistant|>:"))
    image_processor = JanusImageProcessor(size={"height": 384, "width": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = JanusProcessor(image_processor=image_processor, tokenizer=tok, chat_template=_JANUS_TEMPLATE,
                               num_image_tokens=576)
    vision = dict(**_VISION, image_size=384, patch_size=16, projection_dim=_TEXT["hidden_size"], depth=2,
                  num_image_tokens=576)
    vq = dict(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32, channel_multiplier=[1, 1],
              num_res_blocks=1, projection_dim=_TEXT["hidden_size"], image_token_embed_dim=_TEXT["hidden_size"],
              num_hidden_layers=1, num_patches=8)
    config = JanusConfig(text_config=_llama(tok).to_dict(), vision_config=vision, vq_config=vq,
                         image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"))
    return config, processor


def _build_deepseek_vl(real: str | None = None) -> _Recipe:
    """DeepSeek-VL: Janus's image path (longest side 384 px, padded to a centred square, SigLIP patch 16 -> 24 x 24 =
    576 ``<image_placeholder>`` tokens, no begin / end markers); a Llama decoder, DeepSeek's turns."""
    named = {"image_token": "<image_placeholder>"}
    tok = _tokenizer(bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", pad="<｜▁pad▁｜>",
                     specials=list(named.values()), chat_template=_JANUS_TEMPLATE, real=real, named=named,
                     extra_tokens=("<|User|>:", "<|Assistant|>:"))
    image_processor = DeepseekVLImageProcessor(size={"height": 384, "width": 384}, image_mean=[0.5] * 3,
                                               image_std=[0.5] * 3)
    processor = DeepseekVLProcessor(image_processor=image_processor, tokenizer=tok, chat_template=_JANUS_TEMPLATE,
                                    num_image_tokens=576)
    vision = SiglipVisionConfig(**_VISION, image_size=384, patch_size=16, vision_use_head=False)
    config = DeepseekVLConfig(text_config=_llama(tok).to_dict(), vision_config=vision.to_dict(),
                              image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"))
    return config, processor


def _build_deepseek_vl_hybrid(real: str | None = None) -> _Recipe:
    """DeepSeek-VL hybrid: DeepSeek-VL's layout (384 px padded square, SigLIP patch 16 -> 24 x 24 = 576 tokens) plus a
    SAM-style high-resolution tower on the same padded square (256 px here, real 1024) whose features are interpolated
    to the same 24 x 24 grid and concatenated."""
    named = {"image_token": "<image_placeholder>"}
    tok = _tokenizer(bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", pad="<｜▁pad▁｜>",
                     specials=list(named.values()), chat_template=_JANUS_TEMPLATE, real=real, named=named,
                     extra_tokens=("<|User|>:", "<|Assistant|>:"))
    image_processor = DeepseekVLHybridImageProcessor(size={"height": 384, "width": 384}, image_mean=[0.5] * 3,
                                                     image_std=[0.5] * 3, high_res_size={"height": 256, "width": 256})
    processor = DeepseekVLHybridProcessor(image_processor=image_processor, tokenizer=tok,
                                          chat_template=_JANUS_TEMPLATE, num_image_tokens=576)
    vision = SiglipVisionConfig(**_VISION, image_size=384, patch_size=16, vision_use_head=False)
    high_res = dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=4, mlp_dim=64,
                    image_size=256, patch_size=16, window_size=14, global_attn_indexes=[1])
    config = DeepseekVLHybridConfig(text_config=_llama(tok).to_dict(), vision_config=vision.to_dict(),
                                    high_res_vision_config=high_res,
                                    image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"))
    return config, processor
