"""The family adapter interface: what a probe needs to know about one VLM family."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from analysis.errors import InputError
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
        token_inputs: the processor outputs with one value per position besides ``input_ids``,
            each with ``(pad value, appended-token value)``.
        image_inputs: the processor outputs that carry the image (not per position).
        geometry: True when the layout maps image tokens to patches of the image (every family adapter);
            False for the generic token-level path (tokens in sequence order, boxes NaN).

    Every per-family input operation (repeat a batch, slice a suffix for a cached prefix, pad a
    batch, append generated tokens) is a method here; probes never look at input keys.
    """

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    title: ClassVar[str]
    default_template: ClassVar[str | None] = None
    bidirectional_prompt: ClassVar[bool] = False
    token_inputs: ClassVar[dict[str, tuple[int, int]]] = {"attention_mask": (0, 1)}
    image_inputs: ClassVar[tuple[str, ...]] = ("pixel_values",)
    geometry: ClassVar[bool] = True

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

    # --- input surgery: the only place that knows which model inputs are per token -----------
    def _kind(self, key: str, value) -> str:
        """Return ``"ids"``, ``"token"``, ``"image"`` or ``"other"`` (not a tensor) for one input."""
        if key == "input_ids":
            return "ids"
        if key in self.token_inputs:
            return "token"
        if key in self.image_inputs:
            return "image"
        if not torch.is_tensor(value):
            return "other"
        raise InputError(
            f"the {self.title} adapter does not know the model input {key!r}; list it in the adapter's "
            "token_inputs (one value per position) or image_inputs (analysis/models/adapters/)"
        )

    def repeat(self, inputs: dict, n: int) -> dict:
        """Return ``inputs`` of a batch of one repeated into a batch of ``n`` identical rows.

        Token inputs ``(1, T)`` become ``(n, T)``; image inputs are repeated along their first
        axis (per image, or per patch where the processor flattens patches, as Qwen2-VL's).
        """
        return {k: v.repeat(n, *[1] * (v.dim() - 1)) if self._kind(k, v) != "other" else v
                for k, v in inputs.items()}

    def suffix(self, inputs: dict, start: int) -> dict:
        """Return the inputs of positions ``start..T-1`` only, without the image inputs.

        For a forward that continues a key/value cache of positions ``0..start-1`` which already
        holds the image.
        """
        out = {}
        for key, value in inputs.items():
            kind = self._kind(key, value)
            if kind in ("ids", "token"):
                out[key] = value[:, start:]
            elif kind == "other":
                out[key] = value
        return out

    def append(self, inputs: dict, tokens: Sequence[int]) -> dict:
        """Return the inputs of a batch of one with text ``tokens`` appended after the prompt.

        Per-token inputs are extended with the value an appended text token takes (e.g.
        PaliGemma's ``token_type_ids`` 1: the causal suffix).
        """
        if not len(tokens):
            return inputs
        ids = torch.tensor([list(tokens)], dtype=inputs["input_ids"].dtype, device=inputs["input_ids"].device)
        out = {}
        for key, value in inputs.items():
            kind = self._kind(key, value)
            if kind == "ids":
                out[key] = torch.cat([value, ids], dim=1)
            elif kind == "token":
                out[key] = torch.cat([value, torch.full_like(ids, self.token_inputs[key][1], dtype=value.dtype)], 1)
            else:
                out[key] = value
        return out

    def pad(self, inputs: Sequence[dict]) -> tuple[dict, list[int]]:
        """Stack per-sample inputs (batches of one) into one left-padded batch.

        Token inputs are left-padded (the pad token, attention mask 0); image inputs are
        concatenated, zero-padding the tile axis when samples have different numbers of tiles (as
        the processors do); floating image inputs are cast to the model's dtype.

        Returns:
            ``(batch, offsets)``; ``offsets[i]`` is the number of pad positions before sample ``i``.
        """
        lengths = [int(x["input_ids"].shape[1]) for x in inputs]
        width = max(lengths)
        pad_id = self.processor.tokenizer.pad_token_id
        batch = {}
        for key in inputs[0]:
            values = [x[key] for x in inputs]
            kind = self._kind(key, values[0])
            if kind == "other":
                batch[key] = values[0]
            elif kind in ("ids", "token"):
                fill = (0 if pad_id is None else int(pad_id)) if kind == "ids" else self.token_inputs[key][0]
                batch[key] = torch.cat([F.pad(v, (width - v.shape[1], 0), value=fill) for v in values])
            elif all(v.shape[1:] == values[0].shape[1:] for v in values):
                batch[key] = torch.cat(values)
            elif all(v.dim() > 2 and v.shape[2:] == values[0].shape[2:] for v in values):
                most = max(v.shape[1] for v in values)
                batch[key] = torch.cat([torch.cat([v, v.new_zeros(v.shape[:1] + (most - v.shape[1],) + v.shape[2:])], 1)
                                        for v in values])
            else:
                raise InputError(f"cannot batch input {key!r} with shapes {[tuple(v.shape) for v in values]}; "
                                 "use batch_size=1")
            if kind == "image" and batch[key].is_floating_point():
                batch[key] = batch[key].to(self.model.dtype)
        return batch, [width - n for n in lengths]

    @property
    def cache_argument(self) -> str:
        """The forward argument that takes a key/value cache: ``cache`` (transformers >= 5.24), else
        ``past_key_values`` (older releases; removed in 5.40)."""
        parameters = inspect.signature(type(self.model).forward).parameters
        return "cache" if "cache" in parameters else "past_key_values"

    @staticmethod
    def cache_of(output):
        """Return the key/value cache of a forward's output, under either name."""
        return output["cache"] if "cache" in output else output["past_key_values"]

    @staticmethod
    def repeat_language_model_kwargs(kwargs: dict, n: int) -> dict:
        """Return keyword arguments of a language-model forward (batch of one) for a batch of ``n``.

        ``position_ids`` have the batch on their second-last axis (``(1, T)``, or M-RoPE's
        ``(3, 1, T)``); other tensors on their first; nested dicts (per-layer-type masks) recurse.
        DeepStack's ``deepstack_visual_embeds`` (Qwen3-VL and the models built on it: one
        ``(n_image_tokens, hidden)`` tensor per injected layer, added at ``visual_pos_masks``, which
        expands like any mask) are tiled: one copy per batch member, batch-major as the mask selects.
        """
        def expand(key, value):
            if key == "deepstack_visual_embeds" and value is not None:
                return [v.repeat(n, *([1] * (v.dim() - 1))) for v in value]
            if isinstance(value, dict):
                return {k: expand(key, v) for k, v in value.items()}
            if not torch.is_tensor(value) or value.dim() < 2:
                return value
            if key == "position_ids":
                return value.expand(*value.shape[:-2], n, value.shape[-1])
            return value.expand(n, *value.shape[1:]) if value.shape[0] == 1 else value

        return {k: expand(k, v) for k, v in kwargs.items()}

    def vision_config(self):
        """The vision tower's config."""
        return self.model.config.vision_config


def tensor_to_list(value) -> list:
    """Return ``value`` (tensor, array or list) as a nested list of Python numbers."""
    if torch.is_tensor(value):
        return value.tolist()
    return np.asarray(value).tolist()
