"""Mistral 3 (Pixtral vision tower): variable-size patch grid, one ``[IMG_BREAK]`` per row.

The processor resizes the image to fit a longest edge (keeping its aspect ratio) rounded up to a
multiple of ``patch x merge`` pixels and reports that size as ``image_sizes`` ``(1, 2)`` =
``(height, width)``; the model merges ``merge x merge`` patches into one token, so the image becomes
``rows x cols = (height // (patch * merge)) x (width // (patch * merge))`` ``[IMG]`` tokens, row-major,
each row followed by ``[IMG_BREAK]`` and the last by ``[IMG_END]``. Those two are ordinary text
tokens (role ``other``); only ``[IMG]`` positions carry image features.
"""

from __future__ import annotations

from analysis.models.adapters.base import Adapter, Layout
from analysis.models.geometry import resize_to


class Mistral3Adapter(Adapter):
    family = "mistral3"
    model_types = ("mistral3",)
    title = "Mistral 3 (Pixtral)"
    image_inputs = ("pixel_values", "image_sizes")

    def merged_cell(self) -> int:
        """Side in processed pixels of one image token: ``patch_size * spatial_merge_size``."""
        return int(self.vision_config().patch_size) * int(getattr(self.model.config, "spatial_merge_size", 1))

    def layout(self, inputs, image_size):
        height, width = (int(v) for v in inputs["image_sizes"][0])
        cell = self.merged_cell()
        out = Layout()
        out.add_grid(0, "image", height // cell, width // cell, cell, cell, resize_to(*image_size, width, height))
        return out


class LightOnOcrAdapter(Mistral3Adapter):
    """LightOnOCR: Mistral 3's Pixtral geometry (``image_sizes``, 14 px patches merged 2 x 2), but the processor writes
    no break or end tokens: the ``rows x cols`` image tokens follow each other row-major."""

    family = "lighton_ocr"
    model_types = ("lighton_ocr",)
    title = "LightOnOCR"
