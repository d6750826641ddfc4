"""PaliGemma: image tokens first (224 px / patch 14 -> 16 x 16 = 256), prefix-LM attention."""

from __future__ import annotations

from analysis.models.adapters.base import Adapter, Layout
from analysis.models.geometry import resize_to


class PaliGemmaAdapter(Adapter):
    family = "paligemma"
    model_types = ("paligemma",)
    title = "PaliGemma"
    token_inputs = {"attention_mask": (0, 1), "token_type_ids": (0, 1)}  # 1: the causal suffix
    default_template = "{question}"
    bidirectional_prompt = True

    def build_prompt(self, question, template=None):
        """The raw prompt (no chat template), led by the image placeholder the processor expands."""
        prompt = super().build_prompt(question, template)
        image_token = self.processor.image_token
        return prompt if prompt.startswith(image_token) else image_token + prompt

    def layout(self, inputs, image_size):
        vision = self.vision_config()
        side = vision.image_size // vision.patch_size
        affine = resize_to(*image_size, vision.image_size, vision.image_size)
        out = Layout()
        out.add_grid(0, "image", side, side, vision.patch_size, vision.patch_size, affine)
        return out
