"""Hidden-state capture against per-sample ``output_hidden_states`` on every family's tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.capture import AllDroppedError, capture, generate_answers
from analysis.models.answers import answer_tokens, choose_option, choose_options, is_correct_option
from analysis.errors import InputError
from analysis.data.samples import Sample
from conftest import assert_detectable

QUESTIONS = ("what color is the circle ?", "is there a red square left of the blue circle ?")


@pytest.fixture(scope="module")
def two_samples(photo) -> list[Sample]:
    """Two samples with different image sizes (landscape / portrait) and prompt lengths."""
    portrait = Image.fromarray(np.random.default_rng(1).integers(0, 256, (180, 120, 3), dtype=np.uint8))
    return [Sample(photo, QUESTIONS[0], answer="red", id="a"), Sample(portrait, QUESTIONS[1], answer="yes", id="b")]


def _reference_states(vlm, sample: Sample):
    """Per-sample forward, gold answer appended; returns (prepared, hidden states, last-prompt logits)."""
    prepared = vlm.prepare(sample.image, sample.question)
    inputs = dict(prepared.inputs)
    ids = torch.tensor([answer_tokens(vlm, prepared.prompt, sample.answer).ids])
    for key, fill in (("input_ids", None), ("attention_mask", 1), ("token_type_ids", 1), ("mm_token_type_ids", 0)):
        if key in inputs:
            extra = ids if fill is None else torch.full_like(ids, fill, dtype=inputs[key].dtype)
            inputs[key] = torch.cat([inputs[key], extra], dim=1)
    with torch.no_grad():
        out = vlm.model(**inputs, output_hidden_states=True)
    return prepared, out.hidden_states, out.logits[0, prepared.length - 1]


def _atol(states: torch.Tensor) -> float:
    """Tolerance of a batched (left-padded) capture against a single forward: fp32 rounding, which
    scales with the states' magnitude (up to ~25 in the tiny models' residual stream); the largest
    gap measured is 1.2e-5 of it (LLaVA-NeXT on 336 px tiles, 1368 image tokens, after the final norm)."""
    return 2e-5 * float(states.abs().max())


def test_capture_equals_output_hidden_states_and_pooling(family, tiny, two_samples, tmp_path):
    """Batched (left-padded, two image sizes) capture == per-sample hidden states; pooled == manual; cached."""
    vlm = tiny(family)
    roles = ["image", "question", "last", "answer", "question+answer"]
    kinds = ("resid_pre", "attn_out", "mlp_out", "resid_post")
    raw = capture(vlm, two_samples, roles=roles, kinds=kinds, pool=None, batch_size=2, progress=False)
    n = vlm.n_layers
    for i, sample in enumerate(two_samples):
        prepared, states, logits = _reference_states(vlm, sample)
        # Reading a neighbouring layer would fail: adjacent layers' states differ far beyond the tolerance.
        assert_detectable([(a - b).abs().max() for a, b in zip(states[1:], states[:-1])],
                          max(_atol(h) for h in states), what="difference between adjacent layers' states")
        positions = {role: prepared.positions(role) for role in ("image", "question", "last")}
        positions["answer"] = torch.arange(prepared.length, states[0].shape[1])
        positions["question+answer"] = torch.cat([positions["question"], positions["answer"]])
        for role in roles:
            pos = positions[role]
            for layer in range(n):
                out = raw.get(role, layer)[i]
                if layer == n - 1:  # transformers 5 returns the last hidden state after the final norm
                    with torch.no_grad():
                        out = vlm.final_norm(out)
                torch.testing.assert_close(out, states[layer + 1][0, pos], atol=_atol(states[layer + 1]), rtol=1e-4)
                torch.testing.assert_close(raw.get(role, layer, "resid_pre")[i], states[layer][0, pos],
                                           atol=_atol(states[layer]), rtol=1e-4)
                summed = sum(raw.get(role, layer, p)[i] for p in ("resid_pre", "attn_out", "mlp_out"))
                torch.testing.assert_close(summed, raw.get(role, layer)[i], atol=1e-5, rtol=1e-5)
        assert raw.meta["prediction_id"][i] == int(logits.argmax())

    counter = _count_forwards(vlm)
    try:
        pooled = capture(vlm, two_samples, roles=roles, pool="mean", batch_size=2, cache=tmp_path, progress=False)
        for role in roles:
            manual = torch.stack([x.mean(0) for x in raw.get(role, n - 1)])
            torch.testing.assert_close(pooled.get(role, n - 1), manual, atol=1e-5, rtol=1e-5)
        assert counter["n"] == 1
        again = capture(vlm, two_samples, roles=roles, pool="mean", batch_size=2, cache=tmp_path, progress=False)
        assert counter["n"] == 1, "a cached capture must not call the model"
        assert again.meta["cached"].all()
        for key, value in pooled.features.items():
            assert torch.equal(again.features[key], value)
    finally:
        counter["handle"].remove()


def test_max_pooling_equals_manual(tiny, two_samples):
    vlm = tiny("qwen2_vl")
    kwargs = dict(roles=["image", "question+last"], layers=[0], batch_size=2, progress=False)
    raw, pooled = (capture(vlm, two_samples, pool=pool, **kwargs) for pool in (None, "max"))
    for role in kwargs["roles"]:
        torch.testing.assert_close(pooled.get(role, 0), torch.stack([x.amax(0) for x in raw.get(role, 0)]))


def _count_forwards(vlm) -> dict:
    counter = {"n": 0}
    counter["handle"] = vlm.model.register_forward_pre_hook(lambda *a: counter.__setitem__("n", counter["n"] + 1))
    return counter


OPTIONS = (("blue", "red", "green"), ("yes", "no"))


def test_options_choice_equals_a_separate_forward_over_the_prompts(family, tiny, two_samples, tmp_path):
    """Rule "options" read from the capture's own forward (prompt + teacher-forced answer, left-padded
    batch) == ``choose_options`` on a separate forward over the prompts alone, each prompt unpadded:
    the appended answer never changes the last prompt position (PaliGemma's bidirectional prefix
    included: the answer is its causal suffix). Cached with the options in the key."""
    vlm = tiny(family)
    kwargs = dict(roles=["answer"], layers=[0], batch_size=2, cache=tmp_path, progress=False)
    acts = capture(vlm, two_samples, options=OPTIONS, **kwargs)
    prepared = [vlm.prepare(s.image, s.question) for s in two_samples]
    assert len({p.length for p in prepared}) == 2, "the reference must run each prompt unpadded"
    separate = choose_options(vlm, prepared, OPTIONS, batch_size=2)
    assert acts.meta["option"].tolist() == [c.choice for c in separate]
    assert acts.meta["correct_option"].tolist() == [is_correct_option(s.answer, c)
                                                    for s, c in zip(two_samples, separate)]
    for got, choice in zip(acts.meta["option_scores"], separate):
        torch.testing.assert_close(torch.tensor(got), torch.tensor(choice.scores), atol=1e-5, rtol=1e-5)
    # The comparison would see logits read one position off (at the token before the last prompt one).
    for p, options, choice in zip(prepared, OPTIONS, separate):
        with torch.no_grad():
            before = vlm.model(**p.inputs).logits[0, -2].float()
        off = choose_option(vlm, p, options, logits=before)
        assert_detectable(torch.tensor(off.scores) - torch.tensor(choice.scores), 1e-5,
                          what="change of an option's logit one position earlier")
    again = capture(vlm, two_samples, options=OPTIONS, **kwargs)
    assert again.meta["cached"].all() and again.meta["option_scores"].tolist() == acts.meta["option_scores"].tolist()
    swapped = capture(vlm, two_samples, options=[o[::-1] for o in OPTIONS], **kwargs)
    assert not swapped.meta["cached"].any() and swapped.meta["option"].tolist() == acts.meta["option"].tolist()
    assert "option" not in capture(vlm, two_samples, **kwargs).meta


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "paligemma"])
def test_generated_roles_equal_generation_states(family, tiny, two_samples):
    """Teacher-forcing the generated tokens gives generation's own hidden states at each step."""
    vlm = tiny(family)
    acts = capture(vlm, two_samples, roles=["generated", "last"], layers=[0], pool=None, max_new_tokens=3,
                   batch_size=2, progress=False)
    assert acts.dropped.empty
    for i, sample in enumerate(two_samples):
        prepared = vlm.prepare(sample.image, sample.question)
        with torch.no_grad():
            out = vlm.model.generate(**prepared.inputs, max_new_tokens=3, do_sample=False, output_hidden_states=True,
                                     return_dict_in_generate=True, pad_token_id=vlm.tokenizer.pad_token_id)
        got = acts.get("generated", 0)[i]
        reference = torch.stack([out.hidden_states[k][1][0, -1] for k in range(len(got))])
        torch.testing.assert_close(got, reference, atol=_atol(reference), rtol=1e-4)
        torch.testing.assert_close(got[:1], acts.get("last", 0)[i])
        generated = out.sequences[0, prepared.length:].tolist()
        text = vlm.tokenizer.decode(generated[: len(got)], skip_special_tokens=True).strip()
        assert acts.meta["generated"][i] == text


def test_token_of_interest_and_dropped_samples(tiny, two_samples, tmp_path):
    vlm = tiny("qwen2_vl")
    samples = [*two_samples, Sample(Image.new("RGB", (100, 100)), QUESTIONS[0], answer="red", id="c")]
    answers = generate_answers(vlm, samples, max_new_tokens=4, batch_size=3, progress=False)
    words = [[w.lower() for w in text.split()] for text in answers["generated"]]
    word = next(w for w in words[0] if w not in words[2])  # generated for sample "a", not for "c"
    expected = [s.id for s, w in zip(samples, words) if word in w]
    kwargs = dict(roles=["token_of_interest"], layers=[1], max_new_tokens=4, token_of_interest=word.upper(),
                  batch_size=3, cache=tmp_path, progress=False)
    acts = capture(vlm, samples, **kwargs)
    assert acts.ids == expected and "c" in acts.dropped["sample"].tolist()
    counter = _count_forwards(vlm)
    try:
        cached = capture(vlm, samples, **kwargs)  # drops are cached too: no generation, no forward
    finally:
        counter["handle"].remove()
    assert counter["n"] == 0 and cached.dropped.equals(acts.dropped)
    assert torch.equal(cached.get("token_of_interest", 1), acts.get("token_of_interest", 1))
    assert len(acts.dropped) == len(samples) - len(expected)
    assert acts.dropped["reason"].str.contains("no token of interest").all()
    generated = capture(vlm, samples[:1], roles=["generated"], layers=[1], pool=None, max_new_tokens=4,
                        progress=False)
    at_word = generated.get("generated", 1)[0][words[0].index(word)]
    torch.testing.assert_close(acts.get("token_of_interest", 1)[0], at_word)
    with pytest.raises(AllDroppedError, match="all 3 samples were dropped"):
        capture(vlm, samples, roles=["token_of_interest"], layers=[1], token_of_interest="zebra", progress=False)


def test_bad_requests_fail_clearly(tiny, two_samples):
    vlm = tiny("qwen2_vl")
    bad = [
        (dict(layers=[vlm.n_layers]), "out of range"),
        (dict(kinds=("residual",)), "unknown site"),
        (dict(roles=["caption"]), "unknown role"),
        (dict(pool="median"), "pool must be"),
        (dict(roles=["answer", "generated"]), "exclude each other"),
        (dict(roles=["token_of_interest"]), "needs token_of_interest"),
        (dict(batch_size=0), "batch_size"),
        (dict(options=[("yes", "no")]), "one option list per sample"),
        (dict(options=[("yes",), ("yes", "no")]), "at least 2 candidate answers"),
    ]
    for kwargs, message in bad:
        with pytest.raises(InputError, match=message):
            capture(vlm, two_samples, progress=False, **kwargs)
    with pytest.raises(InputError, match="gold answer"):
        capture(vlm, [Sample(two_samples[0].image, QUESTIONS[0])], roles=["answer"], progress=False)
