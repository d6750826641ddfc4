"""The generic token-level path: image-text-to-text models without a family adapter.

A model qualifies when (``structure_problems`` returns nothing):

* its config names an image placeholder token (``image_token_id`` / ``image_token_index``, or the
  processor's ``image_token``), so the image positions are known;
* ``get_decoder()`` is a stack with ``layers`` and a final ``norm``, and ``get_output_embeddings()``
  is the unembedding (logit lens, sites);
* every decoder layer mixes positions only by a self-attention module with a ``layer_idx`` whose
  module dispatches through transformers' ``AttentionInterface`` (no linear-attention, convolution (any
  ``Conv1d`` over the sequence), state-space or cross-attention mixers the backend cannot see or mask) and
  does not change its mask by the implementation's name (the sparse-attention indexers of DeepSeek-V3.2-style
  decoders do).

Then every probe that needs no patch geometry works: knockout with image / question / last groups,
logit lens, capture, implicit alignment, shift, steering, attributions over tokens. The image tokens'
layout is unknown: they form one tile (``TILE_NAME``) of ``1 x n`` cells in sequence order, with NaN
boxes, so maps can be drawn token by token but not over the image (the attention figures say so), and
probes that need boxes (localisation, related positions) have nothing to work with.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap

import numpy as np
import torch

from analysis.errors import UnsupportedModelError
from analysis.models.adapters.base import Adapter, Layout

__all__ = ["TILE_NAME", "TokenLevelAdapter", "decoder_stack", "forward_code", "structure_problems"]

TILE_NAME = "image tokens in sequence order (patch geometry unknown)"
# Per-position inputs that processors emit besides input_ids: (pad value, appended-token value).
_TOKEN_INPUTS = {"attention_mask": (0, 1), "token_type_ids": (0, 0), "mm_token_type_ids": (0, 0),
                 "moe_mm_token_type_ids": (0, 0), "image_token_mask": (0, 0)}  # ERNIE 4.5-VL routes its experts by it
# Children of a decoder layer that mix positions outside self-attention.
_OTHER_MIXERS = ("linear_attn", "conv", "short_conv", "mamba", "mixer", "ssm", "cross_attn", "cross_attention",
                 "recurrent", "temporal_block")
_ATTENTION = ("self_attn", "attention", "attn", "self_attention")


def _attention_of(layer):
    return next((getattr(layer, name) for name in _ATTENTION if isinstance(getattr(layer, name, None), torch.nn.Module)),
                None)


def decoder_stack(model):
    """The decoder stack (embeddings, ``layers``, ``norm``) of ``model``: ``get_decoder()``, unwrapped once where that is
    a causal-LM wrapper around the stack (Llama 4's ``get_decoder()`` is its ``Llama4ForCausalLM``, whose ``model`` is
    the stack); None without ``get_decoder()``."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None and not hasattr(decoder, "layers"):
        inner = (getattr(decoder, "base_model", None), getattr(decoder, "model", None))
        decoder = next((m for m in inner if isinstance(getattr(m, "layers", None), torch.nn.ModuleList)), decoder)
    return decoder


def image_token_id(config, processor=None) -> int | None:
    """The image placeholder id the config (or the processor) names, or None."""
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    token = getattr(processor, "image_token", None)
    if token is not None:
        ids = processor.tokenizer.convert_tokens_to_ids(token)
        return int(ids) if ids is not None else None
    return None


@functools.cache
def _forward_source(cls) -> str:
    """The source of the class's forward ("" where it cannot be read); read once per class."""
    try:
        return inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return ""


@functools.cache
def forward_code(cls) -> str:
    """The code of the class's forward without its docstring and comments, one statement per line, spacing normalised
    (``ast.unparse``), for the checks that read what a forward does ("" where the source cannot be read)."""
    source = _forward_source(cls)
    if not source:
        return ""
    tree = ast.parse(textwrap.dedent(source))
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        del body[0]
    return ast.unparse(tree)


def _dispatches(cls) -> bool:
    """Whether the attention class's forward dispatches through ``AttentionInterface`` (read from its source)."""
    source = _forward_source(cls)
    return "ALL_ATTENTION_FUNCTIONS" in source or "attention_interface" in source


# An attention forward that branches on the implementation's name, as the sparse-attention indexers (DeepSeek's DSA,
# block indexers) do: their top-k selection becomes a mask only under "eager" / "sdpa"; under any other name (a
# registered function such as the probes' backend) it is handed over as indices for a FlashMLA kernel instead.
# (The usual dispatch, ``!= "eager"``, is not a branch on what is attended to.)
_BY_NAME = re.compile(r"_attn_implementation\s+in\s*[(\[{][^)\]}]*[\"'](eager|sdpa)[\"']"
                      r"|_attn_implementation\s*==\s*[\"'](eager|sdpa)[\"']")


def _masks_by_name(cls) -> bool:
    """Whether the attention class's forward changes its mask by the attention implementation's name."""
    return bool(_BY_NAME.search(_forward_source(cls)))


def structure_problems(model, processor=None) -> list[str]:
    """Return why ``model`` cannot take the generic token-level path (empty if it can).

    Works on a model built on the ``meta`` device (no weights): only its module tree and config are read.
    """
    problems = []
    if image_token_id(model.config, processor) is None:
        problems.append("its config names no image placeholder token (image_token_id / image_token_index)")
    decoder = decoder_stack(model)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not isinstance(getattr(decoder, "norm", None), torch.nn.Module):
        problems.append("get_decoder() is not a decoder stack with layers and a final norm")
        layers = []
    if model.get_output_embeddings() is None:
        problems.append("get_output_embeddings() gives no unembedding")
    mixers = sorted({name for layer in layers for name, _ in layer.named_children() if name in _OTHER_MIXERS})
    # Convolutions over the sequence under any other name (Inkling's short convolutions after each block and on the
    # attention's keys and values) mix positions the backend's mask never sees.
    convs = sorted({name.split(".")[0] for layer in layers for name, m in layer.named_modules()
                    if isinstance(m, torch.nn.Conv1d) and name.split(".")[0] not in _OTHER_MIXERS})
    if mixers:
        problems.append(f"decoder layers mix positions outside self-attention ({', '.join(mixers)}): knockout cannot "
                        "block image -> last there")
    if convs:
        problems.append(f"decoder layers mix positions by short convolutions over the sequence (Conv1d in "
                        f"{', '.join(convs)}), outside the attention weights: knockout cannot block image -> last there")
    attentions = [_attention_of(layer) for layer in layers]
    if any(a is None for a in attentions):
        problems.append("some decoder layers have no self-attention module")
    elif attentions and not all(hasattr(a, "layer_idx") for a in attentions):
        problems.append("decoder attention modules have no layer_idx")
    elif attentions:
        bypass = sorted({type(a).__name__ for a in attentions if not _dispatches(type(a))})
        by_name = sorted({type(a).__name__ for a in attentions if _masks_by_name(type(a))})
        if bypass:
            problems.append(f"decoder attention ({', '.join(bypass)}) bypasses transformers' AttentionInterface")
        elif by_name:
            problems.append(f"decoder attention ({', '.join(by_name)}) changes its mask by the attention implementation's "
                            "name (e.g. a sparse-attention indexer's top-k is a mask only under eager / sdpa): under a "
                            "registered attention function (the probes' backend) it attends differently, so idle != stock")
        elif not getattr(decoder, "_can_set_attn_implementation", model._can_set_attn_implementation)():
            problems.append(f"the decoder stack's model class ({type(decoder).__name__}) has an attention module that "
                            "bypasses AttentionInterface, so the probes' backend refuses it")
    return problems


class TokenLevelAdapter(Adapter):
    """The generic adapter: image tokens in sequence order, no patch geometry (see the module docstring).

    ``family`` is the model's own ``model_type``; ``title`` says it is token-level.
    """

    family = "token-level"
    model_types = ()
    title = "token-level"
    geometry = False
    token_inputs = _TOKEN_INPUTS

    def __init__(self, model, processor):
        super().__init__(model, processor)
        model_type = model.config.model_type
        problems = structure_problems(model, processor)
        if problems:
            raise UnsupportedModelError(
                f"model_type {model_type!r} has no family adapter and cannot take the generic token-level path: "
                + "; ".join(problems)
            )
        self.family = model_type
        self.title = f"{model_type} (token-level)"

    def _kind(self, key, value):
        """Input ids and the known per-position inputs are tokens; every other tensor carries the image."""
        if key == "input_ids":
            return "ids"
        if key in self.token_inputs:
            return "token"
        return "image" if torch.is_tensor(value) else "other"

    def build_prompt(self, question, template=None):
        """The chat template's prompt; without one, the image placeholder, a newline and the question."""
        if template is None and not getattr(self.processor, "chat_template", None):
            placeholder = getattr(self.processor, "image_token", None) or self.processor.tokenizer.convert_ids_to_tokens(
                self.image_token_id)
            return f"{placeholder}\n{question}"
        return super().build_prompt(question, template)

    def process(self, prompt, image):
        """The processor's inputs; with the multimodal token types where the processor names them as a model input
        (Cosmos3-Edge's processor lists ``mm_token_type_ids`` but returns them only when asked, and its M-RoPE needs
        them)."""
        if "mm_token_type_ids" not in getattr(self.processor, "model_input_names", ()):
            return super().process(prompt, image)
        inputs = self.processor(text=[prompt], images=[image], return_tensors="pt", return_mm_token_type_ids=True)
        inputs.pop("labels", None)
        return inputs

    def layout(self, inputs, image_size):
        """One tile of ``1 x n`` cells: the image tokens in sequence order, boxes unknown (NaN)."""
        n = int((inputs["input_ids"][0] == self.image_token_id).sum())
        out = Layout()
        out.add_cells(0, TILE_NAME, (1, n), np.arange(n), n, np.full((n, 4), np.nan))
        return out
