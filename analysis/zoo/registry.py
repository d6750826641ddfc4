"""Where the zoo's checkpoints live: ``models/<name>/`` at the repository root."""

from __future__ import annotations

import json
import re
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
BUILD_COMMAND = "python -m analysis.zoo.train --all"


def list_checkpoints(root: Path | None = None, kind: str | None = None) -> list[str]:
    """Return the names of the checkpoints under ``root`` (default: the repo's ``models/``).

    ``kind`` keeps only "vlm" (LLaVA models), "lm" (text-only decoder) or "vision" (vision tower).
    """
    root = Path(root or MODELS_DIR)
    configs = sorted(root.glob("*/config.json")) if root.is_dir() else []
    return [c.parent.name for c in configs
            if kind is None or json.loads(c.read_text()).get("zoo", {}).get("kind", "vlm") == kind]


def trajectory(root: Path | None = None, run: str = "shapes-llava") -> list[str]:
    """Return one training run's stage-1 -> stage-2 checkpoints in training order, as ``zoo:`` names.

    The ``<run>-step<N>`` snapshots by global step, then ``<run>-frozen`` (end of stage 1) where it
    fits between them, and ``<run>`` (end of stage 2) last. ``run``: ``"shapes-llava"`` (the zoo's
    run) or ``"shapes-llava-run2"`` (a second run of the same recipe, see ``analysis.zoo.train``).
    """
    names = list_checkpoints(root, kind="vlm")
    steps = {n: int(n.rsplit("step", 1)[1]) for n in names if re.fullmatch(rf"{re.escape(run)}-step\d+", n)}
    if f"{run}-frozen" in names:
        stage1 = json.loads((Path(root or MODELS_DIR) / f"{run}-frozen" / "config.json").read_text())
        steps[f"{run}-frozen"] = stage1["zoo"]["steps"]["stage1"] + 0.5
    if run in names:
        steps[run] = float("inf")
    return [f"zoo:{n}" for n in sorted(steps, key=steps.get)]


def checkpoint_path(name: str, root: Path | None = None) -> Path:
    """Return the folder of checkpoint ``name`` (a leading "zoo:" is allowed), e.g. "shapes-llava".

    Raises FileNotFoundError listing the available checkpoints and how to build them.
    """
    root = Path(root or MODELS_DIR)
    name = name.removeprefix("zoo:")
    path = root / name
    if not (path / "config.json").is_file():
        available = ", ".join(list_checkpoints(root)) or "none"
        raise FileNotFoundError(
            f"no zoo checkpoint {name!r} in {root}. Available: {available}. "
            f"Build the zoo with `{BUILD_COMMAND}` (about 30 min on 2 CPU cores).")
    return path
