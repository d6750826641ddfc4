"""Gemma 3: one SigLIP image (896 px / patch 14 -> 64 x 64 patches), average-pooled to 16 x 16 = 256 tokens.

The processor resizes the whole image to the tower's square input (no crop) and expands
``<start_of_image>`` in the prompt to ``"\\n\\n<start_of_image>" + 256 x <image_soft_token> +
"<end_of_image>\\n\\n"``. Inside the decoder the image tokens attend to each other bidirectionally
(``token_type_ids`` 1 marks them; the model builds that mask itself and the probes leave it alone);
text stays causal, and the decoder alternates sliding-window and global layers.
"""

from __future__ import annotations

import math

from analysis.errors import UnsupportedModelError
from analysis.models.adapters.base import Adapter, Layout
from analysis.models.geometry import resize_to


class Gemma3Adapter(Adapter):
    family = "gemma3"
    model_types = ("gemma3",)
    title = "Gemma 3"
    token_inputs = {"attention_mask": (0, 1), "token_type_ids": (0, 0)}  # 1: image token; text is 0

    def layout(self, inputs, image_size):
        """Return the ``side x side`` grid of pooled cells (``side = sqrt(mm_tokens_per_image)``), row-major."""
        config = self.model.config
        vision = self.vision_config()
        per_image = int(config.mm_tokens_per_image)
        side = math.isqrt(per_image)
        n_tokens = int((inputs["input_ids"][0] == self.image_token_id).sum())
        if n_tokens != per_image:
            raise UnsupportedModelError(
                f"{self.title}: {n_tokens} image tokens for one image of {per_image}: the processor added "
                "pan-and-scan crops, whose layout is not mapped; set processor.image_processor.do_pan_and_scan = False"
            )
        cell = vision.image_size / side
        out = Layout()
        out.add_grid(0, "image", side, side, cell, cell, resize_to(*image_size, vision.image_size, vision.image_size))
        return out
