"""Conformance: the checks every supported model passes, measured on one image and question.

The probes' fast paths are only trusted where they equal plain computations on the model at
hand. ``conformance(vlm, image, question)`` runs, on one input:

* **idle = stock**: the logits with the probes' attention backend installed but idle, against
  the model's own attention implementation;
* **recorded = eager**: the attention the backend records (last position x image tokens, every
  layer and head, fp32) against ``output_attentions`` of an eager copy;
* **knockout = reference**: image -> last blocked in each single layer and in all layers, by the
  fast engine, against one eager forward per configuration with a rewritten mask;

and reports the largest differences next to the knockout's smallest effect (what the comparison
can see), with the seconds and peak memory of each step. Tests assert on it; the full-width
benchmark tabulates it.

The vision tower's output does not depend on any of this (the checks concern the language model):
the stock and the idle forwards compute it, the later steps (recorded, eager, knockout, reference)
share one computation of it per input through the model's ``get_image_features`` (the eager forward
computes its own where the model passes ``output_attentions`` on to it, as LLaVA does). On a
full-width SmolVLM in bf16 on a CPU without bf16 instructions that is 3 vision forwards of 4.4 s
instead of 9.
"""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from analysis.errors import InputError
from analysis.models.answers import next_token_logits
from analysis.probes.attention import attention_maps
from analysis.probes.backend import BACKEND, Edges, install
from analysis.probes.flow import block_positions, knockout_probs
from analysis.probes.reference import eager_copy, reference_knockout

__all__ = ["Conformance", "conformance"]


@dataclass(frozen=True)
class Conformance:
    """Largest differences of the fast paths from plain computations on one input.

    Attributes:
        model: the model's name.
        dtype: its dtype (``"float32"``, ``"bfloat16"``, ...).
        n_tokens: the prompt's length; ``n_image``: its image tokens.
        idle: max |logit| difference, idle backend vs stock attention (fp32 logits).
        recorded: max |probability| difference, recorded vs eager attention on the slice.
        knockout: max |log p| difference of the answer token, fast engine vs reference.
        effect: smallest |log p(knockout) - log p(unmodified)| over the configurations.
        seconds: wall time of each step (``prepare``, ``stock``, ``idle``, ``recorded``,
            ``eager``, ``knockout``, ``reference``).
        peak_rss_gb: the process's peak resident memory after the checks (GiB; CPU runs).
    """

    model: str
    dtype: str
    n_tokens: int
    n_image: int
    idle: float
    recorded: float
    knockout: float
    effect: float
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_gb: float = float("nan")

    def __post_init__(self):
        values = (self.idle, self.recorded, self.knockout, self.effect)
        if not all(np.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"differences must be finite and non-negative; got {values}")


def _stock_attention(vlm) -> str:
    """The model's own attention implementation (what the backend wraps)."""
    name = vlm.text_config._attn_implementation
    return name.removeprefix(f"{BACKEND}_") if name.startswith(BACKEND) else name


def conformance(vlm, image, question: str) -> Conformance:
    """Return the ``Conformance`` of ``vlm`` on one ``image`` and ``question`` (see module docstring).

    Needs two copies of the model in memory at once (the eager reference is a deep copy).
    """
    seconds: dict[str, float] = {}

    def timed(name, fn):
        start = time.perf_counter()
        value = fn()
        seconds[name] = round(time.perf_counter() - start, 3)
        return value

    prepared = timed("prepare", lambda: vlm.prepare(image, question))
    if len(prepared.image_positions) == 0:
        raise InputError("the prompt has no image tokens: conformance needs an image")
    config = vlm.text_config
    installed = config._attn_implementation
    config._attn_implementation_internal = _stock_attention(vlm)
    try:
        stock = timed("stock", lambda: next_token_logits(vlm, prepared))
    finally:
        config._attn_implementation_internal = installed
    install(vlm)
    idle = timed("idle", lambda: next_token_logits(vlm, prepared))
    eager = eager_copy(vlm)
    with _image_features_once(vlm.model, eager):
        maps = timed("recorded", lambda: attention_maps(vlm, prepared, query=[-1]))
        assert list(maps.layers) == list(range(vlm.n_layers))
        image_positions = prepared.image_positions.numpy()
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the vision tower (sdpa) says it returns no attentions: we read the LLM's
        try:
            with torch.no_grad():
                out = timed("eager", lambda: eager(**prepared.inputs, output_attentions=True, logits_to_keep=1))
        finally:
            hf_logging.set_verbosity(verbosity)
        reference_maps = np.stack([a[0, :, -1:, image_positions].float().cpu().numpy() for a in out.attentions])
        token = int(idle.argmax())
        sources, targets = block_positions(prepared, "image->last")
        configs = [[]] + [[Edges.make(sources, targets, [layer])] for layer in range(vlm.n_layers)]
        configs.append([Edges.make(sources, targets, range(vlm.n_layers))])
        fast = timed("knockout", lambda: knockout_probs(vlm, prepared, configs, token)).double().log()
        slow = timed("reference", lambda: reference_knockout(vlm, prepared, configs, token, model=eager)).double().log()
    return Conformance(
        model=vlm.name,
        dtype=str(vlm.dtype).removeprefix("torch."),
        n_tokens=prepared.length,
        n_image=len(image_positions),
        idle=float((idle - stock).abs().max()),
        recorded=float(np.abs(maps.image_attention - reference_maps).max()),
        knockout=float((fast - slow).abs().max()),
        effect=float((slow[1:] - slow[0]).abs().min()),
        seconds=seconds,
        peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    )


@contextlib.contextmanager
def _image_features_once(*models: torch.nn.Module):
    """Inside the block, ``get_image_features`` of ``models`` (copies with the same weights, e.g. a model
    and its ``eager_copy``) computes once per input and returns that result to every later call with
    the same input (the same tensor objects, kept alive by the cache, equal other arguments but
    ``use_cache``, and the same grad mode): a forward that passes ``output_attentions`` computes its own.
    Models without the method (on themselves or their ``.model``) are left as they are.
    """
    cache: dict[tuple, tuple[list, object]] = {}
    patched = []
    for model in models:
        inner = getattr(model, "model", None)  # transformers' VLMs: the base model's forward calls it
        owner = inner if hasattr(inner, "get_image_features") else model
        original = getattr(owner, "get_image_features", None)
        if original is None:
            continue

        def once(*args, _original=original, **kwargs):
            names = sorted(k for k in kwargs if k != "use_cache")  # passed through by some forwards; the decoder's
            values = [*args, *(kwargs[k] for k in names)]
            key = (torch.is_grad_enabled(), tuple(names),
                   *(("tensor", id(v)) if torch.is_tensor(v) else repr(v) for v in values))
            if key not in cache:
                cache[key] = ([v for v in values if torch.is_tensor(v)], _original(*args, **kwargs))
            return cache[key][1]

        owner.get_image_features = once
        patched.append(owner)
    try:
        yield
    finally:
        for owner in patched:
            del owner.get_image_features  # the class's method again
