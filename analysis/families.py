"""Which image-text-to-text model types of the installed transformers the probes support.

``python -m analysis families [--format markdown|json] [--no-checks]`` lists every model type
that transformers maps to ``AutoModelForImageTextToText`` with its status:

* ``full``: a family adapter (all probes, patch geometry); with checks, its tiny model's conformance
  (``analysis.conformance``: idle = stock, recorded = eager, knockout = plain reference, each to
  1e-5, and the knockout's smallest effect) is measured and shown;
* ``token-level``: no adapter, but the generic path (``analysis.models.adapters.generic``) takes it:
  every probe that needs no patch geometry. Its structure is checked on a model built from the
  default config on the ``meta`` device (no weights): an image placeholder token in the config, a
  decoder stack, attention through ``AttentionInterface`` with ``layer_idx`` and no other token
  mixers; where ``analysis.testing`` has a tiny model of it, the same conformance as ``full``;
* ``refused``: with the reason and the nearest supported family: listed in
  ``analysis.models.adapters.NOT_SUPPORTED`` (cross-attention to the image, Q-Former queries, VQ
  image tokens, encoder-decoders, linear-attention layers, a missing dependency, ...), or failing
  the generic path's structure checks (which name what fails).

The README's table of families is this command's Markdown output; a test keeps the two in sync.
"""

from __future__ import annotations

import argparse
import functools
import json
import warnings
from typing import Sequence

import numpy as np
from PIL import Image

from analysis.models.adapters import ADAPTERS, NOT_SUPPORTED, structure_problems

__all__ = ["STATUSES", "TOLERANCE", "family_table", "main", "markdown", "structure"]

TOLERANCE = 1e-5  # idle, recorded and knockout differences for a "pass" (fp32 tiny models)
STATUSES = ("full", "token-level", "refused")


def _model_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return sorted(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def _conformance(family: str):
    """``analysis.conformance`` of ``family``'s tiny model on a fixed random 200 x 150 image."""
    from analysis.conformance import conformance
    from analysis.testing import tiny_vlm

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8))
    return conformance(tiny_vlm(family), image, "what color is the circle ?")


def _checks(family: str) -> dict:
    """Conformance of ``family``'s tiny model: the pass flag and the numbers."""
    result = _conformance(family)
    passed = max(result.idle, result.recorded, result.knockout) <= TOLERANCE and result.effect >= 100 * TOLERANCE
    return {"checks": "pass" if passed else "FAIL", "idle": result.idle, "recorded": result.recorded,
            "knockout": result.knockout, "effect": result.effect}


@functools.cache
def structure(model_type: str) -> list[str]:
    """The generic path's structure problems (``structure_problems``) of ``model_type``'s default config, built on the
    ``meta`` device (no weights, no memory); a config or model that does not build gives that as the problem."""
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.initialization import no_init_weights
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = CONFIG_MAPPING[model_type]()
            with torch.device("meta"), no_init_weights():  # the tree only: no initialisation of meta weights
                model = AutoModelForImageTextToText.from_config(config)
    except Exception as err:  # noqa: BLE001 - any failure to build is the finding
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return [f"its default config does not build here ({type(err).__name__}: {message[:120]})"]
    finally:
        hf_logging.set_verbosity(verbosity)
    return structure_problems(model)


def _token_level_tiny() -> set[str]:
    """Model types without an adapter that ``analysis.testing`` builds a tiny model of."""
    from analysis.testing import SUPPORTED_TINY_FAMILIES

    return set(SUPPORTED_TINY_FAMILIES) - {t for a in ADAPTERS for t in a.model_types}


def family_table(checks: bool = True) -> list[dict]:
    """Return one record per model type of the installed transformers' image-text-to-text mapping:
    ``model_type``, ``status``, ``family`` (the adapter's, ``generic path``, or the nearest supported one for a
    refusal), ``reason``, and with ``checks`` the conformance numbers of full and token-level tiny models."""
    adapters = {t: a for a in ADAPTERS for t in a.model_types}
    titles = {a.family: a.title for a in ADAPTERS}
    tiny = _token_level_tiny()
    rows = []
    for model_type in _model_types():
        if model_type in adapters:
            row = {"model_type": model_type, "status": "full", "family": adapters[model_type].title, "reason": ""}
            if checks:
                row |= _checks(adapters[model_type].family)
        elif model_type in NOT_SUPPORTED:
            nearest, reason = NOT_SUPPORTED[model_type]
            row = {"model_type": model_type, "status": "refused", "family": f"nearest: {titles[nearest]}",
                   "reason": reason.removeprefix("refused: ")}
        elif problems := structure(model_type):
            row = {"model_type": model_type, "status": "refused", "family": "", "reason": "; ".join(problems)}
        else:
            row = {"model_type": model_type, "status": "token-level", "family": "generic path", "reason": "",
                   "tiny": model_type in tiny}
            if checks and model_type in tiny:
                row |= _checks(model_type)
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """Return ``rows`` as the README's Markdown table (a count line, then one line per model type)."""
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    n_tiny = sum(bool(r.get("tiny")) for r in rows)
    summary = ", ".join(f"{n} {s}" + (f" ({n_tiny} with a tiny model)" if s == "token-level" else "")
                        for s, n in counts.items())
    lines = [summary + f" of {len(rows)} model types.", "",
             "| model_type | status | family | reason / checks |", "|---|---|---|---|"]
    for r in rows:
        detail = r["reason"]
        if "checks" in r:  # the numbers are in the JSON; the table states what passed (stable across machines)
            detail = (f"tiny model {r['checks']}: idle = stock, recorded = eager, knockout = reference (each <= "
                      f"{TOLERANCE:g}), smallest knockout effect >= {100 * TOLERANCE:g}")
            if r["status"] == "token-level":
                detail += "; image tokens in sequence order, no patch geometry"
        elif r["status"] == "token-level":
            detail = ("structure checks pass on the default config (image placeholder token, decoder stack, "
                      "attention through AttentionInterface with layer_idx); "
                      + ("tiny model, checks not run" if r.get("tiny") else "no tiny model yet"))
        lines.append(f"| `{r['model_type']}` | {r['status']} | {r['family']} | {detail} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analysis families``: print the table; exit status 1 if a supported family fails."""
    parser = argparse.ArgumentParser(prog="python -m analysis families", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    parser.add_argument("--no-checks", action="store_true", help="skip the tiny models' conformance checks")
    args = parser.parse_args(argv)
    rows = family_table(checks=not args.no_checks)
    print(json.dumps(rows, indent=1) if args.format == "json" else markdown(rows))
    return int(any(r.get("checks") == "FAIL" for r in rows))
