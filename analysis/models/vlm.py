"""The VLM wrapper: model + processor + family adapter, and ``load_vlm``."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.data.images import ImageLike, load_image
from analysis.errors import ImageError, InputError, ModelNotFoundError, PromptTooLongError
from analysis.models.adapters import Adapter, adapter_for
from analysis.models.adapters.generic import decoder_stack, forward_code
from analysis.models.digests import config_digest, essential_fields, image_digest, processor_digest
from analysis.models.inputs import PATCH_COLUMNS, PreparedInputs
from analysis.models.sources import lookup

# The inputs ``VLM.prepare`` built inside ``reusing_inputs()`` blocks: {(builder, image, question, template): inputs}.
_REUSED: ContextVar[dict | None] = ContextVar("analysis_models_reused_inputs", default=None)


@contextlib.contextmanager
def reusing_inputs() -> Iterator[None]:
    """Inside the block, ``VLM.prepare`` builds each input once and returns the same ``PreparedInputs`` again.

    An input is reused for the same image (by its pixels), question and template on any ``VLM``
    that builds inputs alike: the same adapter class, processor settings and vocabulary, model
    config (less the zoo's training metadata), device and dtype, e.g. every checkpoint of one
    training run. For probes that ask several models, or several times, the same questions
    (``alignment_vs_accuracy``); treat the inputs as read-only, and do not change a processor's
    settings inside the block. Memory: every input built in the block, until it ends. Nested
    blocks share the outer one's inputs.
    """
    if _REUSED.get() is not None:
        yield
        return
    token = _REUSED.set({})
    try:
        yield
    finally:
        _REUSED.reset(token)


@dataclass
class VLM:
    """A loaded vision-language model with everything a probe needs to know about it.

    Attributes:
        model: the ``*ForConditionalGeneration`` model, in eval mode.
        processor: its processor (tokenizer + image processor + chat template).
        adapter: the family adapter bound to ``model`` and ``processor``.
        name: what it was loaded from (hub id, folder, ``zoo:<name>`` or ``tiny:<family>``).
    """

    model: nn.Module
    processor: object
    adapter: Adapter
    name: str

    @classmethod
    def from_parts(cls, model: nn.Module, processor, name: str) -> "VLM":
        """Wrap an already-built model and processor; raise if the family is unsupported."""
        adapter = adapter_for(model.config.model_type)(model, processor)
        return cls(model=model.eval(), processor=processor, adapter=adapter, name=name)

    # --- what the model is -------------------------------------------------------------------
    @property
    def family(self) -> str:
        """The adapter's family name (``"llava"``, ``"qwen2_vl"``, ...)."""
        return self.adapter.family

    @property
    def text_config(self):
        """The language model's config."""
        return self.model.config.get_text_config()

    @property
    def language_model(self) -> nn.Module:
        """The decoder stack (embeddings, ``layers``, ``norm``) without the LM head (inside a causal-LM wrapper where
        ``get_decoder()`` returns one, as Llama 4's does: ``adapters.generic.decoder_stack``)."""
        return decoder_stack(self.model)

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layers, in order; ``layers[i]`` outputs hidden state ``i + 1``."""
        return self.language_model.layers

    @property
    def final_norm(self) -> nn.Module:
        """The norm applied to the last layer's output before the unembedding."""
        return self.language_model.norm

    @property
    def lm_head(self) -> nn.Module:
        """The unembedding (hidden -> vocabulary logits)."""
        return self.model.get_output_embeddings()

    @property
    def n_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.layers)

    @property
    def n_heads(self) -> int:
        """Number of attention (query) heads per decoder layer."""
        return int(self.text_config.num_attention_heads)

    @property
    def n_kv_heads(self) -> int:
        """Number of key/value heads per decoder layer (fewer than ``n_heads`` with GQA)."""
        return int(getattr(self.text_config, "num_key_value_heads", None) or self.n_heads)

    @property
    def hidden_size(self) -> int:
        """Width of the residual stream."""
        return int(self.text_config.hidden_size)

    @property
    def device(self) -> torch.device:
        """Device inputs go to: the parameters' device, or with a ``device_map`` the main execution device."""
        placed = getattr(self.model, "hf_device_map", None)
        if placed:
            return _main_device(placed)
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's parameters."""
        return next(self.model.parameters()).dtype

    @property
    def tokenizer(self):
        """The processor's tokenizer."""
        return self.processor.tokenizer

    @property
    def max_length(self) -> int | None:
        """Longest sequence the language model accepts (``max_position_embeddings``)."""
        value = getattr(self.text_config, "max_position_embeddings", None)
        return int(value) if value else None

    @property
    def config_hash(self) -> str:
        """A short hash of the model config, for provenance and caching; stable across transformers
        versions (``analysis.models.digests``)."""
        return config_digest(self.model.config)

    @functools.cached_property
    def _input_builder(self) -> tuple[str, str, str]:
        """What ``prepare`` depends on besides its arguments, the device and the dtype (``reusing_inputs``)."""
        fields = {k: v for k, v in essential_fields(self.model.config).items() if k != "zoo"}  # training metadata
        config = json.dumps(fields, sort_keys=True, default=str)
        return type(self.adapter).__qualname__, processor_digest(self.processor), config

    def unembed(self, hidden: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
        """Return vocabulary logits for residual-stream states (logit lens).

        Args:
            hidden: ``(..., hidden_size)`` hidden states (e.g. a decoder layer's output).
            final_norm: apply the model's final norm first (exact for the last layer; the
                information-flow reference code skips it for intermediate layers).

        Returns:
            ``(..., vocab_size)`` logits in fp32, as the model's head makes them: the scales its forward
            applies to the unembedding's output (``head_scales``: Granite's ``/ logits_scaling``,
            HyperCLOVA X's ``* logits_scaling``, Muse's ``* output_multiplier``), in its order around
            the final logit soft-capping. Only what the head's code applies (Aya Vision / Cohere2-Vision
            in transformers 5.24 do not apply their text config's ``logit_scale``); a test checks every
            family.
        """
        hidden = hidden.to(device=self.device, dtype=self.dtype)
        if final_norm:
            hidden = self.final_norm(hidden)
        logits = self.lm_head(hidden).float()
        scales = head_scales(type(self.model))
        for op, path, after_cap in scales:
            if not after_cap:
                logits = self._scaled(logits, op, path)
        cap = getattr(self.text_config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        for op, path, after_cap in scales:
            if after_cap:
                logits = self._scaled(logits, op, path)
        return logits

    def _scaled(self, logits: torch.Tensor, op: str, path: str) -> torch.Tensor:
        value = functools.reduce(getattr, path.split("."), self.model)
        return logits * value if op == "*" else logits / value

    def check_layer(self, layer: int) -> int:
        """Return ``layer`` as a non-negative index; raise a clear error if out of range."""
        if not isinstance(layer, (int, np.integer)) or not -self.n_layers <= layer < self.n_layers:
            raise InputError(f"layer {layer!r} is out of range: this model has layers 0..{self.n_layers - 1}")
        return int(layer) % self.n_layers

    # --- inputs ------------------------------------------------------------------------------
    def prepare(self, image: ImageLike, question: str, template: str | None = None) -> PreparedInputs:
        """Build model inputs for one image and question, with token roles and patch geometry.

        Args:
            image: a path, ``PIL.Image`` or uint8 array; converted to RGB.
            question: the user's question; its tokens get the role ``"question"``.
            template: optional ``str.format`` template with ``{question}`` that replaces the
                family's chat template (e.g. ``"answer en {question}"`` for PaliGemma).

        Returns:
            A ``PreparedInputs`` on the model's device (batch of one).

        Raises:
            InputError: an empty question, or one that contains the processor's image placeholder.
            ImageError: an image the processor refuses (e.g. too elongated for Qwen2-VL).

        Warns:
            UserWarning: both image sides are below 1/8 of the family's native input side
            (``_native_side``), so the model sees a heavily upsampled image.
        """
        if not isinstance(question, str) or not question.strip():
            raise InputError("question must be a non-empty string")
        if template is not None and "{question}" not in template:
            raise InputError("template must contain '{question}'")
        placeholder = getattr(self.processor, "image_token", None) or self.tokenizer.convert_ids_to_tokens(
            self.adapter.image_token_id
        )
        if placeholder and placeholder in question:
            raise InputError(
                f"the question contains {placeholder!r}, the {self.adapter.title} processor's image placeholder; "
                "remove it from the question: the image is passed separately and its tokens are inserted for you"
            )
        image = load_image(image)
        side = _native_side(getattr(self.processor, "image_processor", None))
        if side is not None and max(image.size) < side / 8:
            warnings.warn(
                f"the {image.width}x{image.height} image is far below the model's input resolution (both sides "
                f"under 1/8 of {self.adapter.title}'s native side, {side} px); the processor upsamples it, so results "
                "describe an upsampled image. Pass a larger image if you can.",
                UserWarning,
                stacklevel=2,
            )
        reused = _REUSED.get()
        key = None if reused is None else (self._input_builder, str(self.device), self.dtype, image_digest(image),
                                           question, template)
        if reused is not None and key in reused:
            return reused[key]
        prompt = self.adapter.build_prompt(question, template)
        inputs = dict(self._process(prompt, image))
        ids = inputs["input_ids"][0]
        if self.max_length is not None and len(ids) > self.max_length:
            raise PromptTooLongError(
                f"the prompt has {len(ids)} tokens but {self.name} accepts at most {self.max_length}; "
                "shorten the question or use a smaller image (fewer image tiles)"
            )
        roles = np.full(len(ids), "other", dtype=object)
        image_pos = torch.nonzero(ids == self.adapter.image_token_id).flatten().numpy()
        roles[image_pos] = "image"
        roles[self._question_positions(prompt, question, ids)] = "question"
        roles[len(ids) - 1] = "last"
        layout = self.adapter.layout(inputs, image.size)
        if len(layout) != len(image_pos):
            raise RuntimeError(
                f"{self.adapter.title} adapter found {len(layout)} image tokens but the processor made "
                f"{len(image_pos)}; please report this with the model name and image size"
            )
        boxes = np.asarray(layout.boxes, dtype=float).reshape(-1, 4)
        # from arrays, not lists: pandas converts lists element by element (0.7 ms -> 0.3 ms per call)
        columns = (image_pos, np.asarray(layout.tiles, dtype=np.int64), np.asarray(layout.rows, dtype=np.int64),
                   np.asarray(layout.cols, dtype=np.int64), np.asarray(layout.kinds, dtype=object), *boxes.T)
        patches = pd.DataFrame(dict(zip(PATCH_COLUMNS, columns)))
        prepared = PreparedInputs(
            inputs=inputs, image=image, question=question, prompt=prompt, roles=roles,
            patches=patches, grids=layout.grids, tile_names=layout.tile_names,
        ).to(self.device)
        if reused is not None:
            reused[key] = prepared
        return prepared

    def _process(self, prompt: str, image) -> dict:
        """Return the adapter's processed inputs; raise ``ImageError`` if the processor refuses the image.

        A processor failure is blamed on the image when the image processor alone fails on it too.
        """
        try:
            return self.adapter.process(prompt, image)
        except Exception as err:
            try:
                self.processor.image_processor(images=[image], return_tensors="pt")
            except Exception:
                width, height = image.size
                ratio = max(width, height) / max(min(width, height), 1)
                raise ImageError(
                    f"the {self.adapter.title} processor cannot take this {width}x{height} image (aspect ratio "
                    f"{ratio:.0f}:1): {err}. Crop or pad it to a less elongated shape (closer to square) "
                    "that the processor accepts"
                ) from None
            raise

    def _question_positions(self, prompt: str, question: str, ids: torch.Tensor) -> np.ndarray:
        """Positions in the expanded ``ids`` of the question's tokens.

        The question is located by characters in the unexpanded prompt, tokenized with offsets,
        and its token ids are then found as the last matching run in the expanded sequence
        (image expansion only inserts tokens before the question).
        """
        start = prompt.rfind(question)
        if start < 0:
            raise InputError("the template or chat template dropped the question text; check the template")
        end = start + len(question)
        enc = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        q_ids = [t for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if a < end and b > start and b > a]
        if not q_ids:
            raise InputError(f"the question {question!r} produced no tokens")
        seq = ids.tolist()
        for s in range(len(seq) - len(q_ids), -1, -1):
            if seq[s : s + len(q_ids)] == q_ids:
                return np.arange(s, s + len(q_ids))
        raise RuntimeError(
            "could not find the question's tokens in the processed prompt; the tokenizer merges the "
            "question with its template. Pass a template with a space or newline around {question}."
        )

    def __repr__(self) -> str:
        return (
            f"VLM(name={self.name!r}, family={self.family!r}, layers={self.n_layers}, heads={self.n_heads}, "
            f"hidden={self.hidden_size}, device={self.device}, dtype={self.dtype})"
        )


# A statement of a head's forward that scales the unembedding's output by an attribute of the model or its config:
# ``logits = logits / self.config.text_config.logits_scaling``, ``logits = self.lm_head(h) * self.config.logits_scaling``
_HEAD_SCALE = re.compile(r"^\s*logits = (?:logits|self\.lm_head\(.*\)) ([*/]) self\.([\w.]+)$", re.M)


@functools.cache
def head_scales(cls) -> tuple[tuple[str, str, bool], ...]:
    """The scales the forward of model class ``cls`` applies to its unembedding's logits, read from its code.

    Returns ``(operator, attribute path from the model, after the soft-cap)`` triples in order (``("/",
    "config.text_config.logits_scaling", False)`` for Granite-Docling); the soft-cap's own divide and multiply are
    not scales. Empty for a head that applies none (most families).
    """
    code = forward_code(cls)
    cap = code.find("final_logit_softcapping")
    return tuple((m.group(1), m.group(2), -1 < cap < m.start()) for m in _HEAD_SCALE.finditer(code)
                 if not m.group(2).endswith("softcapping"))


def _native_side(image_processor) -> int | None:
    """Return the side in px of the family's native input image, from image processor settings.

    The first that is set of: ``crop_size`` (CLIP-style centre crop), ``size`` height/width (fixed
    resize), ``patch_size * merge_size`` (dynamic resolution: one merged token's cell; ``size`` then
    holds pixel counts), ``max_image_size`` longest edge (tiled: one tile), ``size`` shortest or
    longest edge. None if the processor has none of them.
    """

    def sizes(value) -> dict:
        return {"height": value, "width": value} if isinstance(value, int) else dict(value or {})

    crop, size = sizes(getattr(image_processor, "crop_size", None)), sizes(getattr(image_processor, "size", None))
    patch, merge = getattr(image_processor, "patch_size", None), getattr(image_processor, "merge_size", None)
    for candidate in (
        min(crop.get("height") or 0, crop.get("width") or 0),
        min(size.get("height") or 0, size.get("width") or 0),
        patch * merge if isinstance(patch, int) and isinstance(merge, int) else 0,
        sizes(getattr(image_processor, "max_image_size", None)).get("longest_edge"),
        size.get("shortest_edge") or size.get("longest_edge"),
    ):
        if candidate:
            return int(candidate)
    return None


def _resolve_device(device: str | torch.device) -> torch.device:
    """Return the torch device for ``device``; raise ``InputError`` unless it exists on this machine."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps else "cpu")
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    valid = ["auto", "cpu", *(["cuda"] if n_cuda else []), *(f"cuda:{i}" for i in range(n_cuda))]
    valid += ["mps"] if mps else []
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        resolved = None
    ok = resolved is not None and (
        resolved.type == "cpu"
        or (resolved.type == "cuda" and (resolved.index or 0) < n_cuda)
        or (resolved.type == "mps" and mps)
    )
    if not ok:
        raise InputError(f"device {str(device)!r} is not available here; use one of {', '.join(map(repr, valid))}")
    return resolved


def _resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    named = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in named:
        raise InputError(f"unknown dtype {dtype!r}; use 'auto' or one of {', '.join(named)}")
    return named[dtype]


def resolve_source(name_or_path: str | os.PathLike) -> str:
    """Return the folder or hub id that ``load_vlm`` loads for ``name_or_path``.

    Registered ``<scheme>:<name>`` sources (``analysis.models.sources``) that give a folder are
    resolved; a name that ``build``s its model has no folder and raises ``ModelNotFoundError``.
    """
    name = str(name_or_path)
    found = lookup(name)
    if found is not None:
        source, rest = found
        if source.folder is None:
            raise ModelNotFoundError(f"{name!r} is built in memory ({source.scheme}:), not loaded from a folder")
        try:
            return str(source.folder(rest))
        except FileNotFoundError as err:
            raise ModelNotFoundError(str(err)) from None
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{str(path)!r} exists but has no config.json; point at a folder saved with "
                "save_pretrained (it holds config.json, the weights and the processor files)"
            )
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(os.sep):
        raise ModelNotFoundError(f"no model folder at {str(path)!r}; check the path")
    return name


def _main_device(device_map: dict) -> torch.device:
    """Return the device accelerate executes on for ``device_map``: its first accelerator, else the CPU.

    Modules mapped to ``"cpu"`` or ``"disk"`` next to an accelerator are offloaded: their weights are
    streamed to that first accelerator for each forward (``accelerate.dispatch_model``).
    """
    for value in device_map.values():
        if value not in ("cpu", "disk"):
            return torch.device(value if not isinstance(value, int) else f"cuda:{value}")
    return torch.device("cpu")


_DEVICE_MAP_NAMES = ("auto", "balanced", "balanced_low_0", "sequential")


def _check_placement(device, device_map, max_memory, offload_folder) -> None:
    """Raise ``InputError`` for placement arguments that do not go together."""
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise InputError("max_memory and offload_folder place a model with device_map; pass device_map='auto' "
                             "(or a dict) too, or drop them")
        return
    if str(device) != "auto":
        raise InputError(f"pass either device={str(device)!r} (the whole model on one device) or device_map "
                         "(accelerate places the modules), not both")
    if isinstance(device_map, str) and device_map not in _DEVICE_MAP_NAMES:
        raise InputError(f"device_map {device_map!r} is not one of {', '.join(map(repr, _DEVICE_MAP_NAMES))}; "
                         "or pass a dict {module name: device}, e.g. {'model.language_model.layers.3': 'disk', ...}")
    if not isinstance(device_map, (str, dict)):
        raise InputError(f"device_map must be a string or a dict, not {type(device_map).__name__}")
    if isinstance(device_map, dict) and "disk" in device_map.values() and offload_folder is None:
        raise InputError("the device_map puts modules on 'disk': pass offload_folder=DIR for their weights")


def _dispatch(model: nn.Module, device_map, max_memory, offload_folder, dtype: torch.dtype) -> nn.Module:
    """Place an in-memory model (``build`` sources) with accelerate, as ``from_pretrained`` does for checkpoints."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if isinstance(device_map, str):
        no_split = list(getattr(model, "_no_split_modules", None) or [])
        if device_map != "sequential":
            max_memory = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split,
                                             dtype=dtype, low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split,
                                           dtype=dtype)
        if "disk" in device_map.values() and offload_folder is None:
            raise InputError("max_memory leaves no room for some modules, which go to 'disk': pass "
                             "offload_folder=DIR for their weights (or allow more memory)")
    model = dispatch_model(model, device_map=device_map, offload_dir=offload_folder)
    model.hf_device_map = dict(device_map)
    return model


def load_vlm(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    *,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> VLM:
    """Load a vision-language model and its processor for probing.

    Args:
        name_or_path: a local checkpoint folder, a Hugging Face hub id (e.g.
            ``"llava-hf/llava-1.5-7b-hf"``, needs the hub or the local HF cache), or
            ``"zoo:<name>"`` for the project's own toy models (e.g. ``"zoo:shapes-llava"``), or
            ``"tiny:<family>"`` (or ``"tiny:<family>@<seed>"``) for a tiny random-weight model
            (``analysis.testing.tiny_vlm``), or any other registered ``<scheme>:<name>``
            (``analysis.models.sources.register_source``).
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a device that exists here (``"cpu"``,
            ``"cuda"``, ``"cuda:1"``, ``"mps"``); anything else raises ``InputError``.
        dtype: ``"auto"`` (bf16/fp16 on CUDA, fp32 otherwise), a name or a ``torch.dtype``.
        device_map: shard the model with accelerate instead of moving it to ``device``:
            ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"`` or a dict
            ``{module name: device}`` with devices ``0``, ``"cuda:1"``, ``"cpu"`` or ``"disk"``
            (e.g. ``{"model.language_model.layers.31": "disk", ...}``; see ``model.hf_device_map``).
            Modules on ``"cpu"`` or ``"disk"`` next to a GPU are offloaded: their weights are
            streamed to the first GPU for each forward. Every probe works on a sharded model.
        max_memory: with ``device_map``: the most memory per device, e.g. ``{0: "20GiB", "cpu": "60GiB"}``.
        offload_folder: with ``device_map``: the folder for weights offloaded to ``"disk"``.

    Returns:
        A ``VLM`` in eval mode.

    Raises:
        InputError: an unknown device, or placement arguments that do not go together
            (``device`` and ``device_map``, ``"disk"`` without ``offload_folder``, ...).
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    _check_placement(device, device_map, max_memory, offload_folder)
    torch_device = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, torch_device)
    offload_folder = None if offload_folder is None else str(Path(offload_folder).expanduser())
    found = lookup(str(name_or_path))
    if found is not None and found[0].build is not None:
        vlm = found[0].build(found[1])
        vlm.name = str(name_or_path)
        if device_map is None:
            vlm.model.to(device=torch_device, dtype=torch_dtype)
        else:
            vlm.model.to(dtype=torch_dtype)
            _dispatch(vlm.model, device_map, max_memory, offload_folder, torch_dtype)
        return vlm
    source = resolve_source(name_or_path)
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise ModelNotFoundError(
            f"cannot load {source!r}: it is not a local folder and "
            + ("the hub is switched off here (HF_HUB_OFFLINE=1)" if offline else f"the hub did not provide it ({err})")
            + ". On a machine with network access run `huggingface-cli download "
            f"{source} --local-dir DIR`, copy DIR here and call load_vlm('DIR')."
        ) from None
    adapter_cls = adapter_for(config.model_type)
    if device_map is None:
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype).to(torch_device)
    else:
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                source, dtype=torch_dtype, device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
        except ValueError as err:  # transformers / accelerate: a map that misses modules, no offload folder, ...
            raise InputError(f"cannot place {source!r} with device_map={device_map!r}: {err}") from None
    processor = AutoProcessor.from_pretrained(source)
    return VLM(model=model.eval(), processor=processor, adapter=adapter_cls(model, processor), name=str(name_or_path))
