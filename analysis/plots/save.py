"""``save_figure``: PNG + PDF + JSON provenance sidecar, byte-identical from run to run."""

from __future__ import annotations

import io
import json
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

if TYPE_CHECKING:
    from analysis.models import VLM

# Metadata that would differ between runs (dates) or machines (library versions, which the
# sidecar records instead) is dropped; ``None`` tells matplotlib to omit a key.
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}
VERSIONED_PACKAGES = ("vlm-probes", "torch", "transformers", "tokenizers", "numpy", "matplotlib", "pandas")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def save_figure(
    fig: Figure,
    name: str,
    params: Mapping[str, Any],
    *,
    notebook: str | None = None,
    out_dir: str | Path = "figures",
    vlm: "VLM | None" = None,
    show: bool | None = None,
) -> dict[str, Path]:
    """Write ``fig`` as PNG and PDF with a JSON provenance sidecar; return the three paths.

    Files go to ``out_dir/<notebook>/<name>.{png,pdf,json}`` (``out_dir/<name>.*`` when
    ``notebook`` is None). PNG and PDF carry no dates or software versions, so the same figure
    saved twice gives identical bytes. The PNG's resolution is ``savefig.dpi`` (200 in the
    vlm-probes style).

    In a Jupyter kernel the saved PNG itself is shown, at the figure's size (``figure.dpi``; the file's
    extra pixels make it sharp on high-density screens), and the figure is closed: what the notebook shows
    is the file, and the inline backend does not draw the figure a third time at the end of the cell.

    Args:
        fig: the figure.
        name: file stem, e.g. ``"token_norms"`` (letters, digits, ``_ . -``).
        params: the parameters that produced the figure (JSON-serialisable; numpy scalars and
            arrays, paths and tuples are converted). ``params["seed"]`` is also stored as ``seed``.
        notebook: the notebook's name, e.g. ``"00_quickstart"``; it names the sub-folder.
        out_dir: root folder of all figures.
        vlm: the model the figure is about; its name, family, config hash, device and dtype are
            recorded.
        show: display the saved PNG and close ``fig``; None (default): when running in a Jupyter kernel.

    Returns:
        ``{"png": path, "pdf": path, "json": path}``.
    """
    for label, value in (("name", name), ("notebook", notebook)):
        if value is not None and not _NAME.match(value):
            raise ValueError(f"figure {label} {value!r} must be a plain file stem (letters, digits, _ . -)")
    folder = Path(out_dir) / notebook if notebook else Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{name}.{ext}" for ext in ("png", "pdf", "json")}
    fig.savefig(paths["png"], format="png", metadata=PNG_METADATA)
    fig.savefig(paths["pdf"], format="pdf", metadata=PDF_METADATA)
    sidecar = {
        "figure": name,
        "notebook": notebook,
        "files": [paths["png"].name, paths["pdf"].name],
        "params": dict(params),
        "seed": params.get("seed"),
        "model": _model_info(vlm),
        "git": git_info(),
        "versions": package_versions(),
        "machine": machine_info(vlm),
    }
    paths["json"].write_text(json.dumps(sidecar, indent=2, sort_keys=True, default=_jsonable) + "\n")
    if (_in_kernel() if show is None else show):
        _show_saved(fig, paths["png"])
    return paths


def _in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (JupyterLab, papermill), not a script or terminal IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def _show_saved(fig: Figure, png: Path) -> None:
    """Display the PNG file at ``fig``'s on-screen size, then close ``fig``."""
    from IPython.display import Image as ShownImage, display

    saved_dpi = mpl.rcParams["savefig.dpi"]
    scale = 1.0 if saved_dpi == "figure" else fig.dpi / float(saved_dpi)
    data = png.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        width = round(image.width * scale)
    display(ShownImage(data=data, format="png", width=width))
    plt.close(fig)


def _model_info(vlm: "VLM | None") -> dict | None:
    if vlm is None:
        return None
    return {"name": vlm.name, "family": vlm.family, "config_hash": vlm.config_hash,
            "device": str(vlm.device), "dtype": str(vlm.dtype).removeprefix("torch.")}


def git_info() -> dict:
    """Return ``{"commit": sha or None, "dirty": bool or None}`` for the code in this checkout.

    ``dirty`` is True when ``analysis/`` or ``notebooks/`` differ from the commit (figures and
    other outputs do not count). Both are None outside a git checkout.
    """
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(_PACKAGE_DIR), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    root = Path(git("rev-parse", "--show-toplevel"))
    status = git("status", "--porcelain", "--", str(root / "analysis"), str(root / "notebooks"))
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    """Return the Python version and the versions of the packages that shape the numbers."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def machine_info(vlm: "VLM | None" = None) -> dict[str, str | None]:
    """Return the hardware the numbers were computed on: ``{"arch", "cpu", "torch_cpu_capability", "gpu"}``.

    The same code, packages and seed give byte-identical figures on the same kind of machine; another
    CPU (or GPU) may pick other vectorised kernels, whose float rounding differs (~1e-7 relative in
    fp32), so a PDF coordinate or a near-tied rank can differ. ``gpu`` is the accelerator ``vlm`` is on
    (a CUDA device's name, else the device type, e.g. ``"mps"``), or None on the CPU or without ``vlm``.
    """
    import torch

    cpu = platform.processor() or None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(errors="replace"), re.M)
        cpu = names[0].strip() if names else cpu
    device = getattr(vlm, "device", None)
    gpu = None
    if device is not None and device.type not in ("cpu", "meta"):
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type  # e.g. "mps"
    return {"arch": platform.machine(), "cpu": cpu, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "gpu": gpu}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)
