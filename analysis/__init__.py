"""vlm-probes: look inside vision-language models.

Public API: ``analysis.load_vlm``, ``analysis.probes``, ``analysis.plots``, ``analysis.zoo``,
``analysis.testing``.

``import analysis`` is light: the model layer (torch, transformers) loads on first use of one of
its names here (``load_vlm``, ``VLM``, ...), so the notebook runner and the command line
(``python -m analysis``) start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.models.sources import register_source

if TYPE_CHECKING:
    from analysis.models import SUPPORTED_FAMILIES, VLM, PreparedInputs, load_vlm


def _zoo_folder(name: str) -> str:
    from analysis.zoo.registry import checkpoint_path

    return str(checkpoint_path(name))


def _tiny_model(name: str) -> VLM:
    from analysis.testing import tiny_source

    return tiny_source(name)


# The package's own sources; the VLM layer resolves them without importing the zoo or testing.
register_source("zoo", folder=_zoo_folder)
register_source("tiny", build=_tiny_model)

__version__ = "0.1.0"
__all__ = ["SUPPORTED_FAMILIES", "VLM", "PreparedInputs", "load_vlm", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        from analysis import models

        return getattr(models, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
