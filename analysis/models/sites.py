"""Named activation sites of the language model, and the package's one hook mechanism.

Names follow TransformerLens. **Layer ``i`` is decoder layer ``i`` everywhere** (0-based;
negative layers count from the end; ``VLM.check_layer`` resolves them, the one place that does):

==============  ============================================================================
site            the hidden state, ``(batch, T, hidden)``
==============  ============================================================================
``embed``       the language model's input: token embeddings with the image features merged in
``resid_pre``   the residual stream entering decoder layer ``i`` (``resid_pre 0 == embed``)
``attn_out``    decoder layer ``i``'s attention block output (its write to the residual stream)
``mlp_out``     decoder layer ``i``'s MLP block output
``resid_post``  the residual stream after decoder layer ``i``, never final-normed
                (``resid_post i == resid_pre i+1``)
``final``       the last layer's output after the final norm: what the unembedding reads
==============  ============================================================================

For every supported family ``resid_pre + attn_out + mlp_out == resid_post``: ``attn_out`` / ``mlp_out``
are each block's write to the residual stream, read after the norm that follows the block where
there is one (sandwich or post-norm layers: Gemma 3, GLM-4V, EXAONE 4, HyperCLOVA X) and times the
multiplier the layer applies to it before the residual add (Granite's and HyperCLOVA X's
``residual_multiplier``). Where the stream is not a sum of the blocks' writes (a learned gate that
scales the residual itself, as Muse Spark's; a scale of the whole stream, as Gemma 4's
``layer_scalar``; a third write, as Gemma 4's per-layer inputs), no module outputs a block's write:
``attn_out`` / ``mlp_out`` raise ``UnsupportedModelError`` there (read from the decoder layer's
forward, ``_stream``), and ``resid_pre`` / ``resid_post`` stay exact. ``resid_post i == resid_pre
i+1`` except at Qwen3-VL's image positions in its first layers, where DeepStack adds vision
features between layers. Unlike ``output_hidden_states`` (whose last entry transformers 5 returns
after the final norm), ``resid_post`` of the last layer is the raw residual stream.

Two context managers use the sites, and both always remove their hooks:

* ``reading(vlm, sites)`` yields ``{Site: tensor}`` filled by every forward inside the block
  (or calls ``on_value(site, tensor)`` instead, to reduce a state as soon as it exists);
* ``editing(vlm, {site: fn})`` replaces each site's state by ``fn(state)`` (``add``, ``ablate``
  and ``replace`` build the usual edits: steering vectors, interventions). Edits run before
  reads of the same site, whichever block was entered first: a read sees the edited state.

Everything in the package that hooks a module goes through ``hooked`` (the one primitive).
``skipping(vlm, layers)`` is the one way to leave decoder layers out of a forward (they pass
their input through), for forwards that resume from a kept ``resid_pre`` state;
``last_position_only(vlm)`` computes the last layer's MLP at the last position only, for forwards
that read only the last position's output (next-token logits).
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from analysis.errors import InputError, UnsupportedModelError
from analysis.models.adapters.generic import forward_code

KINDS: tuple[str, ...] = ("embed", "resid_pre", "attn_out", "mlp_out", "resid_post", "final")
LAYER_KINDS: tuple[str, ...] = ("resid_pre", "attn_out", "mlp_out", "resid_post")
_BLOCKS = {"attn_out": ("self_attn", "attention", "attn", "self_attention"),
           "mlp_out": ("mlp", "feed_forward", "ffn")}

# Norms applied to a block's output before the residual add, as (after attention, after MLP): present
# together only in sandwich- or post-norm layers (GLM-4V; Gemma 2/3/4, EXAONE 4; HyperCLOVA X, where
# they are nn.Identity without use_post_norm). Llama's "post_attention_layernorm" alone is its pre-MLP
# norm: only the pair marks a post-norm layer.
_SANDWICH = (("post_self_attn_layernorm", "post_mlp_layernorm"),
             ("post_attention_layernorm", "post_feedforward_layernorm"),
             ("post_norm1", "post_norm2"))
_SANDWICH_INDEX = {"attn_out": 0, "mlp_out": 1}
_BLOCK_NAMES = {"attn_out": "attention", "mlp_out": "MLP"}

# What a decoder layer's forward does to the residual stream, read from its code (``forward_code``: transformers
# writes every layer as ``residual = hidden_states ... hidden_states = residual + hidden_states``).
_ADD = re.compile(r"^.*(?:\bresidual \+|\+ residual\b).*$", re.M)  # a statement adding a write to the residual
_SCALED = re.compile(r"\bresidual \+ \w+ \* self\.(\w+)$|= \w+ \* self\.(\w+) \+ residual$")  # write * self.<m>
_GATE = re.compile(r"self\.(\w+)\(residual\b")  # the residual passed to a module (a gate mixing it with the write)
_STREAM_SCALE = re.compile(r"(?:\*=?|/=?) self\.(\w+)")  # after the last add: the whole stream scaled


@functools.cache
def _stream(cls) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    """What decoder layer class ``cls`` does to the residual stream, read from its forward.

    Returns ``(problems, multipliers)``: why the stream is not ``resid_pre`` plus one write per block (empty when
    it is), and for each residual add in order the layer attribute the write is multiplied by (None: unscaled).
    """
    code = forward_code(cls)
    adds = list(_ADD.finditer(code))
    problems = []
    gates = sorted(set(_GATE.findall(code)))
    if gates:
        problems.append(f"gate the residual stream itself ({', '.join(f'{g}(residual, ...)' for g in gates)}: a "
                        "learned mix of the residual and the block's output)")
    if len(adds) > 2:
        problems.append(f"add {len(adds)} writes to the residual stream, not only attention's and the MLP's (e.g. a "
                        "per-layer input)")
    scales = sorted(set(_STREAM_SCALE.findall(code[adds[-1].end():]))) if adds else []
    if scales:
        problems.append(f"scale the whole residual stream by {', '.join(scales)} after the blocks' writes")
    multipliers = tuple(next((g for g in _SCALED.search(m.group(0)).groups() if g), None)
                        if _SCALED.search(m.group(0)) else None for m in adds)
    return tuple(problems), multipliers

Edit = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Site:
    """One activation site: a ``kind`` from ``KINDS`` and, for per-layer kinds, a layer >= 0.

    Build sites with ``site(spec, vlm)``, which resolves negative layers against the model.
    """

    kind: str
    layer: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"unknown site {self.kind!r}; use one of {', '.join(KINDS)}")
        if (self.kind in LAYER_KINDS) != (self.layer is not None):
            raise InputError(f"site {self.kind!r} " + ("needs a layer, e.g. 'resid_post.3'" if self.kind in LAYER_KINDS
                                                       else "takes no layer"))
        if self.layer is not None and self.layer < 0:
            raise InputError(f"Site layers are resolved (>= 0); use site({self.kind!r}, layer) for negative ones")

    @property
    def name(self) -> str:
        """``"embed"``, ``"final"`` or ``"<kind>.<layer>"`` (e.g. ``"resid_post.3"``)."""
        return self.kind if self.layer is None else f"{self.kind}.{self.layer}"

    def __str__(self) -> str:
        return self.name


def site(spec, vlm, layer: int | None = None) -> Site:
    """Return the ``Site`` named by ``spec``, with its layer resolved against ``vlm``.

    Args:
        spec: a ``Site``, a name (``"embed"``, ``"final"``, ``"resid_post.3"``, ``"resid_post.-1"``),
            a ``(kind, layer)`` pair, or a per-layer kind with ``layer`` given separately.
        vlm: the model (its number of layers resolves negative layers).
        layer: the layer, when ``spec`` is a bare kind.
    """
    if isinstance(spec, Site):
        kind, layer = spec.kind, spec.layer
    elif isinstance(spec, tuple) and len(spec) == 2:
        kind, layer = spec
    elif isinstance(spec, str):
        kind, dot, rest = spec.partition(".")
        if dot:
            try:
                layer = int(rest)
            except ValueError:
                raise InputError(f"cannot read a layer from site {spec!r}; write e.g. 'resid_post.3'") from None
    else:
        raise InputError(f"a site is a name like 'resid_post.3', a (kind, layer) pair or a Site; got {spec!r}")
    if kind in LAYER_KINDS and layer is not None:
        layer = vlm.check_layer(layer)
    return Site(kind, layer)


def sites(vlm, kinds: Iterable[str], layers: Iterable[int] | None = None) -> list[Site]:
    """Return every ``kind`` x ``layer`` site (all layers by default; layer-free kinds once)."""
    layers = range(vlm.n_layers) if layers is None else list(layers)
    out = []
    for kind in kinds:
        out += [site(kind, vlm)] if kind not in LAYER_KINDS else [site(kind, vlm, layer) for layer in layers]
    return list(dict.fromkeys(out))


def block(vlm, layer: int, kind: str) -> nn.Module:
    """Return the module whose output is decoder layer ``layer``'s write to the residual stream
    from its attention (``"attn_out"``) or MLP (``"mlp_out"``) block, times ``write_scale``.

    Found among the layer's children by name (``self_attn``, ``attention``, ... / ``mlp``,
    ``feed_forward``, ...), never by a version-specific path. Layers with sandwich or post norms (Gemma 2/3,
    GLM-4V, EXAONE 4, HyperCLOVA X: a norm after each block, before the residual add) write that norm's output,
    so the site is read there (``_SANDWICH``).

    Raises:
        UnsupportedModelError: the layer's residual stream is not a sum of the blocks' writes (``_stream``:
            a gate on the residual, a scale of the whole stream, a third write), so no module outputs the
            block's write; ``resid_pre`` / ``resid_post`` are exact there.
        InputError: the layer has no child of a known name for the block.
    """
    module = vlm.layers[vlm.check_layer(layer)]
    problems, _ = _stream(type(module))
    if problems:
        raise UnsupportedModelError(
            f"site {kind!r} is not available for {vlm.family}: its decoder layers ({type(module).__name__}) "
            f"{' and '.join(problems)}, so the residual stream is not a sum of the blocks' writes and no module outputs "
            f"what the {_BLOCK_NAMES[kind]} block adds to it. Use 'resid_pre' / 'resid_post', which are exact for "
            f"{vlm.family} (resid_post.i - resid_pre.i is layer i's whole update)")
    children = dict(module.named_children())
    for names in _SANDWICH:
        if all(name in children for name in names):
            return children[names[_SANDWICH_INDEX[kind]]]
    found = _child(module, kind)
    if found is not None:
        return found
    raise InputError(f"{type(module).__name__} has no child named {' / '.join(_BLOCKS[kind])}; site {kind!r} "
                     f"is not available for {vlm.family}")


def _child(module: nn.Module, kind: str) -> nn.Module | None:
    """Return decoder layer ``module``'s attention (``"attn_out"``) or MLP (``"mlp_out"``) child, found by name."""
    children = dict(module.named_children())
    return next((children[name] for name in _BLOCKS[kind] if name in children), None)


def write_scale(vlm, layer: int, kind: str):
    """The multiplier decoder layer ``layer`` applies to ``block(vlm, layer, kind)``'s output before adding it to the
    residual stream (Granite's / HyperCLOVA X's ``residual_multiplier``; a number or a tensor), or None (unscaled).

    Read from the layer's forward (``_stream``): the ``n``-th residual add of a layer with two is block ``n``'s.
    """
    module = vlm.layers[vlm.check_layer(layer)]
    _, multipliers = _stream(type(module))
    name = multipliers[_SANDWICH_INDEX[kind]] if len(multipliers) == 2 else None
    return None if name is None else getattr(module, name)


def _hook_point(vlm, s: Site) -> tuple[nn.Module, str, object]:
    """Return the module whose input (``"pre"``) or output (``"post"``) is site ``s``, and the scale that makes that
    output the site (``write_scale``; None: the output itself)."""
    if s.kind == "embed":
        return vlm.layers[0], "pre", None
    if s.kind == "resid_pre":
        return vlm.layers[s.layer], "pre", None
    if s.kind == "resid_post":
        return vlm.layers[s.layer], "post", None
    if s.kind == "final":
        return vlm.final_norm, "post", None
    return block(vlm, s.layer, s.kind), "post", write_scale(vlm, s.layer, s.kind)


@contextlib.contextmanager
def hooked(module: nn.Module, pre: Callable | None = None, post: Callable | None = None,
           first: bool = False) -> Iterator[None]:
    """The one hook primitive: run ``pre(args, kwargs)`` / ``post(args, kwargs, output)`` on ``module``.

    ``pre`` may return ``(args, kwargs)`` to replace the module's inputs, ``post`` a new output;
    returning None leaves them as they are. ``first`` runs the hooks before those already there
    (edits use it, so that a read of the same site sees the edited state). The hooks are removed
    on exit, even after an error.
    """
    handles = []
    try:
        if pre is not None:
            handles.append(module.register_forward_pre_hook(lambda m, a, k: pre(a, k), with_kwargs=True,
                                                            prepend=first))
        if post is not None:
            handles.append(module.register_forward_hook(lambda m, a, k, o: post(a, k, o), with_kwargs=True,
                                                        prepend=first))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _pass_through(*args, **kwargs):
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


@contextlib.contextmanager
def skipping(vlm, layers: Iterable[int]) -> Iterator[None]:
    """Leave decoder ``layers`` out of every forward inside the block: each returns its input
    hidden state unchanged (its attention and MLP do not run; its cache layer is not updated).

    For forwards that start at a later layer from a kept state (``editing`` with ``replace`` at
    that layer's ``resid_pre``): the layers before it would be dead work. Hooks on the skipped
    layers still run. A wrapper already installed as the layer's forward (accelerate's device
    hooks) is restored on exit, even after an error.
    """
    modules = [vlm.layers[vlm.check_layer(layer)] for layer in layers]
    saved = [module.__dict__.get("forward") for module in modules]
    try:
        for module in modules:
            module.forward = _pass_through
        yield
    finally:
        for module, forward in zip(modules, saved):
            if forward is None:
                del module.forward
            else:
                module.forward = forward


def _last_mlp(vlm) -> nn.Module | None:
    """Return the last decoder layer's MLP (its own module, before any post-norm), or None where the layer's
    residual stream is not a sum of the blocks' writes or it has no MLP child of a known name (``block``)."""
    layer = vlm.n_layers - 1
    try:
        block(vlm, layer, "mlp_out")
    except (UnsupportedModelError, InputError):
        return None
    return _child(vlm.layers[layer], "mlp_out")


def _last_row(args, kwargs):
    """Pre-hook of ``last_position_only``: give the MLP the last position of its one ``(B, T, H)`` input tensor,
    ``(B, 1, H)``; leave calls with another shape or another tensor argument (a flattened ``(B * T, H)`` MoE call,
    token types routing a MoE) as they are."""
    tensors = [v for v in (*args, *kwargs.values()) if torch.is_tensor(v)]
    if len(tensors) != 1 or tensors[0].dim() != 3:
        return None
    state = tensors[0]

    def last(value):
        return value[:, -1:] if value is state else value

    return tuple(map(last, args)), {key: last(value) for key, value in kwargs.items()}


@contextlib.contextmanager
def last_position_only(vlm) -> Iterator[None]:
    """Compute the last decoder layer's MLP at the last position only, in every forward inside the block.

    No later layer reads the last layer's output, so its MLP at every position but the last is dead work
    for a forward that reads only the last position's output (next-token logits, ``last_hidden_state[:, -1]``).
    The MLP gets ``(B, 1, H)``, the last row of its ``(B, T, H)`` input; the layer's residual add broadcasts its
    ``(B, 1, H)`` write over the ``(B, T, H)`` stream, so the last position's output is the full forward's (up to
    the rounding of a product over one row instead of ``T``); the cache and every earlier layer are untouched.

    Valid only where nothing reads the last layer's output at another position. Inside the block, every
    position but the last of the last layer's output is meaningless: of the sites ``resid_post`` of the last
    layer and ``final``, of ``last_hidden_state`` and of all-position logits; the last layer's ``mlp_out`` is
    the last position's alone, ``(B, 1, H)``. Every layer's input (``resid_pre``), every attention block and
    the key/value cache are exact. Where the family has no such MLP (``block`` raises: the stream is not a sum
    of the blocks' writes) or the MLP is not called on one ``(B, T, H)`` tensor (a flattened MoE call, another
    per-position input), the forward runs in full. The hook is removed on exit, even after an error.
    """
    module = _last_mlp(vlm)
    with hooked(module, pre=_last_row) if module is not None else contextlib.nullcontext():
        yield


@contextlib.contextmanager
def _at_sites(vlm, handlers: Mapping[Site, Callable[[torch.Tensor], torch.Tensor | None]],
              first: bool = False) -> Iterator[None]:
    """Call ``handlers[site](state)`` at each site in every forward; a returned tensor replaces the state."""
    with contextlib.ExitStack() as stack:
        for s, handler in handlers.items():
            module, where, scale = _hook_point(vlm, s)
            if where == "pre":
                def pre(args, kwargs, handler=handler):
                    by_keyword = "hidden_states" in kwargs
                    new = handler(kwargs["hidden_states"] if by_keyword else args[0])
                    if new is None:
                        return None
                    if by_keyword:
                        return args, {**kwargs, "hidden_states": new}
                    return (new, *args[1:]), kwargs

                stack.enter_context(hooked(module, pre=pre, first=first))
            else:
                def post(args, kwargs, output, handler=handler, scale=scale):
                    state = output[0] if isinstance(output, tuple) else output
                    new = handler(state if scale is None else state * scale)
                    if new is None:
                        return None
                    if scale is not None:  # the module outputs the write / scale
                        new = new / scale
                    return (new, *output[1:]) if isinstance(output, tuple) else new

                stack.enter_context(hooked(module, post=post, first=first))
        yield


@contextlib.contextmanager
def reading(vlm, specs: Iterable, on_value: Callable[[Site, torch.Tensor], None] | None = None
            ) -> Iterator[dict[Site, torch.Tensor]]:
    """Read activation sites during the forwards inside the block.

    Args:
        vlm: the model.
        specs: sites (anything ``site`` accepts).
        on_value: called as ``on_value(site, state)`` with each ``(batch, T, hidden)`` state as the
            forward produces it (in the model's dtype and device); when None, states are kept.

    Yields:
        ``{Site: (batch, T, hidden)}``, detached, each the state of the latest forward (empty when
        ``on_value`` is given).
    """
    chosen = [site(spec, vlm) for spec in specs]
    out: dict[Site, torch.Tensor] = {}

    def handler(s: Site):
        def take(state: torch.Tensor) -> None:
            if on_value is None:
                out[s] = state.detach()
            else:
                on_value(s, state)
        return take

    with _at_sites(vlm, {s: handler(s) for s in chosen}):
        yield out


@contextlib.contextmanager
def editing(vlm, edits: Mapping) -> Iterator[None]:
    """Replace the state at each site by ``edit(state)`` in every forward (and ``generate``) inside the block.

    Args:
        vlm: the model.
        edits: ``{site spec: edit}``; an edit maps ``(batch, T, hidden)`` to a tensor of the same
            shape (see ``add``, ``ablate``, ``replace``).
    """
    resolved = {site(spec, vlm): edit for spec, edit in edits.items()}
    with _at_sites(vlm, resolved, first=True):
        yield


def add(delta: torch.Tensor, positions: str = "all") -> Edit:
    """Return an edit adding ``delta`` (broadcast to ``(batch, T, hidden)``) at ``"all"`` positions or the ``"last"``."""
    if positions not in ("all", "last"):
        raise InputError(f"positions must be 'all' or 'last'; got {positions!r}")

    def edit(state: torch.Tensor) -> torch.Tensor:
        delta_ = delta.to(device=state.device, dtype=state.dtype)
        if positions == "all":
            return state + delta_
        return torch.cat([state[:, :-1], state[:, -1:] + delta_], dim=1)
    return edit


def ablate(positions: torch.Tensor | None = None) -> Edit:
    """Return an edit that zeroes the state at ``positions`` (every position when None)."""
    def edit(state: torch.Tensor) -> torch.Tensor:
        if positions is None:
            return torch.zeros_like(state)
        out = state.clone()
        out[:, positions.to(state.device)] = 0
        return out
    return edit


def replace(value: torch.Tensor, positions: torch.Tensor | None = None) -> Edit:
    """Return an edit that writes ``value`` at ``positions`` (the whole state when None)."""
    def edit(state: torch.Tensor) -> torch.Tensor:
        value_ = value.to(device=state.device, dtype=state.dtype)
        if positions is None:
            return value_.expand_as(state).clone()
        out = state.clone()
        out[:, positions.to(state.device)] = value_
        return out
    return edit


@contextlib.contextmanager
def language_model_inputs(vlm) -> Iterator[dict]:
    """Record the keyword arguments the VLM passes to its language model.

    Yields a dict that the next forward fills: ``inputs_embeds`` (the ``embed`` site),
    ``position_ids`` (``(batch, T)``, or M-RoPE's ``(3, batch, T)``; None when the language
    model derives them), the mask, PaliGemma's prefix mask, ...; ``"_args"`` holds positional
    arguments (empty for every supported family).
    """
    captured: dict = {}

    def pre(args, kwargs):
        captured.clear()
        captured.update(kwargs, _args=args)

    with hooked(vlm.language_model, pre=pre):
        yield captured
