"""Figures: the style, save_figure (three files, sidecar, identical bytes) and the token overlay."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from analysis.errors import InputError  # noqa: E402
from analysis.plots import (PALETTE, STYLE_PATH, plot_token_overlay, save_figure, style,  # noqa: E402
                            use_style)
from conftest import QUESTION  # noqa: E402

OVERLAY_FAMILIES = ("llava", "llava_next", "qwen2_vl", "idefics3", "paligemma")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _line_figure():
    with style():
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [0.1, 0.5, 0.3], label="score")
        ax.set(xlabel="layer", ylabel="attention mass (fraction)", title="tiny:llava, test data")
        ax.legend()
    return fig


def test_style_file_is_shipped_and_applies():
    assert Path(STYLE_PATH).is_file()
    before = dict(plt.rcParams)
    with style():
        colors = [c.lstrip("#").upper() for c in plt.rcParams["axes.prop_cycle"].by_key()["color"]]
        assert colors == [c.lstrip("#").upper() for c in PALETTE]
        assert plt.rcParams["image.cmap"] == "viridis"
        assert plt.rcParams["font.size"] == 8
    assert plt.rcParams["font.size"] == before["font.size"]
    with plt.style.context("default"):
        use_style()
        assert plt.rcParams["savefig.dpi"] == 200


def test_save_figure_writes_png_pdf_and_sidecar(tmp_path, tiny):
    vlm = tiny("llava")
    params = {"model": "tiny:llava", "seed": 3, "layers": np.arange(2), "image": Path("scene.png"), "alpha": np.float32(0.5)}
    paths = save_figure(_line_figure(), "curve", params, notebook="00_test", out_dir=tmp_path, vlm=vlm)
    assert paths == {ext: tmp_path / "00_test" / f"curve.{ext}" for ext in ("png", "pdf", "json")}
    assert all(p.stat().st_size > 0 for p in paths.values())
    assert paths["png"].read_bytes().startswith(b"\x89PNG") and paths["pdf"].read_bytes().startswith(b"%PDF")
    sidecar = json.loads(paths["json"].read_text())
    assert sidecar["figure"] == "curve" and sidecar["notebook"] == "00_test"
    assert sidecar["params"] == {"model": "tiny:llava", "seed": 3, "layers": [0, 1], "image": "scene.png", "alpha": 0.5}
    assert sidecar["seed"] == 3
    assert sidecar["model"]["name"] == "tiny:llava" and sidecar["model"]["config_hash"] == vlm.config_hash
    assert sidecar["model"]["family"] == "llava" and sidecar["model"]["dtype"] == "float32"
    commit = sidecar["git"]["commit"]
    assert commit is None or (len(commit) == 40 and isinstance(sidecar["git"]["dirty"], bool))
    for package in ("python", "torch", "transformers", "numpy", "matplotlib", "vlm-probes"):
        assert sidecar["versions"][package], package
    assert sidecar["machine"] == {"arch": platform.machine(), "cpu": sidecar["machine"]["cpu"], "gpu": None,
                                  "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    assert sidecar["machine"]["cpu"], "the CPU model names the hardware whose float rounding the numbers carry"


def test_save_figure_without_notebook_or_model(tmp_path):
    paths = save_figure(_line_figure(), "plain", {}, out_dir=tmp_path)
    assert paths["png"] == tmp_path / "plain.png"
    sidecar = json.loads(paths["json"].read_text())
    assert sidecar["model"] is None and sidecar["seed"] is None


def test_a_kernel_shows_the_saved_png_and_the_figure_is_closed(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    fig = _line_figure()
    with style():  # savefig.dpi 200
        paths = save_figure(fig, "curve", {}, out_dir=tmp_path, show=True)
    (image,) = shown
    assert image.data == paths["png"].read_bytes()
    with Image.open(paths["png"]) as png:  # 200 dpi file shown at the figure's 100 dpi
        assert image.width == round(png.width / 2) and png.width > 300
    assert not plt.fignum_exists(fig.number)  # the inline backend has nothing left to draw again
    kept = _line_figure()
    save_figure(kept, "kept", {}, out_dir=tmp_path)  # not in a kernel: nothing shown, the figure stays open
    assert len(shown) == 1 and plt.fignum_exists(kept.number)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", " lead"])
def test_save_figure_rejects_paths_as_names(tmp_path, name):
    with pytest.raises(ValueError, match="plain file stem"):
        save_figure(_line_figure(), name, {}, out_dir=tmp_path)


def test_two_saves_give_identical_bytes(tmp_path):
    first = save_figure(_line_figure(), "curve", {"seed": 0}, notebook="nb", out_dir=tmp_path / "a")
    second = save_figure(_line_figure(), "curve", {"seed": 0}, notebook="nb", out_dir=tmp_path / "b")
    for ext in ("png", "pdf", "json"):
        assert first[ext].read_bytes() == second[ext].read_bytes(), ext
    assert b"CreationDate" not in first["pdf"].read_bytes()
    assert b"Software" not in first["png"].read_bytes()


def test_saves_in_two_processes_give_identical_bytes(tmp_path):
    # save.py is loaded by path so that the child processes skip importing torch (seconds each).
    script = (
        "import importlib.util, sys, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
        "spec = importlib.util.spec_from_file_location('save', sys.argv[1]); save = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(save)\n"
        "with plt.style.context(sys.argv[2]):\n"
        "    fig, ax = plt.subplots(); ax.imshow([[0, 1], [2, 3]]); ax.plot([0, 1], [1, 0], label='a')\n"
        "    ax.set(xlabel='x (px)', ylabel='y (px)', title='t'); ax.legend()\n"
        "save.save_figure(fig, 'f', {'seed': 0}, out_dir=sys.argv[3])\n")
    save_py = Path(save_figure.__code__.co_filename)
    for run, hash_seed in (("a", "1"), ("b", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", script, str(save_py), STYLE_PATH, str(tmp_path / run)],
                       check=True, env=env, timeout=120)
    for ext in ("png", "pdf"):
        assert (tmp_path / "a" / f"f.{ext}").read_bytes() == (tmp_path / "b" / f"f.{ext}").read_bytes(), ext


def _prepared(tiny, photo, family):
    return tiny(family).prepare(photo, QUESTION)


@pytest.mark.parametrize("family", OVERLAY_FAMILIES)
def test_overlay_one_hot_lights_exactly_that_tokens_box(tiny, photo, family):
    prepared = _prepared(tiny, photo, family)
    patches = prepared.patches.reset_index(drop=True)
    last_tile = max(prepared.grids)
    rows, cols = prepared.grids[last_tile]
    k = int(patches.index[(patches["kind"] == "patch") & (patches["tile"] == last_tile)
                          & (patches["row"] == rows // 2) & (patches["col"] == cols // 3)][0])
    scores = np.zeros(len(patches))
    scores[k] = 1.0
    fig = plot_token_overlay(prepared, scores, label="score", alpha=1.0, cmap="viridis")
    fig.set_dpi(150)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    height = pixels.shape[0]
    ax = fig.axes[sorted(prepared.grids).index(last_tile)]
    hot = (np.asarray(matplotlib.colormaps["viridis"](1.0)[:3]) * 255).round().astype(int)
    cold = (np.asarray(matplotlib.colormaps["viridis"](0.0)[:3]) * 255).round().astype(int)

    (ax0, ay0), (ax1, ay1) = ax.get_window_extent().get_points()
    panel = pixels[int(height - ay1) + 1 : int(height - ay0) - 1, int(ax0) + 1 : int(ax1) - 1]
    lit_rows, lit_cols = np.nonzero((np.abs(panel - hot) <= 2).all(axis=-1))
    assert lit_rows.size > 0, "the token's box is not drawn in the top colour"
    x0, y0, x1, y1 = patches.loc[k, ["x0", "y0", "x1", "y1"]]
    (dx0, dy0), (dx1, dy1) = ax.transData.transform([(x0, y0), (x1, y1)])  # display: y up
    top, left = height - int(ay1) - 1, int(ax0) + 1  # panel offset in the pixel array
    assert abs(lit_cols.min() + left - dx0) <= 1.5 and abs(lit_cols.max() + 1 + left - dx1) <= 1.5
    assert abs(lit_rows.min() + top - (height - dy0)) <= 1.5 and abs(lit_rows.max() + 1 + top - (height - dy1)) <= 1.5
    cold_fraction = (np.abs(panel - cold) <= 2).all(axis=-1).mean()
    assert cold_fraction > 0.5, "the other tokens should cover the panel in the bottom colour"


def test_overlay_panels_colorbar_and_special_tokens(tiny, photo):
    prepared = _prepared(tiny, photo, "llava_next")
    scores = np.linspace(0.0, 1.0, len(prepared.patches))
    fig = plot_token_overlay(prepared, scores, label="attention (fraction)", title="tiny:llava_next, noise image",
                             boxes=[(10, 20, 60, 90)])
    panels, colorbar = fig.axes[:-1], fig.axes[-1]
    assert len(panels) == len(prepared.grids) == 2
    assert colorbar.get_ylabel() == "attention (fraction)"
    assert fig._suptitle.get_text() == "tiny:llava_next, noise image"
    assert [ax.get_title().splitlines()[0] for ax in panels] == ["overview", "high-res"]
    n_newline = int((prepared.patches["kind"] == "newline").sum())
    assert f"{n_newline} newline tokens not drawn" in panels[1].get_xlabel()
    assert all(ax.get_xlabel().startswith("x (px)") for ax in panels) and panels[0].get_ylabel() == "y (px)"


def test_overlay_idefics3_tiles_and_subsets(tiny, photo):
    prepared = _prepared(tiny, photo, "idefics3")
    scores = np.arange(len(prepared.patches), dtype=float)
    fig = plot_token_overlay(prepared, scores, label="token index")
    assert len(fig.axes) == len(prepared.grids) + 1 == 6
    for ax, tile in zip(fig.axes, sorted(prepared.grids)):
        x0, y0, x1, y1 = prepared.tile_box(tile)
        assert ax.get_xlim() == pytest.approx((x0, x1)) and ax.get_ylim() == pytest.approx((y1, y0))
    fig = plot_token_overlay(prepared, scores, label="token index", tiles=[4])  # global tile: 8 x 8 patches, shuffle 2
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "4 x 4 image tokens"


def test_overlay_accepts_torch_and_rejects_bad_input(tiny, photo):
    import torch

    prepared = _prepared(tiny, photo, "llava")
    plot_token_overlay(prepared, torch.ones(len(prepared.patches)), label="constant")
    with pytest.raises(InputError, match="one score per image token"):
        plot_token_overlay(prepared, np.ones(len(prepared.patches) + 1), label="x")
    with pytest.raises(InputError, match="do not exist"):
        plot_token_overlay(prepared, np.ones(len(prepared.patches)), label="x", tiles=[7])


def test_draw_token_scores_draws_several_tiles_on_one_axes(tiny, photo):
    from matplotlib.colors import Normalize

    from analysis.plots import draw_token_scores

    prepared = _prepared(tiny, photo, "idefics3")
    crops = [t for t, name in prepared.tile_names.items() if name != "global"]
    fig, ax = plt.subplots()
    layer = draw_token_scores(ax, prepared, np.ones(len(prepared.patches)), tiles=crops, norm=Normalize(0, 2))
    assert len(layer.get_paths()) == sum(r * c for r, c in (prepared.grids[t] for t in crops))
    assert ax.get_xlim() == pytest.approx((0, photo.width)) and ax.get_ylim() == pytest.approx((photo.height, 0))
    llava_next = _prepared(tiny, photo, "llava_next")
    with pytest.raises(InputError, match="no patch tokens"):
        draw_token_scores(ax, llava_next, np.ones(len(llava_next.patches)), tiles=[9], norm=Normalize(0, 1))


def test_zoo_figures_show_the_table_they_are_given():
    from analysis.data.shapes import make_samples
    from analysis.plots import accuracy_table, plot_accuracy_bars, plot_accuracy_heatmap, plot_example_scenes

    records = {"a": [{"question_type": "Count", "accuracy": 0.5}, {"question_type": "overall", "accuracy": 0.25}],
               "b": [{"question_type": "Count", "accuracy": 1.0}, {"question_type": "overall", "accuracy": 0.75}]}
    table = accuracy_table(records)
    assert table.loc["b", "Count"] == 100 and table.loc["a", "overall"] == 25
    with style():
        fig = plot_accuracy_heatmap(table, title="zoo, test data")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["50", "25", "100", "75"]
    assert ax.get_xlabel() == "question type" and fig.axes[1].get_ylabel() == "accuracy (%)"
    frame = pd.DataFrame({"question_type": ["Count", "overall"], "accuracy": [0.5, 0.25], "chance": [1 / 3, 0.5]})
    with style():
        fig = plot_accuracy_bars({"64 px": frame, "96 px": frame.assign(accuracy=[1.0, 0.9])}, title="t")
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([50, 25, 100, 90])
    samples = make_samples(3, seed=0)
    with style():
        fig = plot_example_scenes(samples, ["yes", "no", "red"], ncols=2, title="shapes world (seed 0)")
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert len(titles) == 3 and all(s.question_type in t and f"gold: {s.answer}" in t for s, t in zip(samples, titles))


def test_region_knockout_bars_are_the_accuracies():
    from analysis.plots import plot_region_knockout

    frame = pd.DataFrame({"question_type": ["Count", "Count", "Exist"], "correct_base": [True, True, False],
                          "correct_related_blocked": [False, True, False], "correct_other_blocked": [True, True, True]})
    with style():
        fig = plot_region_knockout(frame, 40.0, "tiny:llava", "3 questions")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    # per group (Count, Exist, all): no block, related blocked, other blocked
    assert heights == pytest.approx([100, 0, 200 / 3, 50, 0, 100 / 3, 100, 100, 100])
    assert ax.get_ylabel() == "accuracy (%)" and "tiny:llava" in ax.get_title()


def test_machine_info_names_the_accelerator_the_model_is_on():
    from types import SimpleNamespace

    from analysis.plots.save import machine_info

    assert machine_info(SimpleNamespace(device=torch.device("mps")))["gpu"] == "mps"
    assert machine_info(SimpleNamespace(device=torch.device("cpu")))["gpu"] is None
    assert machine_info()["gpu"] is None
