"""The family adapter interface: what a probe needs to know about one VLM family."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from analysis.models.geometry import Affine, grid_cells


@dataclass
class Layout:
    """Where each image token comes from, in sequence order.

    Attributes:
        tiles, rows, cols: ``(n_image,)`` int arrays; the token's tile and cell on that tile's grid.
        kinds: ``(n_image,)`` array of ``"patch"``, ``"newline"`` or ``"cls"``.
        boxes: ``(n_image, 4)`` original-image boxes ``(x0, y0, x1, y1)``; NaN for non-patches.
        grids: ``{tile: (rows, cols)}``.
        tile_names: ``{tile: name}``.
    """

    tiles: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    cols: list = field(default_factory=list)
    kinds: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    grids: dict = field(default_factory=dict)
    tile_names: dict = field(default_factory=dict)

    def add_grid(self, tile: int, name: str, rows: int, cols: int, cell_w: float, cell_h: float, affine: Affine):
        """Append a full row-major grid of patch tokens for ``tile``."""
        self.add_cells(tile, name, (rows, cols), np.arange(rows * cols), cols, grid_cells(rows, cols, cell_w, cell_h, affine))

    def add_cells(self, tile: int, name: str, grid: tuple[int, int], cells, cols: int, boxes: np.ndarray):
        """Append patch tokens at flat ``cells`` (row-major with ``cols`` columns) with their boxes."""
        r, c = np.divmod(np.asarray(cells), cols)
        self.tiles += [tile] * len(r)
        self.rows += r.tolist()
        self.cols += c.tolist()
        self.kinds += ["patch"] * len(r)
        self.boxes += [tuple(b) for b in boxes]
        self.grids[tile] = grid
        self.tile_names[tile] = name

    def add_special(self, tile: int, row: int, col: int, kind: str):
        """Append one non-patch image token (an image newline or a CLS token)."""
        self.tiles.append(tile)
        self.rows.append(row)
        self.cols.append(col)
        self.kinds.append(kind)
        self.boxes.append((np.nan,) * 4)

    def __len__(self) -> int:
        return len(self.tiles)


class Adapter(ABC):
    """Base adapter. Subclasses describe one family; instances are bound to a model + processor.

    Class attributes:
        family: short family name used throughout (``"llava"``, ``"qwen2_vl"``, ...).
        model_types: the ``config.model_type`` values this adapter handles.
        title: human-readable family name for tables and errors.
        default_template: a ``str.format`` template with ``{question}`` used instead of the
            processor's chat template (``None`` to use the chat template).
        bidirectional_prompt: True when prompt tokens attend to later prompt tokens (prefix-LM),
            so a prompt prefix cannot be computed once and reused.
    """

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    title: ClassVar[str]
    default_template: ClassVar[str | None] = None
    bidirectional_prompt: ClassVar[bool] = False

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor

    @property
    def image_token_id(self) -> int:
        """The id of the image placeholder token that the processor expands."""
        config = self.model.config
        for name in ("image_token_id", "image_token_index"):
            value = getattr(config, name, None)
            if value is not None:
                return int(value)
        return int(self.processor.tokenizer.convert_tokens_to_ids(self.processor.image_token))

    def build_prompt(self, question: str, template: str | None = None) -> str:
        """Return the text prompt (before image-token expansion) that asks ``question``."""
        template = template or self.default_template
        if template is not None:
            return template.format(question=question)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def process(self, prompt: str, image) -> dict:
        """Run the processor on one prompt and image; return PyTorch tensors."""
        inputs = self.processor(text=[prompt], images=[image], return_tensors="pt")
        inputs.pop("labels", None)  # PaliGemma's processor adds training labels
        return inputs

    @abstractmethod
    def layout(self, inputs: dict, image_size: tuple[int, int]) -> Layout:
        """Return the image-token layout for processed ``inputs`` of an image of ``(width, height)``."""

    def expand(self, inputs: dict, n: int) -> dict:
        """Return ``inputs`` of a batch of one repeated into a batch of ``n`` identical rows."""
        return {k: v.repeat(n, *[1] * (v.dim() - 1)) if torch.is_tensor(v) and v.dim() and v.shape[0] == 1 else v
                for k, v in inputs.items()}

    def vision_config(self):
        """The vision tower's config."""
        return self.model.config.vision_config


def tensor_to_list(value) -> list:
    """Return ``value`` (tensor, array or list) as a nested list of Python numbers."""
    if torch.is_tensor(value):
        return value.tolist()
    return np.asarray(value).tolist()
