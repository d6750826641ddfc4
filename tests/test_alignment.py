"""Implicit alignment against plain loops on synthetic states; the score-vs-accuracy correlation."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats

from analysis.errors import InputError
from analysis.plots.representations import plot_alignment_curves, plot_score_vs_accuracy, plot_token_norms
from analysis.probes.alignment import (
    _derangement,
    alignment_scores,
    alignment_vs_accuracy,
    correlate,
    implicit_alignment,
    options_accuracy,
)
from analysis.data.samples import Sample
from analysis.testing import tiny_vlm


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _reference(image, text, seed):
    """Every score with plain Python loops over samples, layers and tokens."""
    n, n_states = len(image), image[0].shape[0]
    perm = _derangement(n, seed)
    p = [[x[s].mean(0) for s in range(n_states)] for x in image]
    t = [[x[s].mean(0) for s in range(n_states)] for x in text]
    ref = {}
    for i in range(n):
        for s in range(n_states):
            ref["alignment", "P-T", "matched", i, s] = _cos(p[i][s], t[i][s])
            ref["alignment", "P-T", "all pairs", i, s] = np.mean([_cos(p[i][s], t[m][s]) for m in range(n)])
            ref["alignment", "P-T", "shuffled", i, s] = _cos(p[i][s], t[perm[i]][s])
            ref["alignment", "P-T", "image at embed", i, s] = _cos(p[i][0], t[i][s])
            sims = np.array([[_cos(a, b) for b in text[i][s]] for a in image[i][s]])  # (|P|, |T|)
            ref["alignment", "P-T", "token max", i, s] = sims.max(0).mean()
            ref["alignment", "P-T", "token mean", i, s] = sims.mean()
            ref["alignment", "P-T", "token median", i, s] = np.quantile(sims, 0.5, method="lower")
            ref["cone", "P-P", "all pairs", i, s] = np.mean([_cos(p[i][s], p[m][s]) for m in range(n) if m != i])
            ref["cone", "T-T", "all pairs", i, s] = np.mean([_cos(t[i][s], t[m][s]) for m in range(n) if m != i])
            for pair, states in (("P", image), ("T", text)):
                ref["norm", pair, "mean", i, s] = np.mean([np.linalg.norm(v) for v in states[i][s]])
                if s + 1 < n_states:
                    ref["drift", pair, "k=1", i, s] = np.mean(
                        [_cos(a, b) for a, b in zip(states[i][s], states[i][s + 1])])
    return ref


def test_scores_match_plain_loops():
    rng = np.random.default_rng(0)
    n, n_states, d = 5, 3, 8
    image = [rng.normal(size=(n_states, rng.integers(3, 7), d)) + 1.0 for _ in range(n)]
    text = [rng.normal(size=(n_states, rng.integers(2, 5), d)) for _ in range(n)]
    meta = pd.DataFrame({"sample": list("abcde"), "question_type": list("xxyyz")})
    got = alignment_scores([torch.tensor(x, dtype=torch.float32) for x in image],
                           [torch.tensor(x, dtype=torch.float32) for x in text], meta, drift_steps=(1, 8), seed=4)
    ref = _reference(image, text, seed=4)
    ids = {s: i for i, s in enumerate(meta["sample"])}
    values = {(r.measure, r.pair, r.variant, ids[r.sample], 0 if r.site == "embed" else r.layer + 1): r.value
              for r in got.itertuples()}  # state 0 is embed, state s is resid_post s - 1
    assert values.keys() == ref.keys()  # k=8 exceeds the 3 states and is skipped
    for key, expected in ref.items():
        assert values[key] == pytest.approx(expected, abs=1e-5), key
    assert set(got["question_type"]) == {"x", "y", "z"}


def test_derangement_has_no_fixed_point():
    for n in (2, 3, 10):
        perm = _derangement(n, seed=n)
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    rng = np.random.default_rng(5)
    qa = [("what color is the circle ?", "red"), ("is there a red square ?", "yes"),
          ("how many shapes are there ?", "two")]
    return [Sample(Image.fromarray(rng.integers(0, 256, (80, 80 + 20 * i, 3), dtype=np.uint8)), q, answer=a,
                   question_type=f"t{i}") for i, (q, a) in enumerate(qa)]


def test_implicit_alignment_on_a_tiny_model(tiny, samples):
    vlm = tiny("qwen2_vl")
    result = implicit_alignment(vlm, samples, progress=False)
    scores = result.scores
    sites = scores[["site", "layer"]].drop_duplicates()
    assert sites["site"].tolist() == ["embed"] + ["resid_post"] * vlm.n_layers
    assert sites["layer"].iloc[0] is pd.NA and sites["layer"].iloc[1:].tolist() == list(range(vlm.n_layers))
    embed = scores[scores.site == "embed"].set_index(["sample", "variant"])["value"]
    assert np.allclose(embed.xs("image at embed", level="variant"), embed.xs("matched", level="variant"))
    summary = result.summary()
    assert {"mean", "std", "count"} <= set(summary.columns) and (summary["count"] == 3).all()
    expected = scores[(scores.variant == "all pairs") & (scores.measure == "alignment") & (scores.site == "resid_post")]
    assert result.score() == pytest.approx(expected.groupby("layer")["value"].mean().mean())
    assert result.accuracy == pytest.approx(result.meta["correct"].mean())
    for fig in (plot_alignment_curves(result, variant="token max"), plot_token_norms(result.scores)):
        assert len(fig.axes[0].get_lines()) >= 2
        plt.close(fig)
    with pytest.raises(InputError, match="no alignment variant"):
        result.score("cosine")
    with pytest.raises(InputError, match="at least 2 samples"):
        implicit_alignment(vlm, samples[:1], progress=False)
    with pytest.raises(InputError, match="gold answer"):
        implicit_alignment(vlm, [Sample(s.image, s.question) for s in samples], progress=False)
    question_only = implicit_alignment(vlm, [Sample(s.image, s.question) for s in samples], text_role="question",
                                       progress=False)
    assert question_only.text_role == "question" and np.isnan(question_only.accuracy)


def test_correlate_matches_scipy_with_a_bootstrap_interval():
    x = np.array([0.1, 0.25, 0.2, 0.4, 0.5, 0.45])
    y = np.array([0.3, 0.35, 0.5, 0.6, 0.8, 0.7])
    table = correlate(x, y, n_boot=500, seed=1).set_index("method")
    for method, fn in (("spearman", stats.spearmanr), ("pearson", stats.pearsonr)):
        r, p = fn(x, y)
        assert table.loc[method, "r"] == pytest.approx(r) and table.loc[method, "p_value"] == pytest.approx(p)
        assert table.loc[method, "ci_low"] <= r <= table.loc[method, "ci_high"]
    assert correlate(x, y, n_boot=500, seed=1).equals(correlate(x, y, n_boot=500, seed=1))
    # the bootstrap (all resamples at once) equals scipy called on each resample in turn
    draws = np.random.default_rng(1).integers(0, len(x), size=(500, len(x)))
    for method, fn in (("spearman", stats.spearmanr), ("pearson", stats.pearsonr)):
        boot = np.array([fn(x[d], y[d])[0] for d in draws if np.ptp(x[d]) > 0 and np.ptp(y[d]) > 0])
        boot = boot[np.isfinite(boot)]
        assert table.loc[method, "n_boot"] == len(boot)
        low, high = np.percentile(boot, [2.5, 97.5])
        assert abs(table.loc[method, "ci_low"] - low) <= 1e-12 and abs(table.loc[method, "ci_high"] - high) <= 1e-12
        assert high - low > 0.1  # an interval, not a point: a wrong coefficient per resample would show
    with pytest.raises(InputError, match="at least 3"):
        correlate(x[:2], y[:2])
    with pytest.warns(UserWarning, match="undefined"):
        assert correlate(x, np.ones_like(x))["r"].isna().all()


def test_alignment_vs_accuracy_across_checkpoints(tiny, samples):
    models = {f"seed {k}": tiny("qwen2_vl") if k == 0 else tiny_vlm("qwen2_vl", seed=k) for k in range(3)}
    accuracy = {"seed 0": 0.2, "seed 1": 0.5, "seed 2": 0.4}
    result = alignment_vs_accuracy(models, samples[:2], accuracy=accuracy, n_boot=200, progress=False)
    assert result.table["checkpoint"].tolist() == list(models)
    assert result.table["accuracy"].tolist() == [0.2, 0.5, 0.4]
    for label, res in result.results.items():
        assert result.table.set_index("checkpoint").loc[label, "score"] == pytest.approx(res.score())
    assert set(result.correlations["method"]) == {"spearman", "pearson"}
    fig = plot_score_vs_accuracy(result, title="tiny qwen2_vl")
    assert "Spearman" in fig.axes[0].get_title()
    plt.close(fig)
    with pytest.raises(InputError, match="at least 3"):
        alignment_vs_accuracy(dict(list(models.items())[:2]), samples[:2], progress=False)
    with pytest.raises(InputError, match="candidate answers"):
        alignment_vs_accuracy(models, samples[:2], accuracy="options", progress=False)
    with pytest.raises(InputError, match="'first_token', 'options' or a mapping"):
        alignment_vs_accuracy(models, samples[:2], accuracy="greedy", progress=False)


def test_alignment_vs_options_accuracy_takes_the_choice_from_the_alignment_forward(tiny, samples, monkeypatch):
    """With ``accuracy="options"`` each checkpoint runs one forward per batch of samples (the
    alignment capture's, which also gives the options-restricted choice) and prepares each sample
    once; the table equals the one from a separate options forward (``options_accuracy``), as the
    ``"logprob"`` method (its own forwards) gives with its reference too."""
    from analysis.models.vlm import VLM

    models = {f"seed {k}": tiny("qwen2_vl") if k == 0 else tiny_vlm("qwen2_vl", seed=k) for k in range(3)}
    options = [("blue", "red", "green"), ("yes", "no"), ("one", "two", "three")]
    items = [dict(image=s.image, question=s.question, answer=s.answer, question_type=s.question_type, options=o)
             for s, o in zip(samples, options)]
    forwards = {label: 0 for label in models}

    def count(label):
        return lambda *args: forwards.__setitem__(label, forwards[label] + 1)

    handles = [vlm.model.register_forward_pre_hook(count(label)) for label, vlm in models.items()]
    prepared = []  # the model of each VLM.prepare call
    prepare = VLM.prepare

    def counted_prepare(self, *args, **kwargs):
        prepared.append(self.name)
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(VLM, "prepare", counted_prepare)
    try:
        result = alignment_vs_accuracy(models, items, accuracy="options", n_boot=200, batch_size=2, progress=False)
    finally:
        for handle in handles:
            handle.remove()
    assert forwards == {label: 2 for label in models}, "one forward per batch of 2 (3 samples), nothing else"
    assert len(prepared) == len(models) * len(items), "each sample prepared once per checkpoint"
    table = result.table.set_index("checkpoint")
    for label, vlm in models.items():
        separate = options_accuracy(vlm, items, options)
        assert table.loc[label, "accuracy_options"] == table.loc[label, "accuracy"] == separate
        assert table.loc[label, "accuracy_first_token"] == result.results[label].accuracy
        assert all(o in opts for o, opts in zip(result.results[label].meta["option"], options))
    assert table["accuracy"].nunique() > 1, "the checkpoints' choices differ, so a mix-up would show"
    by_logprob = alignment_vs_accuracy(models, items, accuracy="options", option_method="logprob", n_boot=200,
                                       batch_size=2, progress=False).table.set_index("checkpoint")
    for label, vlm in models.items():
        assert by_logprob.loc[label, "accuracy"] == options_accuracy(vlm, items, options, method="logprob")
        assert by_logprob.loc[label, "score"] == table.loc[label, "score"]
    with pytest.raises(InputError, match="no gold answer among their options"):
        alignment_vs_accuracy(models, [{**item, "options": ("left", "right")} for item in items], accuracy="options",
                              progress=False)


def test_alignment_vs_options_accuracy_over_the_zoo_trajectory():
    """The correlation over the zoo's trajectory checkpoints with the options-restricted accuracy
    (14 questions, so it stays fast): stage-1 checkpoints, which describe instead of answering,
    score 0 by the first token but above 0 on the options; the correlated accuracy is the zoo
    evaluation's rule "options" on the same questions."""
    from analysis import load_vlm
    from analysis.data.shapes import make_samples
    from analysis.zoo import trajectory
    from analysis.zoo.evaluate import predict

    names = trajectory()
    questions = make_samples(14, seed=3)
    result = alignment_vs_accuracy(names, questions, accuracy="options", n_boot=200, batch_size=14,
                                   device="cpu", progress=False)
    table = result.table.set_index("checkpoint")
    assert result.accuracy_rule == "options" and list(table.index) == names
    assert (table["accuracy"] == table["accuracy_options"]).all()
    assert table["chance"].iloc[0] == pytest.approx(np.mean([1 / len(q.options) for q in questions]))
    stage1 = table.loc[["zoo:shapes-llava-step0", "zoo:shapes-llava-frozen"]]
    assert (stage1["accuracy_first_token"] == 0).all() and (stage1["accuracy_options"] > 0).all()
    assert table.loc["zoo:shapes-llava", "accuracy_options"] >= 0.9
    zoo = predict(load_vlm("zoo:shapes-llava-step300", device="cpu"), questions, progress=False)
    assert table.loc["zoo:shapes-llava-step300", "accuracy_options"] == pytest.approx(zoo["correct_options"].mean())
    for row in result.correlations.itertuples():
        assert row.n_checkpoints == len(names) and np.isfinite(row.r) and row.ci_low <= row.ci_high


def test_alignment_vs_options_accuracy_runs_over_twenty_checkpoints():
    """Twenty checkpoints (randomly initialised zoo-architecture models, 7 questions): every one
    scored, the correlation and its bootstrap interval over all twenty."""
    from analysis.data.shapes import make_samples
    from analysis.models import VLM
    from analysis.zoo import ModelSpec, build_model, build_processor

    spec = ModelSpec(vision_hidden=32, vision_layers=1, vision_mlp=64, text_hidden=32, text_layers=2, text_mlp=64)
    processor = build_processor(spec)
    models = {f"init {k}": VLM.from_parts(build_model(spec, seed=k), processor, name=f"init {k}") for k in range(20)}
    questions = make_samples(7, seed=3)
    result = alignment_vs_accuracy(models, questions, accuracy="options", n_boot=200, batch_size=7, progress=False)
    assert len(result.table) == 20 and result.table["accuracy"].between(0, 1).all()
    assert result.table["accuracy"].nunique() > 1 and (result.table["accuracy_first_token"] == 0).all()
    for row in result.correlations.itertuples():
        assert row.n_checkpoints == 20 and np.isfinite(row.r) and row.ci_low <= row.ci_high and row.n_boot > 150
