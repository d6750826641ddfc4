"""Idefics3 / SmolVLM: the image split into row x col tiles plus a global tile, pixel-shuffled.

Each tile of ``S`` px gives ``(S / patch)^2`` vision patches; pixel shuffle by ``scale_factor``
turns each ``scale x scale`` block of patches into one token, row-major on a
``(S / patch / scale)^2`` grid (``image_seq_len`` tokens per tile).
"""

from __future__ import annotations

import re

from analysis.models.adapters.base import Adapter, Layout
from analysis.models.geometry import Affine, resize_to

_ROW_COL = re.compile(r"<row_(\d+)_col_(\d+)>")


class Idefics3Adapter(Adapter):
    family = "idefics3"
    model_types = ("idefics3",)
    title = "Idefics3"
    image_inputs = ("pixel_values", "pixel_attention_mask")

    def layout(self, inputs, image_size):
        config = self.model.config
        vision = self.vision_config()
        side = vision.image_size // vision.patch_size // config.scale_factor
        seq_len = side * side
        n_tokens = int((inputs["input_ids"][0] == self.image_token_id).sum())
        tokens = self.processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
        tiles = [tuple(int(v) for v in m.groups()) for t in tokens if (m := _ROW_COL.fullmatch(t))]
        if len(tiles) * seq_len + seq_len != n_tokens:
            raise RuntimeError(
                f"{self.title}: {n_tokens} image tokens do not match {len(tiles)} tiles + 1 global tile of "
                f"{seq_len} tokens; the processor's image_seq_len disagrees with the model config"
            )
        width, height = image_size
        n_rows = max((r for r, _ in tiles), default=0)
        n_cols = max((c for _, c in tiles), default=0)
        cell = vision.image_size / side
        out = Layout()
        for index, (r, c) in enumerate(tiles):
            tile_to_orig = Affine(tx=(c - 1) * width / n_cols, ty=(r - 1) * height / n_rows)
            scale = resize_to(width / n_cols, height / n_rows, vision.image_size, vision.image_size)
            out.add_grid(index, f"row {r} col {c}", side, side, cell, cell, scale.then(tile_to_orig))
        out.add_grid(
            len(tiles), "global", side, side, cell, cell, resize_to(width, height, vision.image_size, vision.image_size)
        )
        return out


class SmolVLMAdapter(Idefics3Adapter):
    family = "smolvlm"
    model_types = ("smolvlm",)
    title = "SmolVLM"


