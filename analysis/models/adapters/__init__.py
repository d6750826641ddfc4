"""One adapter per supported VLM family, looked up by ``config.model_type``."""

from __future__ import annotations

from analysis.errors import UnsupportedModelError
from analysis.models.adapters.base import Adapter, Layout
from analysis.models.adapters.aya_vision import AyaVisionAdapter, Cohere2VisionAdapter
from analysis.models.adapters.gemma3 import Gemma3Adapter
from analysis.models.adapters.generic import TokenLevelAdapter, structure_problems
from analysis.models.adapters.got_ocr2 import GotOcr2Adapter
from analysis.models.adapters.internvl import InternVLAdapter
from analysis.models.adapters.janus import DeepseekVLAdapter, DeepseekVLHybridAdapter, JanusAdapter
from analysis.models.adapters.idefics3 import Idefics3Adapter, SmolVLMAdapter
from analysis.models.adapters.llava import LlavaAdapter
from analysis.models.adapters.llava_next import LlavaNextAdapter
from analysis.models.adapters.llava_onevision import LlavaNextVideoAdapter, LlavaOnevisionAdapter
from analysis.models.adapters.mistral3 import LightOnOcrAdapter, Mistral3Adapter
from analysis.models.adapters.paligemma import PaliGemmaAdapter
from analysis.models.adapters.qwen2_vl import (Glm4vAdapter, Glm4vMoeAdapter, Glm46VAdapter, GlmgaAdapter, GlmOcrAdapter,
                                               PaddleOCRVLAdapter, Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter, Qwen3VLMoeAdapter,
                                               VideoLlama3Adapter)
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
    Qwen3VLMoeAdapter,
    Glm4vMoeAdapter,
    Glm46VAdapter,
    AyaVisionAdapter,
    Cohere2VisionAdapter,
    GlmgaAdapter,
    GlmOcrAdapter,
    LightOnOcrAdapter,
    JanusAdapter,
    DeepseekVLAdapter,
    PaddleOCRVLAdapter,
    DeepseekVLHybridAdapter,
    VideoLlama3Adapter,
    GotOcr2Adapter,
)
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(a.family for a in ADAPTERS)

_GEMMA_LIKE = "a Gemma decoder over SigLIP image tokens like PaliGemma, with bidirectional attention inside image blocks"
_CROSS = "its language model reads the image through cross-attention layers: no image tokens in the sequence to probe"
_QFORMER = "a Q-Former compresses the image into learned query tokens: no patch grid"
_VQ = "images are discrete tokens of the vocabulary (a VQ codebook), not vision-tower features"
_ENC_DEC = "an encoder-decoder: the answer's decoder cross-attends to the encoded image and prompt"
_TIMM = "its vision tower is a timm model, and timm is not installed here (not a dependency of this project)"
_HYBRID = ("linear-attention (Gated DeltaNet) layers, 3 of every 4, mix positions outside attention: knockout cannot "
           "block image -> last there and attention maps miss those layers")
_SPARSE = ("its decoder's sparse attention (a {indexer} choosing the keys each query reads) is a mask only under the "
           "eager / sdpa implementations; under a registered attention function (the probes' backend) the selection is "
           "handed over as indices for a sparse kernel instead, so the idle backend would attend to every key (idle != "
           "stock once the prompt exceeds the top-k)")
# Image-text-to-text model types of transformers that neither have an adapter nor take the generic token-level path
# (``generic.py``): (nearest supported family, why). "not adapted yet": could be, with the work named; "refused": a
# structure the probes do not measure. Model types not listed here and not adapted go to the generic path, which
# checks the model's structure itself (``generic.structure_problems``).
NOT_SUPPORTED: dict[str, tuple[str, str]] = {
    **{t: ("paligemma", f"not adapted yet: {_GEMMA_LIKE}; {_TIMM}") for t in ("gemma3n",)},
    **{t: ("llava", f"not adapted yet: {_TIMM}") for t in ("fast_vlm", "perception_lm")},
    **{t: ("qwen3_vl", f"refused: {_HYBRID}") for t in ("qwen3_5", "qwen3_5_moe", "minicpm_ocr", "minicpmv4_6",
                                                         "minicpmv4_7")},
    "lfm2_vl": ("llava", "refused: LFM2's short-convolution layers mix positions outside attention: knockout cannot "
                "block image -> last there"),
    "llama4": ("llava", "not adapted yet: transformers 5.24's Llama4ForConditionalGeneration.forward raises on every "
               "call that returns an output object, the default (it reads image_outputs from its language model's "
               "output, which has none); otherwise it passes the "
               "generic path's structure checks (VLM.language_model finds the decoder stack inside the causal LM that "
               "get_decoder() returns)"),
    "pp_chart2table": ("got_ocr2", "not adapted yet: GOT-OCR2's model (GotOcr2ForConditionalGeneration) behind its own "
                       "processor, which does not expand the image placeholder into the image's tokens (ProcessorMixin's "
                       "call: the prompt must already hold them) and writes no prompt of its own; a tiny model needs "
                       "the checkpoint's prompt format, which is not available offline"),
    "mistral_large4": ("mistral3", "refused: " + _SPARSE.format(indexer="DSA indexer") + "; its indexer also keeps its "
                       "own key cache, which the probes' prefix cache lacks"),
    "hy_v4_vl": ("qwen2_vl", "refused: " + _SPARSE.format(indexer="DSA indexer")),
    "dots3_note": ("glm_ocr", "refused: " + _SPARSE.format(indexer="DSA indexer")),
    "minimax_m3_vl": ("llava", "refused: " + _SPARSE.format(indexer="block indexer")),
    **{t: ("llava", "refused: short causal convolutions over the sequence (after each block, and on the attention's "
                    "keys and values) mix positions outside the attention weights: knockout cannot block image -> last "
                    "there") for t in ("inkling_mm_model", "inkling2", "inkling2_loop")},
    "shieldgemma2": ("gemma3", "refused: its processor ignores the prompt and writes one fixed prompt per safety policy "
                     "around the image (a yes / no policy classifier), so there is no question to probe; the model itself "
                     "is Gemma 3's (Gemma3ForConditionalGeneration)"),
    "fuyu": ("llava", "refused: image patches enter the decoder by a linear projection, without a vision tower"),
    "git": ("llava", "refused: image features are prefixed to the text, without placeholder tokens"),
    **{t: ("idefics3", f"refused: {_CROSS}") for t in ("idefics", "mllama")},
    **{t: ("llava", f"refused: {_QFORMER}") for t in ("blip-2", "instructblip", "instructblipvideo")},
    **{t: ("llava", f"refused: {_VQ}") for t in ("chameleon", "emu3")},
    "apertus1p5": ("llava", f"refused: {_VQ} (its image placeholders take the embeddings of the image's VQ codes, "
                   "offset into the shared vocabulary)"),
    **{t: ("paligemma", f"refused: {_ENC_DEC}") for t in (
        "blip", "florence2", "pix2struct", "udop", "vision-encoder-decoder", "t5gemma2")},
}


def _image_text_to_text_types() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def adapter_for(model_type: str) -> type[Adapter]:
    """Return the adapter class for a ``config.model_type``; raise a clear error if unsupported.

    A family adapter if there is one; else, for an image-text-to-text model type of transformers that is not
    refused (``NOT_SUPPORTED``), the generic ``TokenLevelAdapter``, which checks the model when bound to it.
    """
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    if model_type not in NOT_SUPPORTED and model_type in _image_text_to_text_types():
        return TokenLevelAdapter
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


__all__ = ["ADAPTERS", "NOT_SUPPORTED", "SUPPORTED_FAMILIES", "Adapter", "Layout", "TokenLevelAdapter", "adapter_for",
           "structure_problems"]
