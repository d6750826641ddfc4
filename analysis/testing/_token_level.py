"""Tiny-model builders of the token-level families: no adapter, the generic path
(``analysis.models.adapters.generic``)."""

from __future__ import annotations

from transformers import (
    Cosmos3EdgeConfig,
    Cosmos3EdgeImageProcessor,
    Cosmos3EdgeProcessor,
    Cosmos3EdgeVideoProcessor,
    Cosmos3OmniConfig,
    Ernie4_5_VLMoeConfig,
    Ernie4_5_VLMoeImageProcessor,
    Ernie4_5_VLMoeProcessor,
    Ernie4_5_VLMoeVideoProcessor,
    Exaone4_5_Config,
    Exaone4_5_Processor,
    HyperCLOVAXVisionV2Config,
    HyperCLOVAXVisionV2Processor,
    GraniteDoclingConfig,
    GraniteDoclingImageProcessor,
    GraniteDoclingProcessor,
    AriaConfig,
    AriaImageProcessor,
    AriaProcessor,
    Gemma4AudioFeatureExtractor,
    Gemma4Config,
    Gemma4ImageProcessor,
    Gemma4Processor,
    Gemma4VideoProcessor,
    Gemma4UnifiedAudioFeatureExtractor,
    Gemma4UnifiedConfig,
    Gemma4UnifiedImageProcessor,
    Gemma4UnifiedProcessor,
    Gemma4UnifiedVideoProcessor,
    Idefics2Config,
    Kimi_K25Config,
    Kimi_K25ImageProcessor,
    Kimi_K25Processor,
    Kimi_K25VideoProcessor,
    Idefics2ImageProcessor,
    Idefics2Processor,
    MistralConfig,
    Molmo2Config,
    Molmo2ImageProcessor,
    Molmo2Processor,
    Molmo2VideoProcessor,
    MuseGlimmerConfig,
    MuseGlimmerImageProcessor,
    MuseGlimmerProcessor,
    MuseGlimmerVideoProcessor,
    MuseSparkConfig,
    MuseSparkFeatureExtractor,
    MuseSparkProcessor,
    Ovis2Config,
    Ovis2ImageProcessor,
    Ovis2Processor,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniThinkerConfig,
    Qwen3OmniMoeProcessor,
    Qwen3OmniMoeThinkerConfig,
    Qwen3VLVideoProcessor,
    Step3p7Config,
    Step3p7ImageProcessor,
    Step3p7Processor,
    UnlimitedOcrConfig,
    UnlimitedOcrImageProcessor,
    UnlimitedOcrProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    WhisperFeatureExtractor,
)

from analysis.testing._common import (
    _DERIVED, _GEMMA3_TEMPLATE, _IDEFICS_BODY, _IDEFICS_TILE_TOKENS, _QWEN_TEMPLATE, _Recipe, _TEXT, _VISION,
    _tokenizer,
)
from analysis.testing._families import _JANUS_TEMPLATE
from analysis.testing._qwen_like import _PADDLE_TEMPLATE, _build_qwen, _build_qwen3_vl

# Fields of a config's dict that name its class or the writing version: dropped when the fields move to another class.
_CLASS_FIELDS = ("model_type", *_DERIVED)


def _fields(config) -> dict:
    """The fields of ``config`` without those naming its class or the writing version."""
    return {k: v for k, v in config.to_dict().items() if k not in _CLASS_FIELDS}


def _recast(recipe: _Recipe, config_class, **changes) -> _Recipe:
    """Return ``recipe`` with its config re-made as ``config_class`` (the same fields, then ``changes``): a family whose
    config subclasses an adapted family's and whose checkpoints ship that family's processor."""
    config, processor = recipe
    return config_class(**(_fields(config) | changes)), processor


def _build_idefics2(real: str | None = None) -> _Recipe:
    """Idefics2 (token-level: the generic path): the image resized to 224 px at most (real: 980, shortest edge 378),
    SigLIP-style patches of 14 resampled by a perceiver into 64 learned latents (real: 64), the ``<image>`` tokens
    between ``<fake_token_around_image>``s; no patch grid. A Mistral decoder, Idefics' "User:" / "Assistant:" turns."""
    template = "{{ bos_token }}" + _IDEFICS_BODY
    tok = _tokenizer(bos="<s>", eos="<end_of_utterance>", pad="<unk>" if real else "<pad>",
                     specials=["<fake_token_around_image>", "<image>"], chat_template=template, real=real)
    image_processor = Idefics2ImageProcessor(size={"shortest_edge": 112, "longest_edge": 224}, do_image_splitting=False)
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=64, chat_template=template)
    text = MistralConfig(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, sliding_window=None)
    perceiver = dict(hidden_size=_TEXT["hidden_size"], resampler_n_latents=64, resampler_depth=2, resampler_n_heads=4,
                     resampler_head_dim=16, num_key_value_heads=2)
    config = Idefics2Config(vision_config=dict(**_VISION, image_size=224, patch_size=14), perceiver_config=perceiver,
                            text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"))
    return config, processor


def _omni_tokenizer(real: str | None) -> tuple:
    """The Qwen Omni thinkers' tokenizer: ChatML with ``<|vision_bos|><|IMAGE|><|vision_eos|>`` and audio/video
    placeholders; returns ``(tokenizer, chat template)``."""
    named = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
             "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
             "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
    template = _QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<|vision_bos|><|IMAGE|><|vision_eos|>")
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=["<|im_start|>", *named.values()],
                     chat_template=template, real=real, named=named)
    return tok, template


def _build_qwen2_5_omni_thinker(real: str | None = None) -> _Recipe:
    """Qwen2.5-Omni's thinker (the text-generating part; images, audio, video in, text out): Qwen2.5-VL's image geometry
    (14 px patches merged 2 x 2, ``image_grid_thw``, window attention in the tower) in ChatML with
    ``<|vision_bos|>`` / ``<|vision_eos|>``; a tiny audio encoder (unused by the image probes)."""
    tok, template = _omni_tokenizer(real)
    size = {"shortest_edge": 56 * 56, "longest_edge": 256 * 28 * 28}
    processor = Qwen2_5OmniProcessor(image_processor=Qwen2VLImageProcessor(size=size),
                                     video_processor=Qwen2VLVideoProcessor(size=size),
                                     feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tok,
                                     chat_template=template)
    text = dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=_TEXT["hidden_size"],
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1])
    audio = dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
                 output_dim=_TEXT["hidden_size"])
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_index", "<|IMAGE|>"), ("video_token_index", "<|VIDEO|>"), ("audio_token_index", "<|AUDIO|>"),
        ("audio_start_token_id", "<|audio_bos|>"), ("audio_end_token_id", "<|audio_eos|>"),
        ("user_token_id", "<|im_start|>"), ("vision_start_token_id", "<|vision_bos|>")]}
    # transformers 5.24's thinker reads vision_start_token_id from its own config for M-RoPE, but only the whole
    # Qwen2.5-Omni config declares it: given here, as a thinker checkpoint exported from the whole model must
    return Qwen2_5OmniThinkerConfig(text_config=text, vision_config=vision, audio_config=audio, **ids), processor


def _build_qwen3_omni_moe_thinker(real: str | None = None) -> _Recipe:
    """Qwen3-Omni's thinker (MoE): Qwen3-VL's image path (16 px patches merged 2 x 2, DeepStack) in ChatML with
    ``<|vision_bos|>`` / ``<|vision_eos|>``, a mixture-of-experts decoder (4 experts, 2 per token; real 128, 8) and a
    tiny audio encoder (unused by the image probes). Token-level: the generic path."""
    tok, template = _omni_tokenizer(real)
    size = {"shortest_edge": 64 * 64, "longest_edge": 256 * 32 * 32}
    processor = Qwen3OmniMoeProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2, image_mean=[0.5] * 3,
                                              image_std=[0.5] * 3),
        video_processor=Qwen3VLVideoProcessor(size=size, patch_size=16),
        feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tok, chat_template=template)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3],
                                 "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=_TEXT["hidden_size"], num_position_embeddings=256,
                  deepstack_visual_indexes=[0, 1])
    audio = dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
                 output_dim=_TEXT["hidden_size"], downsample_hidden_size=16)
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|IMAGE|>"), ("video_token_id", "<|VIDEO|>"), ("audio_token_id", "<|AUDIO|>"),
        ("audio_start_token_id", "<|audio_bos|>"), ("user_token_id", "<|im_start|>"),
        ("vision_start_token_id", "<|vision_bos|>")]}  # read by the thinker, declared only on the whole Omni config
    return Qwen3OmniMoeThinkerConfig(text_config=text, vision_config=vision, audio_config=audio, **ids), processor


def _build_ovis2(real: str | None = None) -> _Recipe:
    """Ovis2 (token-level: the generic path): the image resized to one 224 px tile (real: 448, optionally tiled), patch
    14 -> 16 x 16 = 256 ``<IMG_ATOM>`` tokens, each a softmax-weighted mix of a visual vocabulary (64 visual words
    here, real 16384) between ``<IMG_START>`` / ``<IMG_GRID>`` and ``<IMG_END>`` (indicator tokens with visual
    embeddings); a Qwen2 decoder, ChatML with ``<image>``."""
    indicators = ["<IMG_START>", "<IMG_GRID>", "<IMG_COL>", "<IMG_ROW>", "<IMG_END>"]
    template = _QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n")
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=["<|im_start|>", "<image>", "<IMG_ATOM>",
                     *indicators], chat_template=template, real=real)
    image_processor = Ovis2ImageProcessor(size={"height": 224, "width": 224}, crop_to_patches=False)
    processor = Ovis2Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=256,
                               chat_template=template)
    vision = dict(**_VISION, image_size=224, patch_size=14, vocab_size=64, hidden_stride=1, num_visual_indicator_tokens=5)
    text = dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, model_type="qwen2")
    config = Ovis2Config(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<IMG_ATOM>"),
                         visual_indicator_token_ids=tok.convert_tokens_to_ids(indicators), vocab_size=len(tok),
                         hidden_size=_TEXT["hidden_size"])
    return config, processor


def _build_aria(real: str | None = None) -> _Recipe:
    """Aria (token-level: the generic path): the image padded to a 980 px square (Aria's default; also 490), cut into
    70 px patches (real: 14, so 4900) -> 14 x 14 = 196, cross-attended by 16 learned queries (real: 256): no patch
    grid; a mixture-of-experts decoder (4 experts, 2 per token, 1 shared); ChatML-like turns with ``<|img|>``."""
    named = {"image_token": "<|img|>"}
    template = _QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<fim_prefix><|img|><fim_suffix>")
    tok = _tokenizer(bos="<s>", eos="<|im_end|>", pad="<pad>", specials=["<|im_start|>", "<fim_prefix>",
                     "<fim_suffix>", *named.values()], chat_template=template, real=real, named=named)
    image_processor = AriaImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = AriaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=template,
                              size_conversion={490: 16, 980: 16})
    text = dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, moe_num_experts=4, moe_topk=2, moe_num_shared_experts=1)
    config = AriaConfig(vision_config=dict(**_VISION, image_size=980, patch_size=70), text_config=text,
                        projector_patch_to_query_dict={196: 16}, image_token_index=tok.convert_tokens_to_ids("<|img|>"))
    return config, processor


def _build_gemma4(real: str | None = None, unified: bool = False) -> _Recipe:
    """Gemma 4 (token-level: the generic path): the image at its own aspect ratio in 16 px patches (at most 280),
    pooled 2 x 2 into at most 70 soft tokens (Gemma 4's smallest budget; real: up to 1120) between
    ``<start_of_image>`` and ``<end_of_image>``; a Gemma 4 decoder alternating a sliding-window (128) and a global
    layer (head size 16 and 32), with per-layer inputs (16 wide, over the tiny vocabulary, not the default 262,144
    x 256: 134 M parameters); audio tokens declared (the processor requires them), no audio tower.

    ``unified``: Gemma 4 unified (google/gemma-4-12B-it): no vision tower, the decoder reads the pixels: 16 px patches
    merged 3 x 3 into 48 px model patches (at most 70), each projected and given a factorised 2-D position embedding,
    attended bidirectionally within the image."""
    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
             "audio_token": "<audio_soft_token>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}
    template = _GEMMA3_TEMPLATE.replace("<start_of_image>", "<image_soft_token>")
    tok = _tokenizer(bos="<bos>", eos="<eos>", pad="<pad>", specials=["<start_of_turn>", "<end_of_turn>",
                     *named.values()], chat_template=template, extra_tokens=("model",) if real is None else (),
                     real=real, named=named)
    if unified:  # the processor adds "<|video|>" to the tokenizer: built before the vocabulary is counted
        processor = Gemma4UnifiedProcessor(
            feature_extractor=Gemma4UnifiedAudioFeatureExtractor(),
            image_processor=Gemma4UnifiedImageProcessor(patch_size=16, max_soft_tokens=70, pooling_kernel_size=3),
            tokenizer=tok, video_processor=Gemma4UnifiedVideoProcessor(), chat_template=template, image_seq_length=70)
    else:
        processor = Gemma4Processor(feature_extractor=Gemma4AudioFeatureExtractor(),
                                    image_processor=Gemma4ImageProcessor(patch_size=16, max_soft_tokens=70,
                                                                         pooling_kernel_size=2),
                                    tokenizer=tok, video_processor=Gemma4VideoProcessor(), chat_template=template,
                                    image_seq_length=70)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, sliding_window=128, layer_types=["sliding_attention", "full_attention"],
                global_head_dim=32, vocab_size_per_layer_input=len(tok), hidden_size_per_layer_input=16)
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("boi_token_id", "<start_of_image>"), ("eoi_token_id", "<end_of_image>"), ("image_token_id", "<image_soft_token>"),
        ("video_token_id", "<|video|>"), ("audio_token_id", "<audio_soft_token>"), ("boa_token_id", "<start_of_audio>"),
        ("eoa_token_index", "<end_of_audio>")]}
    if unified:
        vision = dict(patch_size=16, pooling_kernel_size=3, mm_embed_dim=_TEXT["hidden_size"],
                      output_proj_dims=_TEXT["hidden_size"])
        return Gemma4UnifiedConfig(text_config=text | {"use_bidirectional_attention": "vision"}, vision_config=vision,
                                   audio_config=None, **ids), processor
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, head_dim=8, patch_size=16, pooling_kernel_size=2)
    return Gemma4Config(text_config=text, vision_config=vision, audio_config=None, **ids), processor


def _build_cosmos3_omni(real: str | None = None) -> _Recipe:
    """Cosmos3-Omni's reasoner (nvidia/Cosmos3-Nano): Qwen3-VL's model and processor under its own config (16 px
    patches merged 2 x 2, DeepStack); the generator, sound and action towers of the unified checkpoint are not built."""
    return _recast(_build_qwen3_vl(real), Cosmos3OmniConfig)


def _qwen2_5_image_path(real: str | None, processor_class, byte_level: bool = False) -> tuple:
    """Qwen2.5-VL's image path (14 px patches merged 2 x 2, window attention in the tower, ``image_grid_thw``), tokens
    and template with ``processor_class``'s processor; returns ``(tokenizer, processor, vision config dict, ids)``."""
    config, qwen = _build_qwen("qwen2_5_vl", real, byte_level=byte_level)
    processor = processor_class(image_processor=qwen.image_processor, tokenizer=qwen.tokenizer,
                                video_processor=qwen.video_processor, chat_template=qwen.chat_template)
    ids = {name: getattr(config, name) for name in ("image_token_id", "video_token_id")}
    return qwen.tokenizer, processor, _fields(config.vision_config), ids


def _build_exaone4_5(real: str | None = None) -> _Recipe:
    """EXAONE 4.5 (LGAI-EXAONE/EXAONE-4.5-33B): Qwen2.5-VL's image path and tokens (``_qwen2_5_image_path``; GQA in
    the tower), an EXAONE 4 decoder (post-norms; a sliding-window layer (128) then a global one) with 1-D positions."""
    tok, processor, vision, ids = _qwen2_5_image_path(real, Exaone4_5_Processor)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, model_type="exaone4", sliding_window=128,
                layer_types=["sliding_attention", "full_attention"])
    return Exaone4_5_Config(text_config=text, vision_config=vision | {"num_key_value_heads": 2}, **ids), processor


def _build_hyperclovax_vision_v2(real: str | None = None) -> _Recipe:
    """HyperCLOVA X SEED vision v2 (naver-hyperclovax): VideoLLaMA3's model over a Qwen2.5-VL tower (Qwen2.5-VL's image
    path and tokens, ``_qwen2_5_image_path``), a linear projector, a HyperCLOVA X decoder (Peri-LN: a norm before and
    after each block; MuP multipliers on the embeddings (2), the residual writes (0.5) and the logits (0.5)) with 1-D
    positions. Its toy tokenizer is a byte-level BPE: transformers reloads this model type's tokenizer as
    ``GPT2Tokenizer`` whatever the saved class."""
    tok, processor, vision, ids = _qwen2_5_image_path(real, HyperCLOVAXVisionV2Processor, byte_level=True)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, model_type="hyperclovax", use_post_norm=True, embedding_multiplier=2.0,
                residual_multiplier=0.5, logits_scaling=0.5)
    return HyperCLOVAXVisionV2Config(text_config=text, vision_config=vision, **ids), processor


# Granite (ibm-granite/granite-docling-258M): "<|start_of_role|>user<|end_of_role|>...<|end_of_text|>" turns.
_GRANITE_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start_of_role|>' + message['role'] + '<|end_of_role|>' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ '<|end_of_text|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_of_role|>assistant<|end_of_role|>' }}{% endif %}"
)


def _build_granite_docling(real: str | None = None) -> _Recipe:
    """Granite-Docling (ibm-granite/granite-for-docling-500m): Idefics3's prompt layout (``<row_i_col_j>`` tiles, then
    ``<global-img>``) over GOT-OCR2-style tiling of 512 px tiles (at most 4 here, real 32), patch 16 -> 32 x 32
    pixel-shuffled by 4 to 8 x 8 = 64 ``<image>`` tokens per tile, DeepStack features of both tower layers added to the
    first two decoder layers; a Granite decoder with its MuP multipliers (embeddings x 12, residual writes x 0.263,
    attention 1 / head_dim, logits / 4: the 500M checkpoint's)."""
    specials = ["<|start_of_role|>", "<|end_of_role|>", "<fake_token_around_image>", "<image>", "<global-img>",
                *_IDEFICS_TILE_TOKENS]
    tok = _tokenizer(bos="<|end_of_text|>", eos="<|end_of_text|>", pad="<|pad|>", specials=specials,
                     chat_template=_GRANITE_TEMPLATE, real=real)
    image_processor = GraniteDoclingImageProcessor(size={"height": 512, "width": 512}, max_patches=4)
    processor = GraniteDoclingProcessor(image_processor=image_processor, tokenizer=tok, image_seq_len=64,
                                        chat_template=_GRANITE_TEMPLATE)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, attention_multiplier=1 / 16)
    vision = dict(**_VISION, image_size=512, patch_size=16, out_hidden_size=_TEXT["hidden_size"], scale_factor=4,
                  deepstack_visual_indexes=[0, 1])
    return GraniteDoclingConfig(text_config=text, vision_config=vision, image_token_id=tok.convert_tokens_to_ids(
        "<image>"), pad_token_id=tok.pad_token_id), processor


# Kimi K2.5 / K2.6 (moonshotai/Kimi-K2.6), without its system turn.
_KIMI_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_user|>user<|im_middle|>' if message['role'] == 'user' else '<|im_assistant|>assistant<|im_middle|>' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<|media_begin|>image<|media_content|><|media_pad|><|media_end|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_assistant|>assistant<|im_middle|>' }}{% endif %}"
)


def _deepseek_v3(tok) -> dict:
    """A tiny DeepSeek-V3 decoder over ``tok``: multi-head latent attention (query rank 32, key/value rank 16, rotary 8 +
    plain 8 dims per query/key head, value 16; the latent expands to every head: as many key/value heads as query
    heads, as in DeepSeek-V3), layer 0 dense, then 4 routed experts (2 per token) + 1 shared."""
    return dict(**(_TEXT | {"num_key_value_heads": _TEXT["num_attention_heads"]}), vocab_size=len(tok),
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                model_type="deepseek_v3", q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
                v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
                first_k_dense_replace=1, n_group=1, topk_group=1,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def _build_kimi_k25(real: str | None = None) -> _Recipe:
    """Kimi K2.5 (moonshotai/Kimi-K2.6): MoonViT (the image at its own size, at most 1024 patches of 14 px here, real
    16384; learned 2-D position embeddings interpolated) merged 2 x 2, ``image_grid_thw``, ``<|media_pad|>`` tokens
    between ``<|media_begin|>image<|media_content|>`` and ``<|media_end|>``; a DeepSeek-V3 decoder (``_deepseek_v3``)."""
    specials = ["<|im_user|>", "<|im_assistant|>", "<|im_middle|>", "<|media_begin|>", "<|media_content|>",
                "<|media_pad|>", "<|media_end|>", "<|kimi_k25_video_placeholder|>"]
    tok = _tokenizer(bos="[BOS]", eos="<|im_end|>", pad="[PAD]", specials=specials, chat_template=_KIMI_TEMPLATE,
                     real=real)
    size = {"max_height": 448, "max_width": 448}
    processor = Kimi_K25Processor(image_processor=Kimi_K25ImageProcessor(size=size, max_patches=1024), tokenizer=tok,
                                  video_processor=Kimi_K25VideoProcessor(), chat_template=_KIMI_TEMPLATE)
    vision = dict(**_VISION, patch_size=14, merge_kernel_size=[2, 2])
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|media_pad|>"), ("video_token_id", "<|kimi_k25_video_placeholder|>"),
        ("vision_start_token_id", "<|media_begin|>"), ("vision_end_token_id", "<|media_end|>")]}
    return Kimi_K25Config(text_config=_deepseek_v3(tok), vision_config=vision,
                          projection_hidden_size=_VISION["hidden_size"], **ids), processor


def _build_cosmos3_edge(real: str | None = None) -> _Recipe:
    """Cosmos3-Edge (nvidia/Cosmos3-Edge): a NaViT-style SigLIP2 tower on the image at its own aspect ratio (smart_resize
    to 32 px multiples, at most 256 merged tokens here), 16 px patches merged 2 x 2, ``image_grid_thw``; Qwen3-VL's
    ChatML and processor rules; a Llama-style decoder (squared-ReLU MLP) with M-RoPE sections [2, 3, 3]."""
    specials = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=specials, chat_template=_QWEN_TEMPLATE,
                     real=real)
    size = {"shortest_edge": 64 * 64, "longest_edge": 256 * 32 * 32}
    processor = Cosmos3EdgeProcessor(image_processor=Cosmos3EdgeImageProcessor(size=size), tokenizer=tok,
                                     video_processor=Cosmos3EdgeVideoProcessor(), chat_template=_QWEN_TEMPLATE)
    # The model's M-RoPE needs mm_token_type_ids, which transformers 5.24's processor returns only when asked (its base,
    # Qwen3VLProcessor, asks by default); a reloaded processor does not keep this, the generic adapter asks itself.
    processor.return_mm_token_type_ids = True
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]})
    vision = dict(**_VISION, patch_size=16, num_patches=256, spatial_merge_size=2)
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    return Cosmos3EdgeConfig(text_config=text, vision_config=vision, projector_hidden_size=128, **ids), processor


def _build_ernie4_5_vl_moe(real: str | None = None) -> _Recipe:
    """ERNIE-4.5-VL (baidu/ERNIE-4.5-VL-28B-A3B-PT): Qwen2-VL-style smart_resize (14 px patches merged 2 x 2, at most
    256 tokens here), ``image_grid_thw``, ``<|IMAGE_PLACEHOLDER|>`` tokens between ``<|IMAGE_START|>`` and
    ``<|IMAGE_END|>``; an ERNIE-4.5 MoE decoder with 3-D M-RoPE whose sparse layer routes text and image tokens to
    separate experts (4 + 4, 2 per token, 1 shared; real 64 + 64, 6) by ``mm_token_type_ids``. PaddleOCR-VL's turns."""
    named = {"image_token": "<|IMAGE_PLACEHOLDER|>", "image_start_token": "<|IMAGE_START|>",
             "image_end_token": "<|IMAGE_END|>", "video_token": "<|VIDEO_PLACEHOLDER|>",
             "video_start_token": "<|VIDEO_START|>", "video_end_token": "<|VIDEO_END|>"}
    tok = _tokenizer(bos="<s>", eos="</s>", pad="<unk>" if real else "<pad>", specials=list(named.values()),
                     chat_template=_PADDLE_TEMPLATE, real=real, named=named, extra_tokens=("User:", "Assistant:"))
    size = {"shortest_edge": 56 * 56, "longest_edge": 256 * 28 * 28}
    processor = Ernie4_5_VLMoeProcessor(image_processor=Ernie4_5_VLMoeImageProcessor(size=size), tokenizer=tok,
                                        video_processor=Ernie4_5_VLMoeVideoProcessor(draw_on_frames=False),
                                        chat_template=_PADDLE_TEMPLATE)
    text = dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, mlp_layer_types=["dense", "sparse"], moe_intermediate_size=[32, 32],
                moe_k=2, moe_num_experts=4, moe_num_shared_experts=1,
                rope_parameters={"rope_type": "default", "rope_theta": 500_000.0, "mrope_section": [3, 3, 2]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=14, spatial_merge_size=2)
    ids = {f"{name}_id": tok.convert_tokens_to_ids(token) for name, token in named.items()}
    return Ernie4_5_VLMoeConfig(text_config=text, vision_config=vision, **ids), processor


# Muse (meta-models/Muse-Glimmer-30B): Llama-4-style headers; the image as one "<|patch|>" the processor expands.
_MUSE_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|header_start|>' + message['role'] + '<|header_end|>\n\n' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<|patch|>' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ '<|eot|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|header_start|>assistant<|header_end|>\n\n' }}{% endif %}"
)


def _build_muse_glimmer(real: str | None = None, spark: bool = False) -> _Recipe:
    """Muse Glimmer (meta-models/Muse-Glimmer-30B): a MoonViT-style tower (window + full attention) on the image at its
    own size (GLM-4.1V's resize, at most 256 tokens here, real 4096), 14 px patches pixel-shuffled 2 x 2, the
    ``<|patch|>`` tokens between ``<|image_start|>`` and ``<|image_end|>``; a Gemma-2-style decoder (sandwich norms,
    sliding + NoPE global layers, logits scaled by 0.196 then soft-capped at 20).

    ``spark``: Muse Spark: the same image path; a mixture-of-experts decoder (4 experts, 2 per token; real 256, 8)
    whose blocks write through temperature-scaled residual gates, logits scaled by 0.177; a tiny audio encoder."""
    specials = ["<|header_start|>", "<|header_end|>", "<|patch|>", "<|image_start|>", "<|image_end|>", "<|video|>",
                "<|vid_frame_separator|>", "<|vid_start|>", "<|vid_end|>", *(["<|audio|>"] if spark else [])]
    tok = _tokenizer(bos="<|begin_of_text|>", eos="<|eot|>", pad="<|finetune_right_pad|>", specials=specials,
                     chat_template=_MUSE_TEMPLATE, real=real)
    parts = dict(image_processor=MuseGlimmerImageProcessor(max_image_tokens=256),
                 video_processor=MuseGlimmerVideoProcessor(), tokenizer=tok, chat_template=_MUSE_TEMPLATE)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, sliding_window=128)
    common = dict(vision_config=dict(**_VISION, patch_size=14, merge_size=2, pos_emb_height=32, pos_emb_width=32),
                  out_hidden_size=4 * _VISION["hidden_size"], projector_hidden_size=_TEXT["hidden_size"],
                  image_token_id=tok.convert_tokens_to_ids("<|patch|>"), video_token_id=tok.convert_tokens_to_ids(
                      "<|video|>"))
    if spark:
        text |= dict(num_local_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, moe_hidden_size=32,
                     output_multiplier=0.1767766952966369)
        audio = dict(hidden_sizes=[8, 8, 8, 16], depths=[1, 1, 1, 1], out_hidden_size=_TEXT["hidden_size"])
        processor = MuseSparkProcessor(feature_extractor=MuseSparkFeatureExtractor(), **parts)
        return MuseSparkConfig(text_config=text, audio_config=audio, audio_token_id=tok.convert_tokens_to_ids(
            "<|audio|>"), **common), processor
    return MuseGlimmerConfig(text_config=text, **common), MuseGlimmerProcessor(**parts)


def _build_unlimited_ocr(real: str | None = None) -> _Recipe:
    """Unlimited-OCR (baidu/Unlimited-OCR): DeepSeek-OCR-2's layout: a global view padded to a 512 px square (real 1024)
    -> 8 x 8 tokens plus a separator per row and one at the end, and, for an image larger than a tile, 2 to 4 tiles of
    256 px (real 640, up to 32), each through a SAM ViT (patch 16, two stride-2 convolutions) and a Qwen2-style
    encoder: ``<image>`` tokens only; a DeepSeek-V2-style MoE decoder with "reference" sliding-window layers (the prompt
    stays visible). DeepSeek's turns."""
    template = _JANUS_TEMPLATE.replace("<image_placeholder>", "<image>")
    tok = _tokenizer(bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", pad="<｜▁pad▁｜>", specials=["<image>"],
                     chat_template=template, real=real, extra_tokens=("<|User|>:", "<|Assistant|>:"))
    image_processor = UnlimitedOcrImageProcessor(size={"height": 512, "width": 512}, tile_size=256, max_patches=4,
                                                 maximum_pad_value=256)
    processor = UnlimitedOcrProcessor(image_processor=image_processor, tokenizer=tok, chat_template=template)
    sam = dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=4, image_size=512,
               patch_size=16, mlp_dim=64, window_size=14, global_attn_indexes=[1], downsample_channels=[32, 64])
    encoder = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4)
    text = dict(**(_TEXT | {"num_key_value_heads": 4}), vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, n_routed_experts=4, n_shared_experts=1,
                num_experts_per_tok=2, moe_intermediate_size=32, mlp_layer_types=["dense", "sparse"], sliding_window=128)
    return UnlimitedOcrConfig(vision_config=dict(sam_config=sam, encoder_config=encoder), text_config=text,
                              image_token_id=tok.convert_tokens_to_ids("<image>")), processor


def _build_step3p7(real: str | None = None) -> _Recipe:
    """Step 3.7 (stepfun-ai/step-3.7): the image resized to a 224 px square (real 728) -> 16 x 16 patches of 14 px, two
    stride-2 convolutions -> 4 x 4 = 16 ``<im_patch>`` tokens between ``<im_start>`` and ``<im_end>``, after 112 px
    crops of 4 tokens each for images larger than 224 px (real 504 px crops, 81 tokens); a Step decoder (gated
    attention, layer 0 dense, then 4 routed experts (2 per token) and a shared one)."""
    specials = ["<im_patch>", "<im_start>", "<im_end>", "<patch_start>", "<patch_end>", "<patch_newline>"]
    template = _JANUS_TEMPLATE.replace("<image_placeholder>", "<im_patch>")
    tok = _tokenizer(bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", pad="<｜▁pad▁｜>", specials=specials,
                     chat_template=template, real=real, extra_tokens=("<|User|>:", "<|Assistant|>:"))
    image_processor = Step3p7ImageProcessor(size={"height": 224, "width": 224}, patch_size=112, max_image_size=448)
    processor = Step3p7Processor(image_processor=image_processor, tokenizer=tok, chat_template=template)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, moe_intermediate_size=32, n_routed_experts=4, num_experts_per_tok=2,
                share_expert_dim=32, mlp_layer_types=["dense", "sparse"], sliding_window=128)
    vision = dict(**_VISION, image_size=224, patch_size=14, max_position_embeddings=256)
    return Step3p7Config(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(
        "<im_patch>")), processor


def _build_molmo2(real: str | None = None) -> _Recipe:
    """Molmo 2 (allenai/Molmo2-4B): crops of 112 px overlapping by 1 patch (real 378 px, by 4; at most 4 here, real 8)
    and a low-resolution view, SigLIP patch 14 -> 8 x 8 per crop, features of two tower layers concatenated and
    attention-pooled 2 x 2 into ``<im_patch>`` tokens (the low-resolution view's 4 x 4, then the crops' windows as one
    high-resolution grid, 7 x 7 for a 200 x 150 image), each row ended by ``<im_col>``, each view between
    ``<low_res_im_start>`` / ``<im_start>`` and ``<im_end>``; an OLMo-style decoder with Qwen3 q/k norms. ChatML (the
    processor puts the end-of-text token first: no BOS)."""
    image_tokens = ["<im_patch>", "<im_col>", "<im_start>", "<low_res_im_start>", "<frame_start>", "<im_end>",
                    "<frame_end>", "<im_low>"]
    named = {"image_token": "<|image|>", "video_token": "<|video|>"}
    template = _QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<|image|>")
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=["<|im_start|>", *image_tokens,
                     *named.values()], chat_template=template, real=real, named=named)
    image_processor = Molmo2ImageProcessor(size={"height": 112, "width": 112}, max_crops=4, overlap_margins=[1, 1])
    processor = Molmo2Processor(image_processor=image_processor, video_processor=Molmo2VideoProcessor(), tokenizer=tok,
                                chat_template=template)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), additional_vocab_size=0)
    vision = dict(**_VISION, num_key_value_heads=4, head_dim=8, image_size=[112, 112], patch_size=14,
                  num_position_embeddings=64)
    adapter = dict(vision_feature_layer=[-1, -2], hidden_size=_VISION["hidden_size"], num_attention_heads=4,
                   num_key_value_heads=4, head_dim=8, intermediate_size=128, text_hidden_size=_TEXT["hidden_size"])
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_start_token_id", "<im_start>"), ("low_res_image_start_token_id", "<low_res_im_start>"),
        ("image_end_token_id", "<im_end>"), ("image_patch_id", "<im_patch>"), ("frame_start_token_id", "<frame_start>"),
        ("frame_end_token_id", "<frame_end>")]}
    return Molmo2Config(vision_config=vision, adapter_config=adapter, text_config=text, **ids), processor
