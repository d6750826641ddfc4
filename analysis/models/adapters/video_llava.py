"""Video-LLaVA: LLaVA-1.5's layout for images (CLIP 224 px / patch 14 -> 16 x 16 = 256 tokens, CLS dropped,
shortest-edge resize and centre crop); videos are not mapped."""

from __future__ import annotations

from analysis.models.adapters.llava import LlavaAdapter


class VideoLlavaAdapter(LlavaAdapter):
    family = "video_llava"
    model_types = ("video_llava",)
    title = "Video-LLaVA"

    def process(self, prompt, image):
        """The processor's current output name, ``pixel_values`` (not the deprecated ``pixel_values_images``)."""
        return self.processor(text=[prompt], images=[image], return_tensors="pt", return_legacy_image_output=False)
