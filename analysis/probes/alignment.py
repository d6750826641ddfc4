"""Implicit multimodal alignment (IMA): how image tokens sit relative to text tokens in the LLM.

Reference: Shukor & Cord, "Implicit Multimodal Alignment: On the Generalization of Frozen LLMs
to Multimodal Inputs" (NeurIPS 2024). The hidden states ``h`` are the sequence of activation sites
(``analysis.models.sites``) ``embed`` (the LLM input), ``resid_post 0``, ..., ``resid_post L-1``
(the output of each decoder layer, never final-normed). At each, ``P`` are the image positions and
``T`` the text positions after the image (question + teacher-forced answer by default; the
chat template and system prompt are excluded). Mean-pooling gives ``p_n`` and ``t_n`` per example.

Scores (rows of ``AlignmentResult.scores``, one per sample x site x measure; ``site`` is
``"embed"`` or ``"resid_post"`` and ``layer`` the decoder layer, <NA> at ``embed``):

=========  =====  ==============  ==================================================================
measure    pair   variant         value for sample ``n``
=========  =====  ==============  ==================================================================
alignment  P-T    matched         ``cos(p_n, t_n)``
alignment  P-T    all pairs       ``mean_m cos(p_n, t_m)`` (the reference's score: all pairs)
alignment  P-T    shuffled        ``cos(p_n, t_pi(n))`` for a seeded derangement ``pi`` (control)
alignment  P-T    token max       mean over text tokens of the best cosine to any image token
alignment  P-T    token mean      mean of the ``|P| x |T|`` token cosine matrix
alignment  P-T    token median    median of that matrix
alignment  P-T    image at embed  ``cos(p_n at embed, t_n at the row's site)``
cone       P-P    all pairs       ``mean_{m != n} cos(p_n, p_m)`` (narrow cone of image tokens)
cone       T-T    all pairs       ``mean_{m != n} cos(t_n, t_m)``
drift      P / T  k=1, k=8        mean over tokens of ``cos(h_l, h_{l+k})`` (``h_l``: see below)
norm       P / T  mean            mean L2 norm of the modality's tokens
=========  =====  ==============  ==================================================================

``h_l`` is the ``l``-th hidden state of the sequence embed, resid_post 0, ..., resid_post L-1;
a drift row sits at the site of ``h_l``, so the last ``k`` sites have none.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats
from tqdm.auto import tqdm

from analysis.capture import Activations, capture
from analysis.errors import InputError
from analysis.data.samples import as_samples
from analysis.models.answers import OPTION_METHODS, choose_options, is_correct_option

SCORE_COLUMNS = ["sample", "question_type", "site", "layer", "measure", "pair", "variant", "value"]


@dataclass
class AlignmentResult:
    """Implicit alignment of one model on a set of samples.

    Attributes:
        scores: tidy per-sample scores (columns ``SCORE_COLUMNS``; see the module docstring).
        meta: the capture's per-sample table (prediction, ``correct``, with options ``correct_option``, ...).
        dropped: samples the capture dropped, with the reason.
        text_role: the role(s) used as ``T``.
        model: the model's name.
    """

    scores: pd.DataFrame
    meta: pd.DataFrame
    dropped: pd.DataFrame
    text_role: str
    model: str

    @property
    def accuracy(self) -> float:
        """Share of samples whose greedy first answer token is the gold answer's (NaN without answers)."""
        return _share(self.meta, "correct")

    @property
    def accuracy_options(self) -> float:
        """Share of samples whose options-restricted prediction (rule ``"options"``) is the gold answer.

        NaN unless ``implicit_alignment`` was given ``options``.
        """
        return _share(self.meta, "correct_option")

    def summary(self) -> pd.DataFrame:
        """Return mean, std and count over samples per site x layer x measure x pair x variant.

        Columns ``site``, ``layer`` (<NA> at ``embed``), ``measure``, ``pair``, ``variant``, ``mean``,
        ``std``, ``count``; rows in the order of ``scores`` (``embed`` first, then layer by layer).
        """
        return (self.scores.groupby(["site", "layer", "measure", "pair", "variant"], sort=False, dropna=False)
                ["value"].agg(["mean", "std", "count"]).reset_index())

    def score(self, variant: str = "all pairs", layers: Sequence[int] | None = None) -> float:
        """Return the IMA score: the P-T ``variant`` alignment averaged over samples and ``layers``.

        ``layers`` are decoder layers, read at their output (``resid_post``; negative counts from
        the end); default: every decoder layer (``embed``, the LLM input, is not included).
        """
        rows = self.scores[(self.scores["measure"] == "alignment") & (self.scores["variant"] == variant)]
        if rows.empty:
            raise InputError(f"no alignment variant {variant!r}; use one of "
                             f"{sorted(self.scores.loc[self.scores.measure == 'alignment', 'variant'].unique())}")
        rows = rows[rows["site"] == "resid_post"]
        n = int(rows["layer"].max()) + 1 if len(rows) else 0
        if layers is None:
            chosen = list(range(n))
        else:
            layers = list(layers)
            if not layers or any(not -n <= l < n for l in layers):
                raise InputError(f"layers {list(layers)} are not among the captured decoder layers 0..{n - 1} "
                                 f"(negative counts from the end)")
            chosen = [l % n for l in layers]
        rows = rows[rows["layer"].isin(chosen)]
        if rows.empty:
            raise InputError("no decoder layer's output was captured; nothing to average")
        return float(rows.groupby("layer")["value"].mean().mean())


def _share(meta: pd.DataFrame, column: str) -> float:
    """Return the share of True in ``meta[column]``, ignoring None (NaN without the column or any value)."""
    known = meta[column].dropna() if column in meta else pd.Series(dtype=float)
    return float(known.astype(float).mean()) if len(known) else float("nan")


def implicit_alignment(
    vlm,
    samples: Iterable,
    text_role: str = "question+answer",
    drift_steps: Sequence[int] = (1, 8),
    seed: int = 0,
    batch_size: int = 8,
    cache=None,
    progress: bool = True,
    options: Sequence[Sequence[str]] | None = None,
) -> AlignmentResult:
    """Return the implicit-alignment scores of ``vlm`` on ``samples`` at every hidden state.

    The hidden states are the sites ``embed`` and ``resid_post`` of every decoder layer.

    Args:
        vlm: the model.
        samples: at least two samples; with the default ``text_role`` each needs its gold answer
            (it is teacher-forced after the prompt).
        text_role: the capture role(s) that make ``T`` (``"question"`` for samples without answers).
        drift_steps: the ``k`` of the drift ``cos(h_l, h_{l+k})`` over the sequence embed, resid_post 0, ...
        seed: seed of the shuffled-pair control.
        batch_size, cache, progress: see ``analysis.capture.capture``.
        options: per sample, its candidate answers; then ``meta`` has the options-restricted
            prediction (``correct_option``, ...) and ``AlignmentResult.accuracy_options`` its accuracy,
            from the same forward (see ``analysis.capture.capture``). Default None.
    """
    samples = as_samples(samples)
    if len(samples) < 2:
        raise InputError("implicit alignment compares examples with each other: give at least 2 samples")
    sites = ["embed"] + [("resid_post", l) for l in range(vlm.n_layers)]
    acts = capture(vlm, samples, sites=sites, roles=["image", text_role], pool=None, batch_size=batch_size,
                   cache=cache, progress=progress, options=options)
    image, text = _states(acts, "image"), _states(acts, text_role)
    scores = alignment_scores(image, text, acts.meta, drift_steps, seed)
    return AlignmentResult(scores, acts.meta, acts.dropped, text_role, vlm.name)


def _states(acts: Activations, role: str) -> list[torch.Tensor]:
    """Return per sample a ``(n_sites, n_tokens, hidden)`` tensor, one state per captured site, in order."""
    per_site = [acts.get(role, s) for s in acts.sites]
    return [torch.stack([site[n] for site in per_site]) for n in range(len(acts))]


def alignment_scores(
    image: Sequence[torch.Tensor],
    text: Sequence[torch.Tensor],
    meta: pd.DataFrame,
    drift_steps: Sequence[int] = (1, 8),
    seed: int = 0,
) -> pd.DataFrame:
    """Compute the IMA score table from token states.

    Args:
        image, text: per sample, ``(n_states, n_tokens, hidden)`` states of the image / text tokens;
            state 0 is ``embed``, state ``s`` the output (``resid_post``) of decoder layer ``s - 1``.
        meta: per-sample table with ``sample`` and ``question_type`` columns, in the same order.
        drift_steps, seed: see ``implicit_alignment``.

    Returns:
        DataFrame with ``SCORE_COLUMNS``.
    """
    n = len(image)
    if n < 2 or len(text) != n or len(meta) != n:
        raise InputError("need at least 2 samples with image and text states for each")
    n_states = image[0].shape[0]
    p = torch.stack([x.float().mean(1) for x in image])  # (N, S, D)
    t = torch.stack([x.float().mean(1) for x in text])
    pn, tn = F.normalize(p, dim=-1), F.normalize(t, dim=-1)
    perm = torch.from_numpy(_derangement(n, seed))
    off = ~torch.eye(n, dtype=torch.bool)
    blocks = []

    def add(measure, pair, variant, values):  # values: (N, S') for states 0..S'-1
        values = np.asarray(values, dtype=float)
        states = np.tile(np.arange(values.shape[1]), n)
        layers = pd.array(states - 1, dtype="Int64")
        layers[states == 0] = pd.NA  # embed: no decoder layer
        blocks.append(pd.DataFrame({
            "sample": np.repeat(meta["sample"].to_numpy(), values.shape[1]),
            "question_type": np.repeat(meta["question_type"].to_numpy(), values.shape[1]),
            "site": np.where(states == 0, "embed", "resid_post"),
            "layer": layers,
            "measure": measure, "pair": pair, "variant": variant, "value": values.reshape(-1)}))

    cross = torch.einsum("nsd,msd->snm", pn, tn)  # (S, N, N): cos(p_n, t_m) per state
    add("alignment", "P-T", "matched", torch.diagonal(cross, dim1=1, dim2=2).T)
    add("alignment", "P-T", "all pairs", cross.mean(2).T)
    add("alignment", "P-T", "shuffled", cross[:, torch.arange(n), perm].T)
    token = torch.stack([_token_alignment(a.float(), b.float()) for a, b in zip(image, text)])  # (N, 3, S)
    for k, variant in enumerate(("token max", "token mean", "token median")):
        add("alignment", "P-T", variant, token[:, k])
    add("alignment", "P-T", "image at embed", (pn[:, :1] * tn).sum(-1))
    for pair, x in (("P-P", pn), ("T-T", tn)):
        sims = torch.einsum("nsd,msd->snm", x, x)
        add("cone", pair, "all pairs", (sims * off).sum(2).T / (n - 1))
    for k in drift_steps:
        if 0 < k < n_states:
            for pair, states in (("P", image), ("T", text)):
                add("drift", pair, f"k={k}", torch.stack([
                    F.cosine_similarity(x[:-k].float(), x[k:].float(), dim=-1).mean(-1) for x in states]))
    for pair, states in (("P", image), ("T", text)):
        add("norm", pair, "mean", torch.stack([x.float().norm(dim=-1).mean(-1) for x in states]))
    return pd.concat(blocks, ignore_index=True)[SCORE_COLUMNS]


def _token_alignment(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Return ``(3, S)``: token max / mean / median alignment of one sample's ``(S, n, D)`` states."""
    sims = torch.einsum("spd,std->spt", F.normalize(image, dim=-1), F.normalize(text, dim=-1))
    flat = sims.flatten(1)
    return torch.stack([sims.amax(1).mean(1), flat.mean(1), flat.median(1).values])


def _derangement(n: int, seed: int) -> np.ndarray:
    """Return a seeded uniformly random permutation of ``range(n)`` with no fixed point (``n >= 2``)."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


@dataclass
class AlignmentAccuracy:
    """The IMA score against task accuracy across checkpoints.

    Attributes:
        table: one row per checkpoint: ``checkpoint``, ``score``, ``accuracy`` (the one correlated,
            by ``accuracy_rule``), ``accuracy_first_token`` (greedy first token on the samples),
            ``accuracy_options`` (the arg-max over each sample's options; NaN unless
            ``accuracy_rule == "options"``), ``chance`` (mean ``1 / len(options)`` of the samples;
            NaN without options), ``n_samples``.
        correlations: one row per method (``spearman``, ``pearson``): ``r``, ``p_value``,
            ``ci_low``, ``ci_high`` (percentile bootstrap over checkpoints), ``n_checkpoints``,
            ``n_boot`` (resamples with a defined coefficient), ``confidence``.
        results: the per-checkpoint ``AlignmentResult`` objects.
        variant, layers: which score was correlated (``layers``: decoder layers; None: all).
        accuracy_rule: ``"first_token"``, ``"options"`` or ``"given"`` (a mapping was passed).
    """

    table: pd.DataFrame
    correlations: pd.DataFrame
    results: dict[str, AlignmentResult]
    variant: str
    layers: list[int] | None
    accuracy_rule: str = "first_token"


def alignment_vs_accuracy(
    checkpoints: Mapping[str, object] | Sequence[str],
    samples: Iterable,
    variant: str = "all pairs",
    layers: Sequence[int] | None = None,
    accuracy: str | Mapping[str, float] | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    batch_size: int = 8,
    cache=None,
    device: str = "auto",
    progress: bool = True,
    option_method: str = "first_token",
) -> AlignmentAccuracy:
    """Correlate the IMA score with task accuracy across checkpoints.

    Args:
        checkpoints: ``{label: VLM or name}`` or a list of names (``"zoo:shapes-llava-step200"``,
            folders, hub ids); names are loaded one at a time with ``load_vlm``.
        samples: the same samples for every checkpoint, with gold answers (and, for
            ``accuracy="options"``, each with its candidate answers ``options``, as shapes-world
            samples have; dicts with an ``"options"`` key work too).
        variant, layers: the score (see ``AlignmentResult.score``; ``layers`` are decoder layers,
            default all).
        accuracy: which accuracy to correlate with. ``None`` or ``"first_token"`` (default): the
            greedy first-token accuracy on ``samples`` (rule ``"first_token"``, from the capture).
            ``"options"``: the prediction restricted to each sample's ``options`` (rule
            ``"options"`` of ``analysis.models.answers``; with ``option_method="first_token"`` read
            from the alignment capture's own forward, no extra one), so a checkpoint that
            describes instead of answering is at chance rather than at 0. A
            mapping ``{label: accuracy}``: use these (e.g. the zoo's held-out evaluation).
        n_boot, confidence, seed: percentile bootstrap over checkpoints for the interval.
        batch_size, cache, progress: see ``analysis.capture.capture``; device: for loading names.
        option_method: how ``"options"`` scores an option: ``"first_token"`` (its target token's
            next-token logit, default) or ``"logprob"`` (its whole log-probability, one extra
            forward per sample and option).

    Returns:
        ``AlignmentAccuracy`` with Spearman and Pearson coefficients, p-values and intervals over
        ``len(checkpoints)`` checkpoints.
    """
    from analysis.models import load_vlm, reusing_inputs

    items = dict(checkpoints) if isinstance(checkpoints, Mapping) else {str(c): c for c in checkpoints}
    if len(items) < 3:
        raise InputError(f"a correlation across checkpoints needs at least 3; got {len(items)}")
    if not 0 < confidence < 1:
        raise InputError("confidence must be between 0 and 1")
    rule = "given" if isinstance(accuracy, Mapping) else (accuracy or "first_token")
    if rule not in ("first_token", "options", "given"):
        raise InputError(f"accuracy must be 'first_token', 'options' or a mapping {{label: accuracy}}; "
                         f"got {accuracy!r}")
    if rule == "given" and set(items) - set(accuracy):
        raise InputError(f"no accuracy given for {sorted(set(items) - set(accuracy))}")
    if option_method not in OPTION_METHODS:
        raise InputError(f"option_method must be one of {OPTION_METHODS}; got {option_method!r}")
    raw = list(samples)
    options = [sample_options(item) for item in raw]
    if rule == "options" and any(o is None for o in options):
        raise InputError("accuracy='options' needs every sample's candidate answers (`options`, as shapes-world "
                         "samples have); give them or use accuracy='first_token'")
    samples = as_samples(raw)
    if rule == "options":
        _check_gold_among(samples, options)
    in_capture = rule == "options" and option_method == "first_token"  # the choice from the capture's forward
    chance = float(np.mean([1 / len(o) for o in options])) if all(o for o in options) else float("nan")
    results, rows = {}, []
    with reusing_inputs():  # each question's inputs built once for every checkpoint that builds them alike
        for label, model in tqdm(items.items(), desc="checkpoints", disable=not progress):
            vlm = load_vlm(model, device=device) if isinstance(model, (str, os.PathLike)) else model
            result = implicit_alignment(vlm, samples, batch_size=batch_size, cache=cache, progress=False,
                                        options=options if in_capture else None)
            results[label] = result
            on_options = (options_accuracy(vlm, samples, options, option_method, batch_size)
                          if rule == "options" and not in_capture else result.accuracy_options)
            acc = {"first_token": result.accuracy, "options": on_options}.get(rule)
            rows.append(dict(checkpoint=label, score=result.score(variant, layers),
                             accuracy=float(accuracy[label]) if rule == "given" else acc,
                             accuracy_first_token=result.accuracy, accuracy_options=on_options, chance=chance,
                             n_samples=len(result.meta)))
            del vlm
    table = pd.DataFrame(rows)
    correlations = correlate(table["score"].to_numpy(), table["accuracy"].to_numpy(), n_boot, confidence, seed)
    return AlignmentAccuracy(table, correlations, results, variant, list(layers) if layers is not None else None,
                             rule)


def sample_options(item) -> tuple[str, ...] | None:
    """Return a sample's candidate answers: its ``options`` attribute or ``"options"`` key (None if absent)."""
    found = item.get("options") if isinstance(item, Mapping) else getattr(item, "options", None)
    return tuple(found) if found else None


def options_accuracy(vlm, samples: Sequence, options: Sequence[Sequence[str]], method: str = "first_token",
                     batch_size: int = 8) -> float:
    """Return the share of ``samples`` whose options-restricted prediction is the gold answer (rule ``"options"``).

    Args:
        vlm: the model.
        samples: probe samples (``as_samples``) with gold answers, ``N`` of them.
        options: ``N`` lists of candidate answers, each containing its sample's answer.
        method: ``"first_token"`` (default) or ``"logprob"``; see ``analysis.models.answers.choose_option``.
        batch_size: prompts per forward.
    """
    samples = as_samples(samples)
    _check_gold_among(samples, options)
    prepared = [vlm.prepare(s.image, s.question) for s in samples]
    choices = choose_options(vlm, prepared, options, method=method, batch_size=batch_size)
    return float(np.mean([is_correct_option(s.answer, c) for s, c in zip(samples, choices)]))


def _check_gold_among(samples: Sequence, options: Sequence[Sequence[str]]) -> None:
    """Raise ``InputError`` unless there is one option list per sample and each holds its sample's gold answer."""
    if len(samples) != len(options) or not samples:
        raise InputError(f"need one option list per sample; got {len(samples)} samples, {len(options)} lists")
    missing = [k for k, (s, o) in enumerate(zip(samples, options)) if s.answer is None or s.answer not in o]
    if missing:
        raise InputError(f"samples {missing[:5]} have no gold answer among their options")


def correlate(x: np.ndarray, y: np.ndarray, n_boot: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """Return Spearman and Pearson coefficients of ``x`` and ``y`` with p-values and bootstrap intervals.

    The interval is the percentile interval of the coefficient over ``n_boot`` resamples of the
    pairs with replacement; resamples where either variable is constant are skipped (``n_boot``
    counts the others). When ``x`` or ``y`` is constant every coefficient is NaN, with a warning.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 3:
        raise InputError("need at least 3 (x, y) pairs of equal length")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("scores and accuracies must be finite")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        warnings.warn("the scores or the accuracies are all equal: the correlation is undefined (NaN)", stacklevel=2)
        return pd.DataFrame([dict(method=m, r=np.nan, p_value=np.nan, ci_low=np.nan, ci_high=np.nan,
                                  n_checkpoints=len(x), n_boot=0, confidence=confidence)
                             for m in ("spearman", "pearson")])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(x), size=(n_boot, len(x)))
    xs, ys = x[draws], y[draws]  # (n_boot, n): every resample at once
    varied = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    xs, ys = xs[varied], ys[varied]
    rows = []
    for method, fn in (("spearman", stats.spearmanr), ("pearson", stats.pearsonr)):
        r, p = fn(x, y)
        # Spearman's coefficient is Pearson's of the (average) ranks
        a, b = (stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1)) if method == "spearman" else (xs, ys)
        boot = _pearson_rows(a, b)
        boot = boot[np.isfinite(boot)]
        tail = (1 - confidence) / 2 * 100
        low, high = np.percentile(boot, [tail, 100 - tail]) if len(boot) else (np.nan, np.nan)
        rows.append(dict(method=method, r=float(r), p_value=float(p), ci_low=float(low), ci_high=float(high),
                         n_checkpoints=len(x), n_boot=len(boot), confidence=confidence))
    return pd.DataFrame(rows)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's r of each row pair of ``a`` and ``b`` (``(m, n)`` each), clipped to [-1, 1]: shape ``(m,)``."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.clip(r, -1.0, 1.0)
