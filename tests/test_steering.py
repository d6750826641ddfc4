"""Steering: the hook adds exactly alpha * vector, in forward and generate; evaluation and bad inputs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from analysis.capture import capture, generate_answers
from analysis.errors import InputError
from analysis.plots.representations import plot_steering_outcomes
from analysis.data.samples import Sample
from analysis.probes.steering import steer, steering_effect, steering_vector

FAMILY = "qwen2_vl"


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    rng = np.random.default_rng(11)
    qa = [("is there a red square ?", "yes", "Exist"), ("is the circle large ?", "no", "Exist"),
          ("what color is the circle ?", "red", "QueryAttr"), ("what shape is blue ?", "circle", "QueryAttr")]
    return [Sample(Image.fromarray(rng.integers(0, 256, (60, 60 + 10 * i, 3), dtype=np.uint8)), q, answer=a,
                   question_type=t, id=i) for i, (q, a, t) in enumerate(qa)]


def test_steering_vector_is_the_mean_difference():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(5, 6)), rng.normal(size=(3, 6)) + 2
    expected = target.mean(0) - source.mean(0)
    assert np.allclose(steering_vector(torch.tensor(source), target).numpy(), expected, atol=1e-6)
    with pytest.raises(InputError, match="non-empty"):
        steering_vector(np.zeros((0, 6)), target)
    with pytest.raises(InputError, match="width"):
        steering_vector(source, target[:, :4])


def test_steer_adds_alpha_times_vector_to_the_layer_output(tiny, samples):
    vlm = tiny(FAMILY)
    vector = torch.randn(vlm.hidden_size, generator=torch.Generator().manual_seed(0))
    kwargs = dict(sites=[("resid_post", 0), ("resid_pre", 1)], roles=["image", "question", "last"], pool=None,
                  batch_size=2, progress=False)
    plain = capture(vlm, samples[:2], **kwargs)
    with steer(vlm, vector, layer=0, alpha=2.5, positions="all"):
        steered = capture(vlm, samples[:2], **kwargs)
    with steer(vlm, vector, layer=0, alpha=2.5, positions="generated"):
        last_only = capture(vlm, samples[:2], **kwargs)
    for i in range(2):
        for role in ("image", "question", "last"):
            base = plain.get(role, 1, "resid_pre")[i]
            torch.testing.assert_close(steered.get(role, 1, "resid_pre")[i], base + 2.5 * vector)
            expected = base + 2.5 * vector if role == "last" else base
            torch.testing.assert_close(last_only.get(role, 1, "resid_pre")[i], expected)
            # the hook changes what layer 0 passes on, not how layer 0 computed it
            shifted = plain.get(role, 0, "resid_post")[i] + 2.5 * vector
            torch.testing.assert_close(steered.get(role, 0, "resid_post")[i], shifted)
    again = capture(vlm, samples[:2], **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(again.get("last", 1, "resid_pre"), plain.get("last", 1, "resid_pre"))), \
        "the hook must be removed on exit"


def test_steering_during_generation_and_hook_removal(tiny, samples):
    vlm = tiny(FAMILY)
    baseline = generate_answers(vlm, samples, max_new_tokens=3, batch_size=4, progress=False)
    with steer(vlm, torch.zeros(vlm.hidden_size), layer=1, alpha=3.0):
        unchanged = generate_answers(vlm, samples, max_new_tokens=3, batch_size=4, progress=False)
    assert unchanged["generated"].tolist() == baseline["generated"].tolist()
    before = dict(vlm.layers[1]._forward_hooks)  # transformers may keep hooks of its own there
    with pytest.raises(RuntimeError, match="inside"):
        with steer(vlm, torch.ones(vlm.hidden_size), layer=1, alpha=1.0):
            assert len(vlm.layers[1]._forward_hooks) == len(before) + 1
            raise RuntimeError("inside")
    assert dict(vlm.layers[1]._forward_hooks) == before, "the hook must be removed after an exception"


def test_steering_effect_counts_flips_changes_and_side_effects(tiny, samples):
    vlm = tiny(FAMILY)
    baseline = generate_answers(vlm, samples, max_new_tokens=2, batch_size=4, progress=False)
    source = baseline["word"][0]
    target = "circle" if source != "circle" else "square"
    # Pushing the last layer's output along the target token's unembedding row makes it the answer.
    vector = vlm.lm_head.weight[vlm.tokenizer.convert_tokens_to_ids(target)].detach()
    result = steering_effect(vlm, samples, vector, layer=-1, alphas=[0.0, 1000.0], source=source, target=target,
                             targeted_types=["Exist"], max_new_tokens=2, batch_size=4, progress=False)
    summary = result.summary.set_index("alpha")
    targeted = (baseline["question_type"] == "Exist") & (baseline["word"] == source)
    assert summary.loc[0.0, "n_targeted"] == targeted.sum() >= 1
    assert summary.loc[0.0, "flip_rate"] == 0 and summary.loc[0.0, "changed"] == 0
    assert summary.loc[1000.0, "flip_rate"] == 1.0
    steered = result.answers[result.answers.alpha == 1000.0]
    assert (steered["steered"] == target).all()
    correct = (steered["answer"] == target)[steered["untargeted"]]
    assert summary.loc[1000.0, "accuracy_untargeted"] == pytest.approx(correct.mean())
    assert summary.loc[1000.0, "n_untargeted"] == 2 and summary.loc[1000.0, "layer"] == vlm.n_layers - 1
    assert summary.loc[0.0, "accuracy_untargeted"] == summary.loc[0.0, "accuracy_untargeted_baseline"]
    fig = plot_steering_outcomes(result)
    assert len(fig.axes[0].patches) == 3 * 2
    plt.close(fig)


def test_bad_inputs_fail_clearly(tiny, samples):
    vlm = tiny(FAMILY)
    vector = torch.zeros(vlm.hidden_size)
    for kwargs, message in ((dict(alpha=float("nan")), "finite"), (dict(alpha=float("inf")), "finite"),
                            (dict(layer=vlm.n_layers), "out of range"), (dict(positions="prompt"), "positions"),
                            (dict(vector=torch.zeros(3)), "shape"),
                            (dict(vector=torch.full((vlm.hidden_size,), float("nan"))), "NaN")):
        args = dict(vector=vector, layer=0, alpha=1.0) | kwargs
        with pytest.raises(InputError, match=message):
            with steer(vlm, **args):
                pass
    with pytest.raises(InputError, match="finite"):
        steering_effect(vlm, samples, vector, 0, alphas=[1.0, float("-inf")], source="yes", target="no",
                        progress=False)
    with pytest.raises(InputError, match="gold answer"):
        steering_effect(vlm, [Sample(samples[0].image, "is it red ?")], vector, 0, [1.0], "yes", "no", progress=False)
