"""The toy model zoo: tokenizer/processor, training recipe, registry and the committed checkpoints."""

import json
import re
import shutil
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, LlamaForCausalLM

from analysis.data.shapes import COLORS, QUESTION_TYPES, chance_level, chance_levels, make_samples, random_scene
from analysis.probes import wilson_interval
from analysis.zoo import EVAL_SEED, checkpoint_path, evaluate, evaluate_text, list_checkpoints, trajectory
from analysis.zoo.build import Encoder, ModelSpec, build_model, build_processor
from analysis.zoo.registry import MODELS_DIR
from analysis.zoo.train import (NotReproduced, Recipe, conversation, fit, keywords, make_local, patch_labels, qa_batch,
                                train_snapshots)

MINI = ModelSpec(vision_hidden=32, vision_layers=1, vision_mlp=64, text_hidden=32, text_layers=2, text_mlp=64)
HELD_OUT = 20_000  # training streams use seeds < 1000
# name -> (min overall accuracy, min accuracy per question type)
BARS = {"shapes-llava": (0.95, 0.90), "shapes-llava-local": (0.90, 0.80), "shapes-llava-ft": (0.90, 0.80)}
VLMS = list_checkpoints(kind="vlm")


def test_tokenizer_round_trips_and_knows_every_word():
    tok = build_processor().tokenizer
    texts = [s.question for s in make_samples(140, seed=0)] + [random_scene(np.random.default_rng(i)).describe()
                                                                 for i in range(20)]
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text
    assert tok("what color ?").input_ids[0] == tok.bos_token_id


def test_processor_matches_fast_encoder_and_model():
    processor, enc = build_processor(), Encoder()
    sample = make_samples(1, seed=0)[0]
    text = processor.apply_chat_template(sample.messages, add_generation_prompt=True)
    assert text == f"USER: <image>\n{sample.question} ASSISTANT:"
    inputs = processor(text=text, images=sample.image, return_tensors="pt")
    assert inputs.input_ids[0].tolist() == enc.prompt_ids(sample.question)
    assert (inputs.input_ids == processor.tokenizer.convert_tokens_to_ids("<image>")).sum() == 64
    torch.testing.assert_close(inputs.pixel_values, enc.pixels([sample.image]), atol=1e-5, rtol=0)
    model = build_model(MINI)
    with torch.no_grad():
        assert model(**inputs).logits.shape == (1, inputs.input_ids.shape[1], len(processor.tokenizer))


def test_mini_training_lowers_the_loss():
    """25 steps of stage 2 on a mini model cut the loss by a fifth. (That training is deterministic, the same
    tensors from a second run, is what test_snapshots_are_added_only_after_the_retrained_checkpoints_match checks.)"""
    recipe = Recipe(spec=MINI, batch_size=16)
    enc = Encoder(MINI)
    model = build_model(MINI, seed=0)
    losses = fit(lambda t: model(**qa_batch(enc, recipe, "stage2", t)).loss, list(model.parameters()),
                 steps=25, lr=3e-3, desc="mini")
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_snapshots_are_added_only_after_the_retrained_checkpoints_match(tmp_path):
    """``--snapshots`` retrains into a scratch folder, checks every checkpoint the zoo already holds
    and copies only the missing snapshots; one differing tensor stops it with nothing written."""
    recipe = Recipe(spec=MINI, batch_size=4, lm_steps=2, vision_steps=2, stage1_steps=2, stage2_steps=4,
                    snapshots=(0, 3))
    zoo = tmp_path / "zoo"
    first = train_snapshots(recipe, zoo, tmp_path / "work1")
    assert first["added"] == ["shapes-llava-step0", "shapes-llava-step3"] and first["verified"] == []
    before = {p: p.read_bytes() for p in zoo.rglob("*") if p.is_file()}
    more = replace(recipe, snapshots=(0, 1, 3, 4))
    second = train_snapshots(more, zoo, tmp_path / "work2")
    assert second["verified"] == second["same_bytes"] == ["shapes-llava-step0", "shapes-llava-step3"]
    assert second["added"] == ["shapes-llava-step1", "shapes-llava-step4"]
    assert all(p.read_bytes() == data for p, data in before.items()), "existing snapshots are never rewritten"
    assert list_checkpoints(zoo) == ["shapes-llava-step0", "shapes-llava-step1", "shapes-llava-step3",
                                     "shapes-llava-step4"]

    # a committed snapshot that the retraining does not reproduce: stop, write nothing
    from safetensors.torch import load_file, save_file

    weights = zoo / "shapes-llava-step3" / "model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(weights), metadata={"format": "pt"})
    (zoo / "shapes-llava-step4").rename(tmp_path / "step4")
    with pytest.raises(NotReproduced, match=f"shapes-llava-step3 differs .* {name}"):
        train_snapshots(more, zoo, tmp_path / "work3")
    assert not (zoo / "shapes-llava-step4").exists()


def test_second_run_trains_stages_one_to_four_and_keeps_their_trajectory(tmp_path):
    """``--second-run`` on a mini recipe: the trajectory of stages 1-4 under the run2 names, weights
    equal bit for bit to the same run's checkpoints (``train_snapshots`` trains them the same way)."""
    from analysis.zoo.train import train_second_run

    recipe = Recipe(spec=MINI, batch_size=4, lm_steps=2, vision_steps=2, stage1_steps=2, stage2_steps=4,
                    snapshots=(0, 3))
    names = train_second_run(recipe, tmp_path / "zoo", tmp_path / "work")
    assert names == ["shapes-llava-run2", "shapes-llava-run2-frozen", "shapes-llava-run2-step0",
                     "shapes-llava-run2-step3"]
    assert sorted(list_checkpoints(tmp_path / "zoo")) == names  # not its text LM or vision tower
    reference = train_snapshots(recipe, tmp_path / "ref", tmp_path / "ref-work")["work"]
    for name in names:
        source = "shapes-llava" + name.removeprefix("shapes-llava-run2")
        assert (tmp_path / "zoo" / name / "model.safetensors").read_bytes() == \
            (Path(reference) / source / "model.safetensors").read_bytes(), name


def test_local_tower_does_not_mix_patches():
    model = build_model(MINI)
    make_local(model.model.vision_tower)
    pixels = Encoder(MINI).pixels([make_samples(1, seed=0)[0].image])
    changed = pixels.clone()
    changed[..., 8:16, 16:24] += 1.0  # patch (row 1, col 2) -> image token 1 * 8 + 2
    with torch.no_grad():
        a, b = (model.model.get_image_features(pixel_values=p).pooler_output[0] for p in (pixels, changed))
    moved = ((a - b).abs().amax(-1) > 1e-6).nonzero().flatten().tolist()
    assert moved == [10]


def test_patch_labels_follow_masks():
    sample = make_samples(1, seed=4)[0]
    labels = patch_labels(sample, ModelSpec())
    assert labels.shape == (64, 5)
    assert labels[:, 3].sum() == len(sample.scene.objects)
    assert (labels[:, 0] > 0).sum() >= len(sample.scene.objects)
    assert ((labels[:, 0] > 0) == (labels[:, 1] > 0)).all() and ((labels[:, 0] > 0) == (labels[:, 4] > 0)).all()
    colors = [list(COLORS).index(o.color) + 1 for o in sample.scene.objects]
    for color, same in zip(labels[:, 0].tolist(), labels[:, 4].tolist()):
        assert same == (colors.count(color) if color else 0)


def test_training_conversations_match_the_chat_template():
    processor, enc = build_processor(), Encoder()
    sample = make_samples(1, seed=2)[0]
    turns = conversation(sample, np.random.default_rng(0))
    assert turns[0] == (sample.question, sample.answer) and turns[-1][0] == "describe the image ."
    assert len(turns) >= 6
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": turns[0][0]}]}]
    for k, (q, a) in enumerate(turns):
        if k:
            messages.append({"role": "user", "content": [{"type": "text", "text": q}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    text = processor.apply_chat_template(messages)
    ids, labels = enc.dialog(turns)
    assert processor(text=text, images=sample.image).input_ids[0] == ids
    answers = [i for i, lab in zip(ids, labels) if lab != -100]
    assert processor.tokenizer.decode(answers) == " </s> ".join(a for _, a in turns) + " </s>"
    assert keywords("is the circle left or right of the square ?") == "circle square left or right"


def test_registry_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m analysis.zoo.train --all"):
        checkpoint_path("no-such-model")
    with pytest.raises(FileNotFoundError, match="Available: none"):
        checkpoint_path("shapes-llava", root=tmp_path)
    assert checkpoint_path("zoo:shapes-llava") == MODELS_DIR / "shapes-llava"


# ---------------------------------------------------------------- the committed checkpoints
# models/ is committed, so these never skip: a missing checkpoint fails with checkpoint_path's error,
# which names the command that rebuilds the zoo.


def _load(name):
    path = checkpoint_path(name)
    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32), AutoProcessor.from_pretrained(path)


def test_zoo_is_complete_and_small():
    names = set(list_checkpoints())
    assert {"shapes-lm", "shapes-vision", "shapes-llava-frozen", "shapes-llava", "shapes-llava-ft",
            "shapes-llava-local"} <= names
    assert len([n for n in names if n.startswith("shapes-llava-step")]) >= 6
    size = sum(f.stat().st_size for f in MODELS_DIR.rglob("*") if f.is_file())
    assert size <= 48 * 10 ** 6  # the budget of the repository's models/
    for name in names:
        assert "Accuracy" in (MODELS_DIR / name / "README.md").read_text() or "vision" in name


@pytest.mark.parametrize("name", sorted(BARS))
def test_checkpoint_passes_its_bar_on_unseen_seeds(name):
    overall, per_type = BARS[name]
    table = evaluate(_load(name), n=700, seed=HELD_OUT + len(name), progress=False).set_index("question_type")
    assert table.loc["overall", "accuracy"] >= overall, table
    assert (table.accuracy >= per_type).all(), table


def test_frozen_and_intermediate_checkpoints_spread():
    acc = {name: evaluate(_load(name), n=140, seed=HELD_OUT, progress=False).accuracy.iloc[-1]
           for name in ["shapes-llava", "shapes-llava-frozen"] + [n for n in VLMS if re.fullmatch(r"shapes-llava-step\d+", n)]}
    assert acc["shapes-llava-frozen"] <= acc["shapes-llava"] - 0.1, acc
    steps = sorted((int(n.rsplit("step", 1)[1]), a) for n, a in acc.items() if "-step" in n)
    assert steps[0][1] < 0.6 and max(a for _, a in steps) > 0.8, steps


@pytest.mark.parametrize("size", [96, 50])
def test_other_image_sizes_are_resized(size):
    table = evaluate(_load("shapes-llava"), n=140, seed=HELD_OUT + size, image_size=size, progress=False)
    assert table.accuracy.iloc[-1] >= 0.8, table


def test_text_only_model_is_at_chance_without_the_image():
    path = checkpoint_path("shapes-lm")
    lm, tok = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)
    blind = evaluate_text(lm, tok, n=700, seed=HELD_OUT, with_caption=False)
    assert (blind.accuracy <= blind.chance + 0.1).all(), blind


@pytest.mark.parametrize("run, at_least", [("shapes-llava", 8), ("shapes-llava-run2", 20)])
def test_trajectory_runs_from_stage_one_to_the_default(run, at_least):
    path = trajectory(run=run)
    assert path[0] == f"zoo:{run}-step0" and path[-1] == f"zoo:{run}"
    assert f"zoo:{run}-frozen" in path and len(path) >= at_least
    assert not set(path) & set(trajectory(run="shapes-llava-run2" if run == "shapes-llava" else "shapes-llava"))
    steps = [json.loads((checkpoint_path(n) / "config.json").read_text())["zoo"]["steps"] for n in path[:-1]]
    totals = [s["stage1"] + s.get("stage2", 0) for s in steps]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


def test_second_run_is_kept_under_its_own_names(tmp_path):
    """keep_second_run copies a run's trajectory (not its LM, tower or other checkpoints) under the
    run2 prefix, weights unchanged, with the run and the command that rebuilds it on each card."""
    from analysis.zoo.cards import _card
    from analysis.zoo.train import SECOND_RUN_COMMAND, keep_second_run

    work, out = tmp_path / "work", tmp_path / "out"
    for name in ("shapes-llava-step0", "shapes-llava-frozen", "shapes-llava", "shapes-lm", "shapes-llava-local"):
        shutil.copytree(checkpoint_path(name), work / name)
    assert keep_second_run(work, out) == ["shapes-llava-run2", "shapes-llava-run2-frozen", "shapes-llava-run2-step0"]
    assert sorted(p.name for p in out.iterdir()) == ["shapes-llava-run2", "shapes-llava-run2-frozen",
                                                     "shapes-llava-run2-step0"]
    assert trajectory(out, run="shapes-llava-run2") == ["zoo:shapes-llava-run2-step0", "zoo:shapes-llava-run2-frozen",
                                                        "zoo:shapes-llava-run2"]
    assert (out / "shapes-llava-run2" / "model.safetensors").read_bytes() == \
        (work / "shapes-llava" / "model.safetensors").read_bytes()
    zoo = json.loads((out / "shapes-llava-run2-frozen" / "config.json").read_text())["zoo"]
    assert "second run" in zoo["run"] and zoo["rebuild"] == SECOND_RUN_COMMAND
    card = _card("shapes-llava-run2-frozen", zoo, None, 0)
    assert f"`{SECOND_RUN_COMMAND}`" in card and "- Run: second run" in card
    loaded = AutoModelForImageTextToText.from_pretrained(out / "shapes-llava-run2-step0").config.zoo["run"]
    assert "replicate of shapes-llava-step0" in loaded and "replicate of shapes-llava-frozen" in zoo["run"]


def test_local_checkpoint_has_no_vision_attention():
    model, _ = _load("shapes-llava-local")
    attn = [p for n, p in model.model.vision_tower.named_parameters() if "self_attn" in n]
    assert attn and all((p == 0).all() for p in attn)


def test_cards_report_accuracy_per_question_type():
    index = json.loads((MODELS_DIR / "zoo.json").read_text())
    for name in VLMS:
        records = index["tables"][name]
        assert [r["question_type"] for r in records] == list(QUESTION_TYPES) + ["overall"]
        # one-token answers: the greedy token is the gold's only if the gold is the best option too
        assert all(r["accuracy_options"] >= r["accuracy"] for r in records), name
        assert index["summary_options"][name] == pytest.approx(records[-1]["accuracy_options"], abs=1e-4)
    assert index["chance"] == pytest.approx(chance_levels())
    readme = (MODELS_DIR / "README.md").read_text()
    assert "| chance |" in readme and all(f"| {name} |" in readme for name in VLMS)


def test_trajectory_snapshots_load_and_have_cards():
    """Every ``shapes-llava(-run2)-step<N>`` snapshot is a loadable checkpoint at global step N, with a card
    that shows the options-restricted accuracy beside the first-token one."""
    snapshots = [n for n in VLMS if re.fullmatch(r"shapes-llava(-run2)?-step\d+", n)]
    assert len(snapshots) >= 20 + 6
    for name in snapshots:
        k = int(name.rsplit("step", 1)[1])
        model, processor = _load(name)
        assert model.config.zoo["steps"]["stage1"] + model.config.zoo["steps"].get("stage2", 0) == k
        assert processor.tokenizer.decode(processor.tokenizer("is there a red cross ?").input_ids[1:]) == \
            "is there a red cross ?"
        card = (MODELS_DIR / name / "README.md").read_text()
        assert "| accuracy (first token) | accuracy (options) |" in card, card


def test_chance_levels_match_the_options_of_the_held_out_questions():
    samples = make_samples(1400, EVAL_SEED)
    for question_type in QUESTION_TYPES:
        share = np.mean([1 / len(s.options) for s in samples if s.question_type == question_type])
        assert share == pytest.approx(chance_level(question_type), abs=0.02), question_type
    assert chance_levels()["overall"] == pytest.approx(np.mean([1 / len(s.options) for s in samples]), abs=0.01)
    with pytest.raises(ValueError, match="unknown question type"):
        chance_level("Describe")


def test_options_rule_puts_the_untrained_checkpoint_at_chance():
    """shapes-llava-step0 (random projector) describes instead of answering: 0 by the first token;
    restricted to each question's options it is at chance (Wilson 95% interval), overall and per type."""
    n = 280
    table = evaluate(_load("shapes-llava-step0"), n=n, seed=HELD_OUT, progress=False).set_index("question_type")
    assert (table["accuracy"] == 0).all(), table
    chance = chance_levels()
    for question_type, row in table.iterrows():
        low, high = wilson_interval(row["accuracy_options"] * row["n"], int(row["n"]))
        assert low <= chance[question_type] <= high, (question_type, row)
