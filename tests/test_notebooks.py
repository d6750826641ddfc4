"""The notebooks: committed clean, and each one runs end to end on the tiny parameter set."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from analysis.runner import KERNEL, check_kernel, find_notebooks, load_params, run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PARAMS = NOTEBOOKS / "params"

# Every notebook and the figures it must write (figures/<notebook>/<name>.png/.pdf/.json).
# A new notebook is added here with its figures; the test below fails until it is.
EXPECTED_FIGURES = {
    "00_quickstart": ["token_norms", "attention_overlay", "knockout"],
    "01_attention_maps": ["mass_heatmap", "layer_overlays", "head_overlays", "rollout_overlays", "localisation"],
    "02_information_flow": ["knockout_by_type", "related_vs_other", "region_knockout", "logit_lens"],
    "03_implicit_alignment": ["alignment_curves", "token_norms", "score_vs_accuracy"],
    "04_representation_shift": ["recovery", "consistency", "concepts", "steering"],
    "05_attributions": ["method_maps", "sanity_table", "randomisation"],
    "06_model_zoo": ["example_scenes", "zoo_accuracy", "training_trajectory", "held_out_accuracy"],
    "07_token_redundancy": ["accuracy_vs_kept", "accuracy_vs_flops", "region_drop", "permutation"],
}
# Figures drawn from the committed zoo's model cards, whatever model the notebook runs on.
ABOUT_THE_ZOO = {("06_model_zoo", "zoo_accuracy"), ("06_model_zoo", "training_trajectory")}
# The explorers' controls (analysis/widgets.py); a headless run's only widgets are tqdm's progress bars.
EXPLORER_CONTROLS = {"DropdownModel", "ToggleButtonsModel", "SelectMultipleModel", "SelectionSliderModel"}
# Parameters every notebook's `parameters` cell declares.
STANDARD_PARAMS = {"model", "seed", "device", "dtype", "interactive", "figures_dir"}


@pytest.fixture(autouse=True, scope="module")
def one_thread_kernels():
    """Kernels on one thread (OMP_NUM_THREADS, as the runner gives each of two side-by-side kernels):
    tiny models run as fast, and far faster when other jobs share the two cores."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    if before is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = before


def _notebooks() -> list[Path]:
    return find_notebooks(NOTEBOOKS)


def test_every_notebook_lists_its_figures():
    assert sorted(p.stem for p in _notebooks()) == sorted(EXPECTED_FIGURES)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_committed_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} has outputs; clear them before committing"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", "exactly one code cell must be tagged 'parameters'"
    assert nb.metadata["kernelspec"]["name"] == KERNEL
    assert STANDARD_PARAMS <= set(papermill.inspect_notebook(str(path)))


def test_parameter_files_are_valid():
    names = {p.stem for p in _notebooks()}
    files = sorted(PARAMS.glob("*.yaml"))
    assert {"default", "tiny", "llava-1.5-7b"} <= {p.stem for p in files}
    assert yaml.safe_load((PARAMS / "default.yaml").read_text())["model"] == "zoo:shapes-llava"
    for path in files:
        params = load_params(path)
        assert params["model"], path
        assert set(params.get("notebooks", {})) <= names, f"{path.name} has a section for a notebook that does not exist"


@pytest.fixture(scope="module")
def kernel(one_thread_kernels):
    """One ``vlm-probes`` kernel for this worker's tiny-params runs (``run_notebook(km=...)``: started by
    the first, namespace cleared before each next one). Each notebook still runs from an empty
    namespace, so a missing import or parameter fails; a fresh kernel per notebook would add ~10 s of
    kernel start and imports to each. Fresh kernels are what ``./run_all.sh`` and test_runner.py run."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    check_kernel()
    km = AsyncKernelManager(kernel_name=KERNEL)
    yield km
    if km.has_kernel:
        run_sync(km.shutdown_kernel)(now=True)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_on_tiny_params(path, tmp_path, kernel):
    """Each notebook end to end on tiny.yaml, in papermill with its own default ``interactive = None``:
    every figure written with provenance, and no widget explorer shown (a headless run is not
    interactive; tests/test_browser.py shows they appear in JupyterLab)."""
    params = load_params(PARAMS / "tiny.yaml")
    assert "interactive" not in params, "tiny.yaml leaves `interactive` to the notebooks' default (auto)"
    result = run_notebook(path, params, executed_dir=tmp_path / "executed", figures_dir=tmp_path / "figures",
                          progress=False, km=kernel)
    if not result.ok:
        pytest.fail(f"{path.name} failed: {result.error}\n{result.detail}", pytrace=False)
    executed = nbformat.read(tmp_path / "executed" / path.name, as_version=4)
    state = executed.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    controls = {m["model_name"] for m in state.get("state", {}).values()} & EXPLORER_CONTROLS
    assert not controls, f"explorer controls ({', '.join(sorted(controls))}) shown in a papermill run"
    for name in EXPECTED_FIGURES[path.stem]:
        for ext in ("png", "pdf", "json"):
            figure = tmp_path / "figures" / path.stem / f"{name}.{ext}"
            assert figure.is_file() and figure.stat().st_size > 0, f"{figure.name} was not written"
        sidecar = json.loads((tmp_path / "figures" / path.stem / f"{name}.json").read_text())
        assert sidecar["params"]["model"] == "tiny:llava"
        if (path.stem, name) in ABOUT_THE_ZOO:
            assert sidecar["model"] is None
        else:
            assert sidecar["model"]["name"] == "tiny:llava"
    shown = [base64.b64decode(output["data"]["image/png"]) for cell in executed.cells if cell.cell_type == "code"
             for output in cell.outputs if "image/png" in output.get("data", {})]
    saved = [(tmp_path / "figures" / path.stem / f"{name}.png").read_bytes() for name in EXPECTED_FIGURES[path.stem]]
    assert sorted(shown) == sorted(saved), "each figure is shown once, as the PNG it was saved to"


def test_load_vlm_resolves_tiny_names():
    import torch

    from analysis import load_vlm
    from analysis.errors import InputError, UnsupportedModelError

    vlm = load_vlm("tiny:qwen2_vl", device="cpu", dtype="bfloat16")
    assert (vlm.name, vlm.family, vlm.dtype, vlm.device.type) == ("tiny:qwen2_vl", "qwen2_vl", torch.bfloat16, "cpu")
    with pytest.raises(UnsupportedModelError, match="unknown tiny family"):
        load_vlm("tiny:gpt2")
    with pytest.raises(UnsupportedModelError, match="tiny:<family>@<seed>"):
        load_vlm("tiny:llava@x")
    other = load_vlm("tiny:llava@1", device="cpu")
    assert other.name == "tiny:llava@1"
    first = dict(load_vlm("tiny:llava", device="cpu").model.named_parameters())
    assert any(not torch.equal(p, first[n]) for n, p in other.model.named_parameters())
    with pytest.raises(InputError, match="unknown dtype"):
        load_vlm("tiny:llava", dtype="float8")


def test_load_example_sources(tmp_path, photo):
    from analysis.errors import InputError
    from analysis.notebook_utils import load_example

    scene = load_example(seed=1)
    assert scene.answer and scene.boxes and scene.question.endswith("?")
    assert load_example(seed=1).question == scene.question and load_example(seed=2).image != scene.image
    own = load_example(None, "how many shapes are there ?", seed=1)
    assert own.answer is None and own.boxes == [] and own.image == scene.image
    cat = load_example("skimage:chelsea", "what is in the picture ?")
    assert cat.image.mode == "RGB" and "chelsea" in cat.description
    photo.save(tmp_path / "photo.png")
    assert load_example(str(tmp_path / "photo.png"), "what color ?").description == "photo.png"
    with pytest.raises(InputError, match="set `question`"):
        load_example("skimage:chelsea")
    with pytest.raises(InputError, match="no sample"):
        load_example("skimage:nothing", "what ?")


def test_answer_helpers(tiny, photo):
    from analysis.notebook_utils import greedy_answer, next_token_table

    vlm = tiny("llava")
    prepared = vlm.prepare(photo, "what color is the circle ?")
    assert isinstance(greedy_answer(vlm, prepared, max_new_tokens=2), str)
    logits = vlm.model(**prepared.inputs).logits[0, prepared.last_position]
    table = next_token_table(vlm, logits, k=3)
    assert list(table.columns) == ["token", "probability"] and len(table) == 3
    assert table["probability"].is_monotonic_decreasing and table["probability"].sum() <= 1


def test_runner_runs_notebooks_side_by_side_on_one_thread_each(tmp_path, capsys, monkeypatch):
    """``--jobs 2``: both notebooks run, each in its own kernel (started in the notebooks' folder)
    with OMP_NUM_THREADS = cores // 2,
    the one that took longest last time first (never run: first of all); results come back in
    notebook order."""
    from nbformat.v4 import new_code_cell, new_notebook

    from analysis import kernel_fork
    from analysis.runner import main

    monkeypatch.setattr(kernel_fork, "PRELOAD", ("colorsys",))  # these kernels never import torch
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("00_first", "01_second"):
        cell = new_code_cell("model = 'm'\nfigures_dir = 'figures'")
        cell.metadata["tags"] = ["parameters"]
        body = new_code_cell("import json, os, pathlib\n"
                             f"out = pathlib.Path(figures_dir, '{name}'); out.mkdir(parents=True)\n"
                             "(out / 'env.png').write_bytes(b'png')\n"
                             "(out / 'env.json').write_text(json.dumps({'threads': os.environ.get('OMP_NUM_THREADS'), "
                             "'cwd': os.getcwd()}))")
        nbformat.write(new_notebook(cells=[cell, body], metadata={"kernelspec": {
            "name": KERNEL, "display_name": "Python (vlm-probes)", "language": "python"}}), notebooks / f"{name}.ipynb")
    executed = tmp_path / "executed"
    executed.mkdir()
    for name, seconds in (("00_first", 1.0), ("01_second", 99.0)):  # 01 took longest last time: starts first
        copy = nbformat.read(notebooks / f"{name}.ipynb", as_version=4)
        copy.metadata["papermill"] = {"duration": seconds}
        nbformat.write(copy, executed / f"{name}.ipynb")
    (tmp_path / "p.yaml").write_text("model: tiny:llava\ndevice: cpu\n")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the runner sets cores // jobs when unset
    start = Path.cwd()
    status = main(["--notebooks", str(notebooks), "--params", str(tmp_path / "p.yaml"), "--jobs", "2",
                   "--executed", str(executed), "--figures", str(tmp_path / "figures")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "2 at a time" in out and "in this order: 01_second, 00_first" in out
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert "OMP_NUM_THREADS" not in os.environ  # set for the kernels only, while they run
    for name in ("00_first", "01_second"):  # each kernel in the notebooks' folder, as in JupyterLab
        seen = json.loads((tmp_path / "figures" / name / "env.json").read_text())
        assert seen == {"threads": threads, "cwd": str(notebooks.resolve())}
    assert Path.cwd() == start  # the runner's own directory never changes
    table = [line.split()[:4] for line in out.splitlines() if line.startswith(("00_first ", "01_second "))]
    assert table == [["00_first", "ok", table[0][2], "1"], ["01_second", "ok", table[1][2], "1"]]
