"""One adapter per supported VLM family, looked up by ``config.model_type``."""

from __future__ import annotations

from analysis.errors import UnsupportedModelError
from analysis.models.adapters.base import Adapter, Layout
from analysis.models.adapters.gemma3 import Gemma3Adapter
from analysis.models.adapters.internvl import InternVLAdapter
from analysis.models.adapters.idefics3 import Idefics3Adapter, SmolVLMAdapter
from analysis.models.adapters.llava import LlavaAdapter
from analysis.models.adapters.llava_next import LlavaNextAdapter
from analysis.models.adapters.llava_onevision import LlavaNextVideoAdapter, LlavaOnevisionAdapter
from analysis.models.adapters.mistral3 import Mistral3Adapter
from analysis.models.adapters.paligemma import PaliGemmaAdapter
from analysis.models.adapters.qwen2_vl import Glm4vAdapter, Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter
from analysis.models.adapters.video_llava import VideoLlavaAdapter
from analysis.models.adapters.vipllava import VipLlavaAdapter

ADAPTERS: tuple[type[Adapter], ...] = (
    LlavaAdapter,
    LlavaNextAdapter,
    Qwen2VLAdapter,
    Qwen2_5_VLAdapter,
    Idefics3Adapter,
    SmolVLMAdapter,
    PaliGemmaAdapter,
    Gemma3Adapter,
    LlavaOnevisionAdapter,
    VipLlavaAdapter,
    LlavaNextVideoAdapter,
    Mistral3Adapter,
    InternVLAdapter,
    Qwen3VLAdapter,
    VideoLlavaAdapter,
    Glm4vAdapter,
)
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(a.family for a in ADAPTERS)

_LLAVA_LIKE = "a vision tower, a projector and image placeholder tokens like LLaVA, with its own patch geometry"
_QWEN_LIKE = "dynamic-resolution patches merged 2 x 2 with multi-axis RoPE like Qwen2.5-VL, with its own variant"
_GEMMA_LIKE = "a Gemma decoder over SigLIP image tokens like PaliGemma, with bidirectional attention inside image blocks"
_CROSS = "its language model reads the image through cross-attention layers: no image tokens in the sequence to probe"
_QFORMER = "a Q-Former compresses the image into learned query tokens: no patch grid"
_VQ = "images are discrete tokens of the vocabulary (a VQ codebook), not vision-tower features"
_ENC_DEC = "an encoder-decoder: the answer's decoder cross-attends to the encoded image and prompt"
# Image-text-to-text model types of transformers that have no adapter here: (nearest supported
# family, why it is not supported as it stands). Not adapted yet, or refused for a structural reason.
NOT_SUPPORTED: dict[str, tuple[str, str]] = {
    **{t: ("llava", f"not adapted yet: {_LLAVA_LIKE}") for t in (
        "aria", "cohere2_vision", "deepseek_vl", "fast_vlm", "got_ocr2", "janus", "kosmos-2",
        "lfm2_vl", "perception_lm")},
    **{t: ("qwen2_5_vl", f"not adapted yet: {_QWEN_LIKE}") for t in (
        "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", "glm4v_moe", "glm46v", "qwen2_5_omni_thinker",
        "qwen3_omni_moe_thinker", "video_llama_3")},
    **{t: ("paligemma", f"not adapted yet: {_GEMMA_LIKE}") for t in ("gemma3n", "gemma4", "shieldgemma2")},
    "aya_vision": ("internvl", "not adapted yet: GOT-OCR2 tiles pixel-shuffled like InternVL, but its Cohere2 "
                   "decoder scales logits by logit_scale, which the logit lens does not apply yet"),
    "idefics2": ("idefics3", "not adapted yet: a perceiver resamples the image into 64 tokens (no patch grid)"),
    "llama4": ("llava", "not adapted yet: chunked attention and a mixture-of-experts decoder"),
    "fuyu": ("llava", "refused: image patches enter the decoder by a linear projection, without a vision tower"),
    "git": ("llava", "not adapted yet: image features are prefixed to the text, without placeholder tokens"),
    **{t: ("idefics3", f"refused: {_CROSS}") for t in ("idefics", "mllama")},
    **{t: ("llava", f"refused: {_QFORMER}") for t in ("blip-2", "instructblip", "instructblipvideo")},
    **{t: ("llava", f"refused: {_VQ}") for t in ("chameleon", "emu3")},
    **{t: ("paligemma", f"refused: {_ENC_DEC}") for t in (
        "blip", "florence2", "pix2struct", "udop", "vision-encoder-decoder", "t5gemma2")},
}


def adapter_for(model_type: str) -> type[Adapter]:
    """Return the adapter class for a ``config.model_type``; raise a clear error if unsupported."""
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    supported = ", ".join(f"{a.title} ({'/'.join(a.model_types)})" for a in ADAPTERS)
    known = ""
    if model_type in NOT_SUPPORTED:
        nearest, reason = NOT_SUPPORTED[model_type]
        title = next(a.title for a in ADAPTERS if a.family == nearest)
        known = f" ({reason}; the nearest supported family is {title}, model_type {nearest!r})"
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not a supported VLM family{known}. Supported: {supported}. "
        "To add one, write an Adapter in analysis/models/adapters/ and list it in ADAPTERS."
    )


__all__ = ["ADAPTERS", "NOT_SUPPORTED", "SUPPORTED_FAMILIES", "Adapter", "Layout", "adapter_for"]
