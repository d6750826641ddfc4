"""Where the zoo's checkpoints live: ``models/<name>/`` at the repository root."""

from __future__ import annotations

import json
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
