"""Representation shift against plain reference computations on small synthetic data, and bad inputs."""

from __future__ import annotations

import itertools
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.decomposition import DictionaryLearning

from analysis.errors import InputError
from analysis.plots.representations import plot_concept_grid, plot_consistency_vs_recovery, plot_recovery
from analysis.data.samples import Sample
from analysis.probes.shift import check_compatible, concept_shift, decompose, match_concepts, representation_shift
from analysis.testing import tiny_vlm


def _clusters(seed=0, n=60, d=12, k=3):
    """Base features in ``k`` clusters and fine-tuned ones moved by a per-cluster shift plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    labels = np.repeat(np.arange(k), n // k)
    base = centres[labels] + rng.normal(size=(n, d)) * 0.3
    shifts = rng.normal(size=(k, d)) * 2
    return base, base + shifts[labels] + rng.normal(size=(n, d)) * 0.3


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_kmeans_shift_matches_a_plain_reference():
    a, b = _clusters()
    result = concept_shift(a, b, n_concepts=3, method="kmeans", seed=0)
    km_a = KMeans(3, n_init=10, random_state=0).fit(a)
    km_b = KMeans(3, n_init=10, random_state=0).fit(b)
    u_a, u_b = km_a.cluster_centers_, km_b.cluster_centers_
    assigned = np.argmin(((a[:, None] - u_a[None]) ** 2).sum(-1), axis=1)
    assert np.array_equal(result.assignments["concept"], assigned)
    best = max(itertools.permutations(range(3)), key=lambda p: sum(_cos(u_a[k], u_b[p[k]]) for k in range(3)))
    assert list(result.match) == list(best)
    table = result.concepts.set_index("concept")
    for k in range(3):
        deltas = (b - a)[assigned == k]
        shifted = u_a[k] + deltas.mean(0)
        assert np.allclose(result.shifted[k], shifted)
        target = u_b[best[k]]
        assert table.loc[k, "cos_base"] == pytest.approx(_cos(target, u_a[k]))
        assert table.loc[k, "cos_shifted"] == pytest.approx(_cos(target, shifted))
        assert table.loc[k, "recovery"] == pytest.approx(_cos(target, shifted) - _cos(target, u_a[k]))
        pairs = [_cos(x, y) for i, x in enumerate(deltas) for j, y in enumerate(deltas) if i != j]
        assert table.loc[k, "consistency"] == pytest.approx(np.mean(pairs))
        assert table.loc[k, "magnitude"] == pytest.approx(np.linalg.norm(deltas, axis=1).mean())
        assert table.loc[k, "shift_norm"] == pytest.approx(np.linalg.norm(deltas.mean(0)))
        assert table.loc[k, "n_samples"] == (assigned == k).sum()
    # A planted, consistent per-cluster shift is recovered almost exactly.
    assert result.summary()["mean_recovery"] > 0 and (table["cos_shifted"] > 0.99).all()
    for fig in (plot_recovery(result), plot_consistency_vs_recovery(result)):
        plt.close(fig)


def test_snmf_uses_dictionary_learning_with_non_negative_codes():
    a, _ = _clusters(seed=1, n=30, d=8)
    concepts = decompose(a, n_concepts=3, method="snmf", seed=0, sparsity=0.1, max_iter=30)
    alpha = 0.1 * np.median(np.linalg.norm(a, axis=1))
    reference = DictionaryLearning(n_components=3, alpha=alpha, positive_code=True, fit_algorithm="cd",
                                   transform_algorithm="lasso_cd", transform_alpha=alpha, max_iter=30,
                                   random_state=0)
    codes = reference.fit(a).transform(a)
    assert np.allclose(concepts.dictionary, reference.components_) and np.allclose(concepts.activations, codes)
    assert (concepts.activations >= 0).all()
    assert np.allclose(concepts.activate(a), codes, atol=1e-6)


def test_snmf_shift_is_per_unit_of_activation():
    a, b = _clusters(seed=4, n=30, d=8)
    result = concept_shift(a, b, n_concepts=3, method="snmf", seed=0)
    codes = result.base.activations
    assigned = result.assignments["concept"].to_numpy()
    for k in range(3):
        members = assigned == k
        if members.any():
            expected = result.base.dictionary[k] + ((b - a)[members] / codes[members, k][:, None]).mean(0)
            assert np.allclose(result.shifted[k], expected)
    assert ((assigned >= 0) == (codes.max(1) > 0)).all()


def test_hungarian_matching_beats_every_permutation():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    match = match_concepts(a, b)
    score = lambda p: sum(_cos(a[k], b[p[k]]) for k in range(4))  # noqa: E731
    assert score(match) == pytest.approx(max(score(p) for p in itertools.permutations(range(4))))


def test_concept_without_samples_has_no_recovery():
    a, b = _clusters(seed=3, n=30)
    a = np.vstack([a, a[:1] + 100.0])  # an outlier cluster of one sample
    b = np.vstack([b, b[:1] + 100.0])
    result = concept_shift(a, b, n_concepts=4, seed=0)
    assert result.concepts["n_samples"].sum() == len(a)
    single = result.concepts[result.concepts["n_samples"] == 1]
    assert len(single) == 1 and single["consistency"].isna().all()


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    rng = np.random.default_rng(7)
    questions = ["what color is the circle ?", "is there a red square ?", "how many shapes are there ?",
                 "what shape is red ?", "is the square large ?", "what color is the square ?"]
    return [Sample(Image.fromarray(rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)), q, question_type=f"t{i % 2}",
                   id=f"s{i}") for i, q in enumerate(questions)]


def test_representation_shift_between_two_tiny_models(tiny, samples):
    base, finetuned = tiny("qwen2_vl"), tiny_vlm("qwen2_vl", seed=1)
    result = representation_shift(base, finetuned, samples, layer=-1, n_concepts=2, top_words=3, top_images=2,
                                  batch_size=6, progress=False)
    assert result.layer == base.n_layers - 1 and len(result.assignments) == len(samples)
    assert result.base_features.shape == (len(samples), base.hidden_size)
    words = result.words
    assert set(words["model"]) == {"base", "shifted", "finetuned"} and set(words["final_norm"]) == {True, False}
    assert (words.groupby(["model", "concept", "final_norm"]).size() == 3).all()
    special = set(base.tokenizer.all_special_tokens)
    assert not set(words["token"]) & special
    assert (result.images.groupby(["model", "concept"]).size() == 2).all()
    assert {"words_base", "word_overlap_shifted", "image_overlap_base"} <= set(result.concepts.columns)
    assert result.concepts["word_overlap_base"].between(0, 1).all()
    assert [s.id for s in result.samples] == result.assignments["sample"].tolist()
    fig = plot_concept_grid(result, model="shifted", n_images=2)
    assert len(fig.axes) == 2 * 3
    plt.close(fig)
    with pytest.raises(InputError, match="grounded"):
        plot_concept_grid(concept_shift(result.base_features, result.finetuned_features, n_concepts=2))


def test_bad_inputs_fail_clearly(tiny, samples):
    base = tiny("llava")
    for other, what in ((tiny_vlm("llava", text=dict(hidden_size=96, head_dim=24)), "hidden size: 64 vs 96"),
                        (tiny_vlm("llava", text=dict(num_hidden_layers=3)), "decoder layers: 2 vs 3"),
                        (tiny("qwen2_vl"), "family")):
        with pytest.raises(InputError, match=what):
            check_compatible(base, other)
        with pytest.raises(InputError, match="different architectures"):
            representation_shift(base, other, samples, layer=0, progress=False)
    base = tiny("qwen2_vl")
    with pytest.raises(InputError, match="out of range"):
        representation_shift(base, base, samples, layer=base.n_layers, progress=False)
    with pytest.raises(InputError, match=r"no sample is valid in both models \(6 of 6 dropped"):
        representation_shift(base, base, samples, layer=0, features="token_of_interest", token_of_interest="zebra",
                             max_new_tokens=2, progress=False)
    with pytest.raises(InputError, match="n_concepts"):
        concept_shift(np.ones((3, 4)), np.ones((3, 4)), n_concepts=5)
    with pytest.raises(InputError, match="same shape"):
        concept_shift(np.ones((3, 4)), np.ones((3, 5)), n_concepts=2)
    with pytest.raises(InputError, match="NaN"):
        concept_shift(np.full((3, 4), np.nan), np.ones((3, 4)), n_concepts=2)


def test_samples_without_the_token_of_interest_are_dropped_and_reported(tiny, samples):
    from analysis.capture import generate_answers

    base = tiny("qwen2_vl")
    mixed = [*samples[:3], Sample(Image.new("RGB", (100, 100)), samples[0].question, id="black")]
    answers = generate_answers(base, mixed, max_new_tokens=3, progress=False)
    words = [set(t.lower().split()) for t in answers["generated"]]
    word = sorted(words[0] - words[-1])[0]
    result = representation_shift(base, base, mixed, layer=0, features="token_of_interest",
                                  token_of_interest=word.upper(), n_concepts=1, max_new_tokens=3, progress=False)
    expected = {s.id for s, w in zip(mixed, words) if word not in w}
    assert "black" in expected
    assert result.dropped.groupby("model")["sample"].apply(set).to_dict() == {"base": expected, "finetuned": expected}
    assert set(result.assignments["sample"]) == {s.id for s in mixed} - expected
