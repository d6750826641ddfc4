"""Prepared model inputs with the role of every token and the image-token -> patch-grid map."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image

from analysis.errors import InputError

Role = Literal["image", "question", "last", "other"]
ROLES: tuple[Role, ...] = ("image", "question", "last", "other")
# The token groups attention mass is split into (``"other"``: template, special tokens, the last position).
TARGETS: tuple[str, ...] = ("image", "question", "other")
Box = tuple[float, float, float, float]

PATCH_COLUMNS = ["position", "tile", "row", "col", "kind", "x0", "y0", "x1", "y1"]


def length_batches(lengths: Iterable[int], batch_size: int) -> list[list[int]]:
    """Return indices grouped into batches of at most ``batch_size`` equal token lengths (no padding needed).

    Batches follow the first appearance of each length; indices keep their order within a length.
    """
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    groups: dict[int, list[int]] = {}
    for i, length in enumerate(lengths):
        groups.setdefault(int(length), []).append(i)
    return [g[k:k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]


@dataclass
class PreparedInputs:
    """One image + question, ready for the model, with token roles and patch geometry.

    Attributes:
        inputs: the processor's output for a batch of one (``input_ids`` of shape ``(1, T)``,
            ``pixel_values``, ...), on the model's device; pass it as ``model(**inputs)``.
        image: the original RGB image.
        question: the user's question, as given.
        prompt: the full text prompt before image-token expansion.
        roles: ``(T,)`` array of role names, one per position: ``"image"``, ``"question"``,
            ``"last"`` (the final prompt position) or ``"other"`` (template, special tokens).
        patches: one row per image position, in sequence order: ``position``, ``tile`` (0 is the
            first tile the processor makes, e.g. LLaVA-NeXT's overview image), ``row``, ``col``
            on that tile's grid, ``kind`` (``"patch"``; ``"newline"`` / ``"cls"`` tokens have
            NaN boxes), and the box ``(x0, y0, x1, y1)`` it covers in original-image pixels.
        grids: ``{tile: (rows, cols)}``, the shape of each tile's patch grid.
        tile_names: ``{tile: name}`` (e.g. ``"overview"``, ``"high-res"``, ``"row 1 col 2"``).
    """

    inputs: dict
    image: Image.Image
    question: str
    prompt: str
    roles: np.ndarray
    patches: pd.DataFrame
    grids: dict[int, tuple[int, int]]
    tile_names: dict[int, str] = field(default_factory=dict)

    @property
    def input_ids(self) -> torch.Tensor:
        """Token ids, shape ``(T,)``."""
        return self.inputs["input_ids"][0]

    @property
    def length(self) -> int:
        """Number of positions ``T``."""
        return int(self.input_ids.shape[0])

    def positions(self, role: Role) -> torch.Tensor:
        """Return the positions (LongTensor, ascending) that have ``role``."""
        if role not in ROLES:
            raise InputError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        return torch.from_numpy(np.flatnonzero(self.roles == role))

    @property
    def image_positions(self) -> torch.Tensor:
        """Positions of the image tokens (every image placeholder, newline tokens included)."""
        return self.positions("image")

    @property
    def question_positions(self) -> torch.Tensor:
        """Positions of the question's own tokens (no template, no instruction)."""
        return self.positions("question")

    @property
    def last_position(self) -> int:
        """The final prompt position, whose next-token prediction is the answer."""
        return self.length - 1

    def related_positions(self, boxes: Iterable[Box]) -> torch.Tensor:
        """Return image positions whose patch box overlaps any of ``boxes`` (original pixels).

        Args:
            boxes: ``(x0, y0, x1, y1)`` boxes in the original image's pixel coordinates, e.g. the
                ground-truth objects of a zoo question or a region the user draws.
        """
        boxes = np.asarray(list(boxes), dtype=float).reshape(-1, 4)
        if len(boxes) == 0:
            raise InputError("related_positions needs at least one box (x0, y0, x1, y1)")
        # Tokens without a box (NaN: newline, [CLS]) overlap nothing: every comparison with NaN is False.
        px0, py0, px1, py1 = (self.patches[c].to_numpy(dtype=float)[:, None] for c in ("x0", "y0", "x1", "y1"))
        overlap = (px0 < boxes[:, 2]) & (px1 > boxes[:, 0]) & (py0 < boxes[:, 3]) & (py1 > boxes[:, 1])
        return torch.as_tensor(self.patches["position"].to_numpy()[overlap.any(axis=1)], dtype=torch.long)

    def to_grid(self, scores, tile: int = 0) -> np.ndarray:
        """Scatter per-image-token scores onto one tile's patch grid.

        Args:
            scores: array-like of shape ``(n_image,)``, one value per image position in sequence
                order (as ``image_positions``), or ``(..., n_image)`` for a batch of maps.
            tile: which tile to draw.

        Returns:
            float array of shape ``(..., rows, cols)``; NaN where the tile has no token.
        """
        scores = np.asarray(scores, dtype=float)
        n_image = len(self.patches)
        if scores.shape[-1] != n_image:
            raise InputError(f"expected {n_image} scores per map (one per image token), got {scores.shape[-1]}")
        if tile not in self.grids:
            raise InputError(f"tile {tile} does not exist; this input has tiles {sorted(self.grids)}")
        rows, cols = self.grids[tile]
        sel = (self.patches["tile"].to_numpy() == tile) & (self.patches["kind"].to_numpy() == "patch")
        grid = np.full(scores.shape[:-1] + (rows, cols), np.nan)
        grid[..., self.patches["row"].to_numpy()[sel], self.patches["col"].to_numpy()[sel]] = scores[..., sel]
        return grid

    def reference_tile(self) -> int:
        """Return the finest tile that covers the whole visible image.

        Among the tiles whose box covers (within 1%) the largest image area, the one with the most
        tokens: LLaVA-NeXT's high-res grid, Idefics3's global image, the only tile elsewhere.
        """
        area = {t: (b[2] - b[0]) * (b[3] - b[1]) for t in self.grids for b in [self.tile_box(t)]}
        covering = [t for t in self.grids if area[t] >= 0.99 * max(area.values())]
        return max(covering, key=lambda t: (self.grids[t][0] * self.grids[t][1], -t))

    def tile_box(self, tile: int) -> Box:
        """Return the original-image box covered by ``tile``."""
        p = self.patches[(self.patches["tile"] == tile) & (self.patches["kind"] == "patch")]
        return (p["x0"].min(), p["y0"].min(), p["x1"].max(), p["y1"].max())

    def to(self, device: torch.device | str) -> "PreparedInputs":
        """Move the model inputs to ``device`` in place and return ``self``."""
        self.inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()}
        return self
