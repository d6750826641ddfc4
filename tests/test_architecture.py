"""Imports point one way: models -> (capture, backend) -> probes -> plots -> widgets / notebooks.

Each rule lists the packages a part of ``analysis`` must not import (at any depth of the module,
including imports inside functions and under ``TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "analysis"
ABOVE_MODELS = ("analysis.zoo", "analysis.testing", "analysis.capture", "analysis.cache", "analysis.probes",
                "analysis.plots", "analysis.widgets", "analysis.runner", "analysis.notebook_utils")
RULES = {
    "errors.py": ABOVE_MODELS + ("analysis.models", "analysis.data"),
    "data": ABOVE_MODELS + ("analysis.models",),
    "models": ABOVE_MODELS,
    "capture.py": ("analysis.probes", "analysis.plots", "analysis.widgets", "analysis.zoo", "analysis.testing"),
    "cache.py": ("analysis.probes", "analysis.plots", "analysis.widgets", "analysis.zoo", "analysis.testing"),
    "probes": ("analysis.plots", "analysis.widgets", "analysis.runner", "analysis.notebook_utils", "analysis.zoo",
               "analysis.testing"),
    "plots": ("analysis.probes", "analysis.widgets", "analysis.runner", "analysis.testing"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("part", sorted(RULES))
def test_no_import_points_back_up(part):
    files = [ROOT / part] if part.endswith(".py") else sorted((ROOT / part).rglob("*.py"))
    assert files and all(f.exists() for f in files)
    wrong = {f"{f.relative_to(ROOT)} imports {name}" for f in files for name in _imports(f)
             if any(name == bad or name.startswith(bad + ".") for bad in RULES[part])}
    assert not wrong, sorted(wrong)


def test_import_order_in_a_fresh_interpreter():
    """In one fresh interpreter (one torch import, not two): `import analysis` is light (the notebook runner and
    the command line start without torch); the model layer and capture then import without the zoo, the test
    builders or the probes (the first use of a model-layer name loads it); the probes import after capture (no
    import cycle between the two)."""
    code = ("import sys\n"
            "import analysis, analysis.runner\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'loaded at import'\n"
            "from analysis.capture import capture\n"
            "import analysis.models\n"
            "from analysis import load_vlm\n"
            "assert 'torch' in sys.modules and callable(load_vlm)\n"
            "loaded = {m for m in sys.modules if m.startswith(('analysis.zoo', 'analysis.testing', 'analysis.probes'))}\n"
            "assert not loaded, loaded\n"
            "import analysis.probes as p\n"
            "assert all(getattr(p, name) for name in p.__all__)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sources_resolve_through_the_registry(tmp_path):
    from analysis import load_vlm
    from analysis.models.sources import register_source, registered_sources
    from analysis.models.vlm import resolve_source
    from analysis.zoo import checkpoint_path

    assert registered_sources()[:2] == ("zoo", "tiny")
    assert resolve_source("zoo:shapes-llava") == str(checkpoint_path("shapes-llava"))
    register_source("lab", folder=lambda name: str(checkpoint_path(name.replace("_", "-"))))
    vlm = load_vlm("lab:shapes_llava", device="cpu")
    assert vlm.name == "lab:shapes_llava" and vlm.n_layers == load_vlm("zoo:shapes-llava").n_layers
