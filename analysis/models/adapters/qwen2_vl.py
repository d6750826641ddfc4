"""Qwen2-VL / Qwen2.5-VL / Qwen3-VL: dynamic resolution, patches (14 px; 16 px for Qwen3-VL) merged 2 x 2
into one token each, row-major per frame; ``image_grid_thw`` ``(1, 3)`` gives (frames, patch rows, patch cols)."""

from __future__ import annotations

from analysis.models.adapters.base import Adapter, Layout
from analysis.models.geometry import resize_to


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    title = "Qwen2-VL"
    token_inputs = {"attention_mask": (0, 1), "mm_token_type_ids": (0, 0)}  # text tokens are type 0
    image_inputs = ("pixel_values", "image_grid_thw")  # pixel_values: patches of every image, flattened

    def layout(self, inputs, image_size):
        ip = self.processor.image_processor
        merge = int(inputs["image_merge_sizes"][0]) if "image_merge_sizes" in inputs else int(
            getattr(ip, "merge_size", None) or self.vision_config().spatial_merge_size)
        patch = int(getattr(ip, "patch_size", None) or self.vision_config().patch_size)
        t, gh, gw = (int(v) for v in inputs["image_grid_thw"][0])
        affine = resize_to(*image_size, gw * patch, gh * patch)
        cell = merge * patch
        out = Layout()
        for frame in range(t):
            out.add_grid(frame, f"frame {frame}" if t > 1 else "image", gh // merge, gw // merge, cell, cell, affine)
        return out


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    title = "Qwen2.5-VL"


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
    title = "Qwen3-VL"


class Glm4vAdapter(Qwen2VLAdapter):
    """GLM-4.1V: Qwen2-VL's patch geometry (``image_grid_thw``, 14 px patches merged 2 x 2) and M-RoPE ids."""

    family = "glm4v"
    model_types = ("glm4v",)
    title = "GLM-4.1V"


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """Qwen3-VL-MoE: Qwen3-VL's geometry and DeepStack; a mixture-of-experts MLP (no effect on the layout)."""

    family = "qwen3_vl_moe"
    model_types = ("qwen3_vl_moe",)
    title = "Qwen3-VL-MoE"


class Glm4vMoeAdapter(Glm4vAdapter):
    """GLM-4.5V: GLM-4.1V's geometry; a mixture-of-experts decoder after its first dense layer."""

    family = "glm4v_moe"
    model_types = ("glm4v_moe",)
    title = "GLM-4.5V (MoE)"


class Glm46VAdapter(Glm4vAdapter):
    """GLM-4.6V: GLM-4.1V's model and geometry with its own processor classes."""

    family = "glm46v"
    model_types = ("glm46v",)
    title = "GLM-4.6V"


class GlmgaAdapter(Glm4vAdapter):
    """GLM-4.6V's model and geometry under its own config (``glmga``)."""

    family = "glmga"
    model_types = ("glmga",)
    title = "GLM (glmga)"


class GlmOcrAdapter(Glm4vAdapter):
    """GLM-OCR: GLM-4.1V's geometry (14 px patches merged 2 x 2, ``image_grid_thw``) with its own model classes."""

    family = "glm_ocr"
    model_types = ("glm_ocr",)
    title = "GLM-OCR"


class PaddleOCRVLAdapter(Qwen2VLAdapter):
    """PaddleOCR-VL: Qwen2-VL's patch geometry (``image_grid_thw``, 14 px patches merged 2 x 2, one frame)."""

    family = "paddleocr_vl"
    model_types = ("paddleocr_vl",)
    title = "PaddleOCR-VL"


class VideoLlama3Adapter(Qwen2VLAdapter):
    """VideoLLaMA3: Qwen2-VL's patch geometry (``image_grid_thw``, 14 px patches) with the merge size given per image
    (``image_merge_sizes``: images are not merged, videos are)."""

    family = "video_llama_3"
    model_types = ("video_llama_3",)
    title = "VideoLLaMA3"
    image_inputs = ("pixel_values", "image_grid_thw", "image_merge_sizes")
