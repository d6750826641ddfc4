"""The VLM layer on every family's tiny model: token roles, patch geometry, unembedding, reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from analysis import load_vlm
from conftest import QUESTION, assert_detectable


def _coverage_counts(boxes: np.ndarray, region, step: float) -> np.ndarray:
    """How many boxes cover each point of a lattice inside ``region`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = region
    xs = np.arange(x0 + step / 2, x1, step)
    ys = np.arange(y0 + step / 2, y1, step)
    px, py = np.meshgrid(xs, ys)
    px, py = px.ravel()[:, None], py.ravel()[:, None]
    inside = (px >= boxes[:, 0]) & (px < boxes[:, 2]) & (py >= boxes[:, 1]) & (py < boxes[:, 3])
    return inside.sum(axis=1)


def test_roles_match_processor_ids(family, tiny, photo):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    reference = vlm.processor(text=[prepared.prompt], images=[photo], return_tensors="pt")["input_ids"][0]
    ids = prepared.input_ids.cpu()
    assert torch.equal(ids, reference)

    placeholder = torch.nonzero(reference == vlm.adapter.image_token_id).flatten()
    assert len(placeholder) > 0
    assert torch.equal(prepared.image_positions, placeholder)

    question = vlm.tokenizer.decode(ids[prepared.question_positions]).strip()
    assert question == QUESTION
    assert prepared.question_positions.min() > prepared.image_positions.max()

    assert prepared.last_position == len(reference) - 1
    assert prepared.roles[-1] == "last"
    counts = {role: int((prepared.roles == role).sum()) for role in ("image", "question", "last", "other")}
    assert sum(counts.values()) == len(reference)


@pytest.mark.parametrize("size", [(200, 150), (120, 260)], ids=["landscape", "portrait"])
def test_patch_map_covers_every_image_token_and_tiles_each_tile(family, tiny, size):
    vlm = tiny(family)
    image = Image.new("RGB", size, (10, 200, 30))
    prepared = vlm.prepare(image, QUESTION)
    patches = prepared.patches
    assert patches["position"].tolist() == prepared.image_positions.tolist()
    assert patches["position"].is_unique
    assert set(patches["kind"]) <= {"patch", "newline", "cls"}

    width, height = size
    for tile, (rows, cols) in prepared.grids.items():
        cells = patches[(patches["tile"] == tile) & (patches["kind"] == "patch")]
        assert cells[["row", "col"]].drop_duplicates().shape[0] == len(cells)
        assert cells["row"].between(0, rows - 1).all() and cells["col"].between(0, cols - 1).all()
        boxes = cells[["x0", "y0", "x1", "y1"]].to_numpy()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        region = prepared.tile_box(tile)
        assert region[0] >= -1e-6 and region[1] >= -1e-6
        assert region[2] <= width + 1e-6 and region[3] <= height + 1e-6
        counts = _coverage_counts(boxes, region, step=0.5)
        assert (counts == 1).all(), f"tile {tile}: boxes overlap or leave gaps"
    union = np.array([prepared.tile_box(t) for t in prepared.grids])
    covered = (union[:, 0].min(), union[:, 1].min(), union[:, 2].max(), union[:, 3].max())
    # LLaVA-1.5's CLIP processor resizes the short side and centre-crops the long one.
    short = min(size)
    expected = (
        ((width - short) / 2, (height - short) / 2, (width + short) / 2, (height + short) / 2)
        if family == "llava"
        else (0, 0, width, height)
    )
    assert np.allclose(covered, expected, atol=1.0)


def test_unembed_of_last_layer_reproduces_logits(family, tiny, photo):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    captured = {}
    handle = vlm.layers[-1].register_forward_hook(
        lambda module, args, output: captured.update(h=output[0] if isinstance(output, tuple) else output)
    )
    try:
        with torch.no_grad():
            logits = vlm.model(**prepared.inputs).logits.float()
    finally:
        handle.remove()
    assert torch.allclose(vlm.unembed(captured["h"]), logits, atol=1e-5)
    assert_detectable([(vlm.unembed(captured["h"], final_norm=False) - logits).abs().max()], 1e-5,
                      what="effect of the final norm on the logits")


def test_model_facts_resolved_from_the_model(family, tiny):
    vlm = tiny(family)
    text = vlm.model.config.get_text_config()
    assert vlm.n_layers == text.num_hidden_layers
    assert vlm.n_heads == text.num_attention_heads
    assert vlm.hidden_size == text.hidden_size
    assert vlm.lm_head.weight.shape == (text.vocab_size, text.hidden_size)
    assert vlm.check_layer(-1) == vlm.n_layers - 1


def test_save_and_reload_through_load_vlm(family, tiny, photo, tmp_path):
    vlm = tiny(family)
    vlm.model.save_pretrained(tmp_path)
    vlm.processor.save_pretrained(tmp_path)
    reloaded = load_vlm(tmp_path, device="cpu")
    assert reloaded.family == vlm.family
    a, b = vlm.prepare(photo, QUESTION), reloaded.prepare(photo, QUESTION)
    assert torch.equal(a.input_ids, b.input_ids)
    assert (a.roles == b.roles).all()
    assert a.patches.equals(b.patches)
    with torch.no_grad():
        diff = (vlm.model(**a.inputs).logits - reloaded.model(**b.inputs).logits).abs().max()
    assert diff <= 1e-5


def test_related_positions_and_to_grid(tiny):
    vlm = tiny("llava")
    image = Image.new("RGB", (224, 224))  # 16 x 16 patches of exactly 14 px
    prepared = vlm.prepare(image, QUESTION)
    related = prepared.related_positions([(0, 0, 14, 14)])
    assert related.tolist() == [int(prepared.image_positions[0])]
    scores = np.arange(len(prepared.patches), dtype=float)
    grid = prepared.to_grid(scores)
    assert grid.shape == (16, 16)
    assert grid[1, 0] == 16 and grid[15, 15] == 255


def test_reusing_inputs_builds_each_input_once_per_way_of_building_it(photo):
    """Inside ``reusing_inputs()``: the same image, question and template give the very same inputs, also on another
    checkpoint of the same architecture (alignment_vs_accuracy's loop); other pixels, questions, templates, families
    or dtypes build anew; outside the block every call builds anew."""
    from analysis.models import reusing_inputs
    from analysis.testing import tiny_vlm

    vlm, other_weights, other_family = tiny_vlm("llava"), tiny_vlm("llava", seed=1), tiny_vlm("qwen2_vl")
    assert not torch.equal(vlm.lm_head.weight, other_weights.lm_head.weight)
    fresh = vlm.prepare(photo, QUESTION)
    assert vlm.prepare(photo, QUESTION) is not fresh
    changed = photo.copy()
    changed.paste((1, 2, 3), (40, 30, 120, 90))
    with reusing_inputs():
        first = vlm.prepare(photo, QUESTION)
        with reusing_inputs():  # nested: the outer block's inputs
            assert vlm.prepare(photo.copy(), QUESTION) is first  # same pixels, another image object
        assert other_weights.prepare(photo, QUESTION) is first
        assert all(torch.equal(first.inputs[k], fresh.inputs[k]) for k in fresh.inputs) and first.prompt == fresh.prompt
        assert (first.roles == fresh.roles).all() and first.patches.equals(fresh.patches)
        built = [vlm.prepare(changed, QUESTION), vlm.prepare(photo, QUESTION + " now"),
                 vlm.prepare(photo, QUESTION, template="USER: <image>\n{question} ASSISTANT:"),
                 other_family.prepare(photo, QUESTION)]
        assert all(p is not first for p in built)
        assert not torch.equal(built[0].inputs["pixel_values"], first.inputs["pixel_values"])
        vlm.model.to(torch.float64)
        assert vlm.prepare(photo, QUESTION) is not first
    assert vlm.prepare(photo, QUESTION) is not first
