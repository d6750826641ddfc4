"""Work shared by several map methods on the same input: computed once inside ``sharing()``.

The sanity checks run many map methods on one (model, input) pair: attention rows at a few
layers, rollout, Integrated Gradients, Saliency, InputXGradient, occlusion, KernelSHAP. Each one
alone needs the unmodified forward (for the explained token's log-probability, or for the
language model's inputs), and some need the same thing again (the attention rows of every
layer; the gradient of the target's log-probability, which Saliency and InputXGradient both
transform). Inside ``with sharing():`` the first method that needs one of these stores it under
a key naming the model, the input and what was computed; later methods reuse it. Outside a
block nothing is kept, and every function computes what it needs itself: results are identical
either way (tested), only the number of forwards changes.

Keys name the model and the input by ``id()`` (``model_key``), and the block keeps both objects
alive until it ends, so an id cannot be reused by another object meanwhile. A block must not span
a change of the model's weights: code that changes them (the randomisation cascade) opens a
``fresh`` block per model state, which ignores any outer block.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Callable, Hashable, Iterator, TypeVar

T = TypeVar("T")

_STORE: ContextVar[dict | None] = ContextVar("analysis_probes_sharing", default=None)
_ALIVE = "__alive__"  # the objects the store's keys name by id(): {(id, id): (model, inputs)}


@contextlib.contextmanager
def sharing(fresh: bool = False) -> Iterator[dict]:
    """Keep what ``shared`` computes until the block ends; yields the store (``{key: value}``).

    Args:
        fresh: start an empty store even inside another block (restored on exit). Default False:
            a nested block shares the outer store.
    """
    store = _STORE.get()
    if store is not None and not fresh:
        yield store
        return
    token = _STORE.set({_ALIVE: {}})
    try:
        yield _STORE.get()
    finally:
        _STORE.reset(token)


def shared(key: Hashable, compute: Callable[[], T]) -> T:
    """Return ``compute()``, computed once per ``key`` inside a ``sharing()`` block (every call outside)."""
    store = _STORE.get()
    if store is None:
        return compute()
    if key not in store:
        store[key] = compute()
    return store[key]


def active() -> bool:
    """Whether a ``sharing()`` block is open."""
    return _STORE.get() is not None


def model_key(model: Any, inputs: Any) -> tuple[int, int]:
    """Return the part of a key that names one model object and one input object (kept alive by the block)."""
    store = _STORE.get()
    key = id(model), id(inputs)
    if store is not None:
        store[_ALIVE][key] = (model, inputs)
    return key
