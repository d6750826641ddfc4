"""Knockout and logit lens against plain reference computations on every family's tiny model."""

from __future__ import annotations

import contextlib

import pandas as pd
import pytest
import torch

from analysis.errors import InputError
from analysis.models.answers import next_token_logits as last_logits
from analysis.probes.backend import Edges
from analysis.models.sites import hooked
from analysis.probes.knockout import knockout_logits, unmodified_run
from analysis.probes.reference import reference_knockout
from analysis.probes.flow import (
    block_positions,
    default_window,
    information_flow,
    knockout_probs,
    layer_windows,
    logit_lens,
    region_knockout,
)
from conftest import QUESTION, assert_detectable


# Knockouts are compared as log-probabilities of the answer token: the engines agree with the plain
# reference to ~4e-6 there (fp32), and every knockout that is not a structural no-op moves the
# log-probability by 3e-4 to 7 (tiny models with peaked outputs, see analysis.testing).
LOGP_TOL = 1e-5


def _configs(vlm, prepared):
    """Return (names, configs): the empty edge set, then four blocks x every one-layer window."""
    names, configs = ["none"], [[]]
    for block in ("question->last", "image->last", "last->last", "image->question"):
        sources, targets = block_positions(prepared, block)
        for _, layers in layer_windows(vlm.n_layers, 1):
            names.append((block, tuple(layers)))
            configs.append([Edges.make(sources, targets, layers)])
    return names, configs


def test_knockout_matches_reference_batched_and_prefix_reused(family, tiny, photo):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    logits = last_logits(vlm, prepared)
    token = int(logits.argmax())
    logp_base = torch.log_softmax(logits.double(), -1)[token]
    names, configs = _configs(vlm, prepared)
    reference = reference_knockout(vlm, prepared, configs, token).double().log()
    unbatched = knockout_probs(vlm, prepared, configs, token, batch_size=1, reuse_prefix=False).double().log()
    batched = knockout_probs(vlm, prepared, configs, token, batch_size=4, reuse_prefix=False).double().log()
    reused = knockout_probs(vlm, prepared, configs, token, batch_size=4, reuse_prefix=True).double().log()
    for engine in (unbatched, batched, reused):
        assert torch.allclose(engine, reference, atol=LOGP_TOL, rtol=0)
    effects = unbatched - logp_base
    # The empty edge set, and blocking image -> question in the last layer (question positions'
    # last-layer outputs feed nothing the last position reads), leave the answer as it was.
    no_op = torch.tensor([name == "none" or name == ("image->question", (vlm.n_layers - 1,)) for name in names])
    assert effects[no_op].abs().max() <= 1e-6
    # Every other knockout moves log p far beyond the tolerance, so a knockout that blocked
    # nothing (or the wrong edges) would fail the comparison with the reference above.
    assert_detectable(effects[~no_op], LOGP_TOL, factor=20, what="knockout effect on log p")
    blocks_nothing = logp_base.expand_as(reference)
    assert not torch.isclose(blocks_nothing, reference, atol=LOGP_TOL, rtol=0)[~no_op].any()


def test_empty_edge_set_is_the_unmodified_forward_exactly(family, tiny, photo):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    sources, targets = block_positions(prepared, "question->last")
    configs = [[], [Edges.make(sources, targets, [vlm.n_layers - 1])], [Edges.make(sources, targets, [])]]
    logits = knockout_logits(vlm, prepared, configs)
    stock = last_logits(vlm, prepared)
    assert torch.equal(logits[0], stock) and torch.equal(logits[2], stock)  # no layer named: nothing blocked
    assert (logits[1] - stock).abs().max() > 1e-3


def _attention_calls(vlm, run) -> list[tuple[int, int, int]]:
    """Run ``run()`` and return ``(layer, batch, query positions)`` of every decoder attention call."""
    calls = []
    with contextlib.ExitStack() as stack:
        for index, layer in enumerate(vlm.layers):
            def pre(args, kwargs, index=index):
                hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
                calls.append((index, hidden.shape[0], hidden.shape[1]))
            stack.enter_context(hooked(layer.self_attn, pre=pre))
        run()
    return calls


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "paligemma"])
def test_knockout_computes_only_the_layers_and_positions_a_configuration_changes(family, tiny, photo):
    """A block from layer s on recomputes layers >= s only; with a causal prompt only the positions
    from its first blocked query (one for ->last), over the unmodified cache; the prefix-LM family
    (PaliGemma) recomputes every position, still from layer s."""
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    top = vlm.n_layers - 1
    last = block_positions(prepared, "image->last")
    question = block_positions(prepared, "image->question")
    unmodified = unmodified_run(vlm, prepared, int(question[1].min()) if family != "paligemma" else 0)
    configs = [[Edges.make(*last, [top])], [Edges.make(*question, [1, top])], [Edges.make(*last, [top])]]
    if family == "paligemma":
        calls = _attention_calls(vlm, lambda: knockout_logits(vlm, prepared, configs, batch_size=2,
                                                              unmodified=unmodified))
        # sorted by first layer: [question @1, last @top], then [last @top]
        assert calls == [(layer, 2, prepared.length) for layer in range(1, vlm.n_layers)] + [(top, 1, prepared.length)]
    else:
        configs.append([Edges.make(*last, [0])])
        calls = _attention_calls(vlm, lambda: knockout_logits(vlm, prepared, configs, batch_size=2,
                                                              unmodified=unmodified))
        # by first position: the question one from layer 1; then the ->last ones (one position each, so
        # merged across first layers): [last @0, last @top] from layer 0, then [last @top]
        n_question = prepared.length - int(question[1].min())
        assert calls == ([(layer, 1, n_question) for layer in range(1, vlm.n_layers)]
                         + [(layer, 2, 1) for layer in range(vlm.n_layers)] + [(top, 1, 1)])
    assert torch.allclose(knockout_logits(vlm, prepared, configs, reuse_prefix=False, batch_size=1),
                          knockout_logits(vlm, prepared, configs, unmodified=unmodified), atol=1e-5, rtol=0)
    if family != "paligemma":  # states kept from too late a position cannot serve the question block
        with pytest.raises(InputError, match=r"unmodified_run\(vlm, prepared, \d+\)"):
            knockout_logits(vlm, prepared, configs, unmodified=unmodified_run(vlm, prepared, prepared.last_position))


def test_information_flow_table(tiny, photo):
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    answer = vlm.tokenizer.decode([int(last_logits(vlm, prepared).argmax())]).strip()
    samples = [{"image": photo, "question": QUESTION, "answer": answer, "boxes": [(0, 0, 100, 75)], "question_type": "QueryAttr"}]
    result = information_flow(vlm, samples, blocks=("image->last", "related->question", "other->question"), window=1,
                              progress=False)
    frame = result.frame
    assert len(frame) == 3 * vlm.n_layers
    assert result.n_correct == 1
    row = frame.iloc[0]
    assert row["change"] == pytest.approx(100 * (row["p_new"] - row["p_base"]) / row["p_base"])
    sources_related, _ = block_positions(prepared, "related->question", [(0, 0, 100, 75)])
    sources_other, _ = block_positions(prepared, "other->question", [(0, 0, 100, 75)])
    assert len(sources_related) + len(sources_other) == len(prepared.image_positions)
    assert information_flow(vlm, samples, blocks=("image->last",), progress=False).window == 1  # 2 layers
    wrong = [dict(samples[0], answer="zebra")]
    with pytest.raises(InputError, match="none of the 1 samples"):
        information_flow(vlm, wrong, window=1, progress=False)
    width, height = photo.size
    everything = [dict(samples[0], id="whole", boxes=[(0, 0, width, height)])]
    result = information_flow(vlm, samples + everything, blocks=("related->question", "other->question"), window=1,
                              progress=False)
    frame = result.frame
    assert result.skipped == [{"sample": "whole", "block": "other->question"}]
    assert len(frame[frame["sample"] == "whole"]) == vlm.n_layers  # its related->question rows are kept
    with pytest.raises(InputError, match="no other patches"):
        information_flow(vlm, everything, blocks=("other->question",), window=1, progress=False)


def test_layer_windows():
    assert [default_window(n) for n in (1, 2, 4, 16, 32, 40, 80)] == [1, 1, 1, 4, 9, 11, 22]
    assert [list(r) for _, r in layer_windows(4, 3)] == [[0, 1], [0, 1, 2], [1, 2, 3], [2, 3]]
    assert [list(r) for _, r in layer_windows(4, 4)][0] == [0, 1]
    with pytest.raises(InputError, match="window"):
        layer_windows(4, 9)


def test_flow_bad_input(tiny, photo):
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    with pytest.raises(InputError, match="ground-truth region"):
        block_positions(prepared, "related->question", None)
    with pytest.raises(InputError, match="unknown edge set"):
        block_positions(prepared, "image->nowhere")
    with pytest.raises(InputError, match="at least one source"):
        Edges.make([], [1], [0])
    with pytest.raises(InputError, match="needs each sample's answer"):
        information_flow(vlm, [{"image": photo, "question": QUESTION}], window=1, progress=False)


def test_logit_lens_last_layer_is_the_model_output(family, tiny, photo):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    probs = torch.softmax(last_logits(vlm, prepared), -1)
    frame = logit_lens(vlm, [{"image": photo, "question": QUESTION, "answer": "red", "foil": "blue"}], progress=False)
    assert set(frame["tracked"]) >= {"prediction", "answer", "foil"}
    last = frame[(frame["layer"] == vlm.n_layers - 1)].set_index("tracked")
    assert last.loc["prediction", "prob"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert last.loc["prediction", "rank"] == 0
    red = vlm.tokenizer.convert_tokens_to_ids("red")
    assert last.loc["answer", "prob"] == pytest.approx(float(probs[red]), abs=1e-5)
    raw = logit_lens(vlm, [{"image": photo, "question": QUESTION}], final_norm=False, progress=False)
    assert isinstance(raw, pd.DataFrame) and len(raw) == vlm.n_layers


def test_logit_lens_equals_unembedded_hidden_states(family, tiny, photo):
    """Plain reference: the model's own hidden states (output_hidden_states), final norm, unembedding."""
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    with torch.no_grad():
        out = vlm.model(**prepared.inputs, output_hidden_states=True)
        decoder, unembed = vlm.model.get_decoder(), vlm.model.get_output_embeddings()
        states = [h[0, -1] for h in out.hidden_states[1:-1]]  # resid_post of layers 0 .. n-2
        normed = [torch.log_softmax(unembed(decoder.norm(h)).double(), -1) for h in states]
        normed.append(torch.log_softmax(out.logits[0, -1].double(), -1))  # the last layer is the output
        raw = [torch.log_softmax(unembed(h).double(), -1) for h in states]
    token = int(out.logits[0, -1].argmax())
    sample = [{"image": photo, "question": QUESTION}]
    for final_norm, reference in ((True, normed), (False, raw)):
        frame = logit_lens(vlm, sample, final_norm=final_norm, progress=False)
        lens = frame[frame["tracked"] == "prediction"].sort_values("layer")
        expected = torch.stack([r[token] for r in reference])
        got = torch.tensor(lens["prob"].to_numpy()[: len(expected)], dtype=torch.float64).log()
        assert torch.allclose(got, expected, atol=LOGP_TOL, rtol=0)
    # Reading a neighbouring layer instead would fail: adjacent layers differ far beyond the tolerance.
    log_probs = torch.stack([r[token] for r in normed])
    assert_detectable(log_probs.diff(), LOGP_TOL, what="difference between adjacent layers' log p")


def test_logit_lens_batched_equals_one_input_at_a_time(family, tiny, photo):
    """Inputs of equal token length run as one batch: every row equals the input's own forward (same images
    size, other pixels; one longer question in between), in the order given."""
    from analysis.models.inputs import length_batches

    vlm = tiny(family)
    images = [photo, photo.transpose(0), photo.rotate(180), photo.convert("L").convert("RGB")]
    samples = [{"image": image, "question": QUESTION, "answer": "red", "id": f"s{i}"} for i, image in enumerate(images)]
    samples.insert(2, {"image": photo, "question": QUESTION + " in the picture", "id": "longer"})
    lengths = [vlm.prepare(s["image"], s["question"]).length for s in samples]
    assert max(len(b) for b in length_batches(lengths, 4)) > 1  # a real batch forms
    batched = logit_lens(vlm, samples, positions=("question", "last"), batch_size=4, progress=False)
    alone = pd.concat([logit_lens(vlm, [s], positions=("question", "last"), progress=False) for s in samples],
                      ignore_index=True)
    pd.testing.assert_frame_equal(batched.drop(columns="prob"), alone.drop(columns="prob"))
    assert (batched["prob"] - alone["prob"]).abs().max() <= 1e-6
    # A row read from another input of the batch would be noticed: the inputs' probabilities differ far more.
    last = alone[(alone["role"] == "last") & (alone["tracked"] == "prediction")].pivot(index="layer", columns="sample",
                                                                                        values="prob")
    assert (last["s0"] - last["s1"]).abs().max() > 100 * 1e-6


def test_knockout_sweep_reads_the_logit_lens_from_its_own_forwards(family, tiny, photo):
    """information_flow(lens=True) gives logit_lens's frame (kept samples, last position, final norm) with
    no forward of its own: as many model forwards as the sweep without the lens."""
    vlm = tiny(family)
    images = [photo, photo.transpose(0), photo.rotate(180)]
    answers = [vlm.tokenizer.decode([int(last_logits(vlm, vlm.prepare(image, QUESTION)).argmax())]).strip()
               for image in images]
    samples = [{"image": image, "question": QUESTION, "answer": answer, "foil": "blue", "id": f"s{i}"}
               for i, (image, answer) in enumerate(zip(images, answers))]
    samples.append({"image": photo.convert("L").convert("RGB"), "question": QUESTION, "answer": "nothing-like-it",
                    "id": "wrong"})  # answered wrongly: kept by neither

    def forwards(**options):
        calls = []
        with hooked(vlm.model, pre=lambda args, kwargs: calls.append(1)):
            result = information_flow(vlm, samples, blocks=("image->last", "question->last"), window=1,
                                      batch_size=8, progress=False, **options)
        return result, len(calls)

    with_lens, n_with = forwards(lens=True)
    without, n_without = forwards()
    assert n_with == n_without and without.lens is None
    reference = logit_lens(vlm, samples, only_correct=True, progress=False)
    assert set(reference["sample"]) == {"s0", "s1", "s2"}
    pd.testing.assert_frame_equal(with_lens.lens.drop(columns="prob"), reference.drop(columns="prob"))
    assert (with_lens.lens["prob"] - reference["prob"]).abs().max() <= 1e-6
    assert with_lens.select("image->last").lens is with_lens.lens
    # A state read from the neighbouring layer would be noticed: adjacent layers differ far more.
    prediction = reference[(reference["tracked"] == "prediction") & (reference["sample"] == "s0")]
    assert_detectable(torch.tensor(prediction["prob"].to_numpy()).diff(), 1e-6, what="adjacent layers' p")


def test_one_sweep_over_several_edge_sets_splits_into_the_separate_sweeps(tiny, photo):
    """KnockoutResult.select gives exactly what a sweep over only those edge sets gives."""
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    answer = vlm.tokenizer.decode([int(last_logits(vlm, prepared).argmax())]).strip()
    width, height = photo.size
    samples = [{"image": photo, "question": QUESTION, "answer": answer, "boxes": [(0, 0, 100, 75)], "id": "part"},
               {"image": photo, "question": QUESTION, "answer": answer, "boxes": [(0, 0, width, height)], "id": "all"}]
    first, second = ("image->last", "question->last"), ("related->question", "other->question")
    both = information_flow(vlm, samples, blocks=first + second, window=1, progress=False)
    for blocks in (first, second):
        alone = information_flow(vlm, samples, blocks=blocks, window=1, progress=False)
        part = both.select(blocks)
        pd.testing.assert_frame_equal(part.frame, alone.frame, check_exact=True)
        assert (part.n_samples, part.n_correct, part.window, part.skipped) == (
            alone.n_samples, alone.n_correct, alone.window, alone.skipped)
    assert both.select(second).skipped == [{"sample": "all", "block": "other->question"}]
    assert both.select("image->last").frame.equals(both.select(["image->last"]).frame)
    with pytest.raises(InputError, match="no edge sets"):
        both.select(["last->last"])
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        logit_lens(vlm, samples, batch_size=0, progress=False)


def test_region_knockout_blocks_as_many_other_patches(tiny, photo):
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    answer = vlm.tokenizer.decode([int(last_logits(vlm, prepared).argmax())]).strip()
    box = (25, 0, 60, 40)
    frame = region_knockout(vlm, [{"image": photo, "question": QUESTION, "answer": answer, "boxes": [box]}],
                            progress=False).frame
    row = frame.iloc[0]
    assert bool(row["correct_base"])
    assert row["n_related"] == len(prepared.related_positions([box])) == row["n_other_blocked"]
    with pytest.raises(InputError, match="has no answer"):
        region_knockout(vlm, [{"image": photo, "question": QUESTION, "boxes": [box]}], progress=False)
    whole = {"image": photo, "question": QUESTION, "answer": answer, "boxes": [(0, 0, *photo.size)], "id": "whole"}
    result = region_knockout(vlm, [{"image": photo, "question": QUESTION, "answer": answer, "boxes": [box]}, whole],
                             progress=False)
    assert len(result.frame) == 1 and result.skipped == ["whole"]
    with pytest.raises(InputError, match="every patch"):
        region_knockout(vlm, [whole], progress=False)


def test_region_knockout_on_the_patch_local_zoo_model_is_exact_ground_truth():
    """shapes-llava-local sees an object only through its own patches: cutting those off must bring
    accuracy to chance, cutting off as many other patches must leave it intact."""
    from analysis.data.shapes import make_samples
    from analysis.models import load_vlm

    samples = make_samples(140, seed=7)
    result = region_knockout(load_vlm("zoo:shapes-llava-local", device="cpu"), samples, progress=False).frame
    chance = sum(1 / len(s.options) for s in samples) / len(samples)
    assert result["correct_base"].mean() >= 0.95
    assert result["correct_related_blocked"].mean() <= chance + 0.05
    assert result["correct_other_blocked"].mean() >= result["correct_base"].mean() - 0.02
