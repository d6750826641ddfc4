"""Named model sources: ``<scheme>:<name>`` strings that ``load_vlm`` resolves through a registry.

The VLM layer knows nothing about who provides a scheme; the package registers its own two at
import time (``analysis/__init__.py``): ``zoo:`` (the toy zoo's checkpoint folders) and ``tiny:``
(tiny random-weight models built from configs). Users can register more, e.g. a lab's model
store::

    register_source("lab", folder=lambda name: f"/data/models/{name}")

A source gives either a ``folder`` (a checkpoint folder or hub id, loaded like any other) or a
``build`` function that returns a ready ``VLM`` (its ``device`` and ``dtype`` are then applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from analysis.errors import ModelNotFoundError


@dataclass(frozen=True)
class Source:
    """One registered scheme: ``folder(name) -> path or hub id`` or ``build(name) -> VLM``."""

    scheme: str
    folder: Callable[[str], str] | None = None
    build: Callable[[str], object] | None = None

    def __post_init__(self):
        if (self.folder is None) == (self.build is None):
            raise ValueError(f"source {self.scheme!r}: give exactly one of folder= and build=")


_SOURCES: dict[str, Source] = {}


def register_source(scheme: str, *, folder: Callable[[str], str] | None = None,
                    build: Callable[[str], object] | None = None) -> None:
    """Make ``"<scheme>:<name>"`` loadable; a later registration of the same scheme replaces it."""
    if not scheme.isidentifier():
        raise ValueError(f"a source scheme is a plain word like 'zoo'; got {scheme!r}")
    _SOURCES[scheme] = Source(scheme, folder, build)


def registered_sources() -> tuple[str, ...]:
    """Return the registered schemes, in registration order."""
    return tuple(_SOURCES)


def lookup(name: str) -> tuple[Source, str] | None:
    """Return ``(source, rest)`` for ``"<scheme>:<rest>"`` with a registered scheme, else None.

    Raises ``ModelNotFoundError`` when ``rest`` is empty.
    """
    scheme, colon, rest = name.partition(":")
    if not colon or scheme not in _SOURCES:
        return None
    if not rest:
        raise ModelNotFoundError(f"{name!r} names no model; write {scheme}:<name>")
    return _SOURCES[scheme], rest
