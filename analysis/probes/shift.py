"""Representation shift under fine-tuning: concepts, their shifts, and how well shifts predict them.

Reference: Khayatan, Shukor, Parekh, Dapogny, Cord, "Analyzing Fine-tuning Representation Shift
for Multimodal LLMs Steering" (2025). Features ``A`` (base model) and ``B`` (fine-tuned model),
both ``(N, D)``, are read at one decoder layer on the same inputs, keeping the samples valid in
both. ``A ~ codes @ U_a`` gives ``K`` base concepts (rows of ``U_a``), by k-means (centroids;
activation ``1 / (1 + distance)``) or semi-NMF (non-negative codes, free dictionary; scikit-learn's
``DictionaryLearning(positive_code=True)``). Each sample belongs to its most active base concept;
its shift is ``delta_m = b_m - a_m``; concept ``k`` shifts by ``Delta_k`` = the mean of its samples'
deltas (for semi-NMF, each divided by the sample's code of the concept, since atoms have unit
norm), giving the shifted concept ``u_s = u_a + Delta_k``. Decomposing ``B`` gives the fine-tuned
concepts ``U_b``; the Hungarian algorithm pairs base and fine-tuned concepts by cosine, and the
recovery of concept ``k`` is ``cos(u_b, u_s) - cos(u_b, u_a)``: positive when the shift moves the
base concept towards its fine-tuned counterpart.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from analysis.capture import AllDroppedError, capture
from analysis.errors import InputError
from analysis.data.samples import Sample, as_samples

METHODS = ("kmeans", "snmf")
FEATURES = ("last", "generated", "token_of_interest")


@dataclass
class Concepts:
    """A decomposition ``features ~ activations @ dictionary``.

    Attributes:
        dictionary: ``(K, D)`` concept vectors (k-means centroids or semi-NMF atoms of unit norm).
        activations: ``(N, K)`` non-negative activation of each concept in each sample.
        method: ``"kmeans"`` or ``"snmf"``; alpha: the semi-NMF sparsity penalty used (None for
            k-means).
    """

    dictionary: np.ndarray
    activations: np.ndarray
    method: str
    alpha: float | None = None

    def activate(self, features: np.ndarray, dictionary: np.ndarray | None = None) -> np.ndarray:
        """Return ``(N, K)`` activations of ``features`` on ``dictionary`` (default: this one)."""
        return concept_activations(features, self.dictionary if dictionary is None else dictionary,
                                   self.method, self.alpha)


def decompose(features, n_concepts: int = 20, method: str = "kmeans", seed: int = 0,
              sparsity: float = 0.1, max_iter: int = 100) -> Concepts:
    """Decompose ``(N, D)`` features into ``n_concepts`` concepts.

    Args:
        features: ``(N, D)`` array or tensor.
        n_concepts: ``K``, at most ``N``.
        method: ``"kmeans"`` (``KMeans(n_init=10)``) or ``"snmf"`` (``DictionaryLearning`` with
            non-negative codes, coordinate descent, unit-norm atoms).
        seed: random state of either method.
        sparsity: semi-NMF L1 penalty relative to the features' median L2 norm (scale-free).
        max_iter: semi-NMF iterations.
    """
    z = _as_array(features)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if not 1 <= n_concepts <= len(z):
        raise InputError(f"n_concepts must be between 1 and the number of samples ({len(z)}); got {n_concepts}")
    # scikit-learn is imported where it is used: importing it costs every process that imports the probes ~0.5 s.
    from sklearn.cluster import KMeans
    from sklearn.decomposition import DictionaryLearning

    if method == "kmeans":
        km = KMeans(n_clusters=n_concepts, n_init=10, random_state=seed).fit(z)
        dictionary = km.cluster_centers_
        return Concepts(dictionary, concept_activations(z, dictionary, method), method)
    alpha = float(sparsity * np.median(np.linalg.norm(z, axis=1)))
    dl = DictionaryLearning(n_components=n_concepts, alpha=alpha, positive_code=True, fit_algorithm="cd",
                            transform_algorithm="lasso_cd", transform_alpha=alpha, max_iter=max_iter,
                            random_state=seed)
    with _one_convergence_warning("semi-NMF dictionary learning"):
        dictionary = dl.fit(z).components_
    return Concepts(dictionary, concept_activations(z, dictionary, method, alpha), method, alpha)


def concept_activations(features, dictionary: np.ndarray, method: str, alpha: float | None = None) -> np.ndarray:
    """Return ``(N, K)`` activations: ``1 / (1 + ||z - u_k||)`` (k-means) or non-negative sparse codes."""
    z, u = _as_array(features), np.asarray(dictionary, dtype=np.float64)
    if method == "kmeans":
        squared = (z**2).sum(1, keepdims=True) - 2 * z @ u.T + (u**2).sum(1)
        dist = np.sqrt(np.maximum(squared, 0.0))
        return 1.0 / (1.0 + dist)
    from sklearn.decomposition import sparse_encode

    with _one_convergence_warning("semi-NMF codes"):
        return sparse_encode(z, u, algorithm="lasso_cd", alpha=alpha, positive=True)


@contextlib.contextmanager
def _one_convergence_warning(what: str) -> Iterator[None]:
    """Collect scikit-learn's per-sample ConvergenceWarnings into one warning that says how many."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        yield
    n = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if n:
        warnings.warn(f"{what}: {n} coordinate-descent solves stopped before converging (features nearly "
                      "collinear?); codes are approximate", ConvergenceWarning, stacklevel=3)


def match_concepts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return ``match`` with ``b[match[k]]`` paired to ``a[k]``, maximising the total cosine (Hungarian)."""
    sims = _cos(a, b)
    rows, cols = linear_sum_assignment(-sims)
    match = np.empty(len(a), dtype=int)
    match[rows] = cols
    return match


@dataclass
class ShiftResult:
    """Representation shift of one layer from a base model to a fine-tuned one.

    Attributes:
        concepts: one row per base concept ``k``: ``concept``, ``n_samples`` (assigned to it),
            ``matched`` (fine-tuned concept index), ``cos_base`` = ``cos(u_b, u_a)``,
            ``cos_shifted`` = ``cos(u_b, u_s)``, ``recovery`` (their difference), ``consistency``
            (mean pairwise cosine of its samples' deltas; NaN under 2 samples), ``magnitude``
            (mean ``||delta_m||``), ``shift_norm`` (``||Delta_k||``), and, when grounded,
            ``words_base`` / ``words_shifted`` / ``words_finetuned``, ``word_overlap_base`` /
            ``word_overlap_shifted`` and ``image_overlap_base`` / ``image_overlap_shifted`` (shares
            of the fine-tuned concept's top words / images also top for the base or shifted one).
            Concepts with no samples have NaN shift statistics and no recovery.
        assignments: one row per sample: ``sample``, ``question_type``, ``concept`` (strongest base
            concept; -1 when semi-NMF gives the sample no active concept), ``shift_norm``
            (``||delta_m||``).
        base, finetuned: the two ``Concepts``; shifted: ``(K, D)`` shifted concepts.
        match: ``(K,)`` fine-tuned concept paired with each base concept.
        base_features, finetuned_features: ``(N, D)`` features.
        words: grounding in words: ``model`` (base / shifted / finetuned), ``concept``,
            ``final_norm``, ``rank``, ``token``, ``logit`` (empty unless grounded).
        images: top-activating samples: ``model``, ``concept``, ``rank``, ``sample``,
            ``activation`` (empty unless grounded).
        samples: the kept samples, in feature order (images for concept grids).
        dropped: samples dropped by either capture: ``sample``, ``question_type``, ``reason``,
            ``model`` (``base`` or ``finetuned``); only samples valid in both are analysed.
        layer, features: where the features were read (None for ``concept_shift`` on arrays).
    """

    concepts: pd.DataFrame
    assignments: pd.DataFrame
    base: Concepts
    finetuned: Concepts
    shifted: np.ndarray
    match: np.ndarray
    base_features: np.ndarray
    finetuned_features: np.ndarray
    words: pd.DataFrame = field(default_factory=pd.DataFrame)
    images: pd.DataFrame = field(default_factory=pd.DataFrame)
    samples: list[Sample] = field(default_factory=list)
    dropped: pd.DataFrame = field(default_factory=pd.DataFrame)
    layer: int | None = None
    features: str | None = None

    def summary(self) -> dict:
        """Return headline numbers: mean recovery, share of concepts recovered, mean cosines, counts."""
        c = self.concepts.dropna(subset=["recovery"])
        return dict(mean_recovery=float(c["recovery"].mean()), share_improved=float((c["recovery"] > 0).mean()),
                    mean_cos_base=float(c["cos_base"].mean()), mean_cos_shifted=float(c["cos_shifted"].mean()),
                    n_concepts=len(self.concepts), n_concepts_with_samples=len(c),
                    n_samples=len(self.assignments), n_unassigned=int((self.assignments["concept"] < 0).sum()),
                    n_dropped=int(self.dropped["sample"].nunique()) if len(self.dropped) else 0)


def concept_shift(base_features, finetuned_features, n_concepts: int = 20, method: str = "kmeans",
                  seed: int = 0, match: str = "base", sparsity: float = 0.1, ids: Sequence | None = None,
                  question_types: Sequence | None = None) -> ShiftResult:
    """Return the concept shift between two ``(N, D)`` feature sets of the same samples.

    Args:
        base_features, finetuned_features: row ``m`` of each describes sample ``m``.
        n_concepts, method, seed, sparsity: see ``decompose`` (the same for both models).
        match: ``"base"`` pairs fine-tuned concepts with the base concepts (recovery is then not
            favoured by construction), ``"shifted"`` with the shifted concepts.
        ids, question_types: per-sample labels for ``assignments`` (default ``0 .. N-1`` / None).
    """
    a, b = _as_array(base_features), _as_array(finetuned_features)
    if a.shape != b.shape:
        raise InputError(f"base and fine-tuned features must have the same shape; got {a.shape} and {b.shape}")
    if match not in ("base", "shifted"):
        raise InputError("match must be 'base' or 'shifted'")
    base = decompose(a, n_concepts, method, seed, sparsity)
    finetuned = decompose(b, n_concepts, method, seed, sparsity)
    assigned = np.where(base.activations.max(1) > 0, base.activations.argmax(1), -1)  # -1: no active concept
    deltas = b - a
    shifted = base.dictionary.copy()
    rows = []
    for k in range(n_concepts):
        members = deltas[assigned == k]
        if len(members):
            shifted[k] = base.dictionary[k] + _concept_shift(members, base.activations[assigned == k, k], method)
        sims = _cos(members, members) if len(members) > 1 else None
        rows.append(dict(
            concept=k, n_samples=len(members),
            consistency=float(sims[~np.eye(len(members), dtype=bool)].mean()) if sims is not None else np.nan,
            magnitude=float(np.linalg.norm(members, axis=1).mean()) if len(members) else np.nan,
            shift_norm=float(np.linalg.norm(members.mean(0))) if len(members) else np.nan))
    pairing = match_concepts(base.dictionary if match == "base" else shifted, finetuned.dictionary)
    cos_base = np.diag(_cos(finetuned.dictionary[pairing], base.dictionary))
    cos_shifted = np.diag(_cos(finetuned.dictionary[pairing], shifted))
    table = pd.DataFrame(rows)
    empty = table["n_samples"].to_numpy() == 0
    table.insert(2, "matched", pairing)
    table.insert(3, "cos_base", cos_base)
    table.insert(4, "cos_shifted", np.where(empty, np.nan, cos_shifted))
    table.insert(5, "recovery", table["cos_shifted"] - table["cos_base"])
    ids = list(range(len(a))) if ids is None else list(ids)
    assignments = pd.DataFrame(dict(sample=ids, question_type=list(question_types) if question_types is not None
                                    else [None] * len(a), concept=assigned,
                                    shift_norm=np.linalg.norm(deltas, axis=1)))
    return ShiftResult(table, assignments, base, finetuned, shifted, pairing, a, b)


def _concept_shift(deltas: np.ndarray, activations: np.ndarray, method: str) -> np.ndarray:
    """Return ``Delta_k`` from the deltas ``(n, D)`` of a concept's samples and their activations ``(n,)``.

    k-means centroids live on the features' scale, so ``Delta_k`` is the mean delta. Semi-NMF
    atoms have unit norm and a sample is ``a_m ~ v_mk u_k``, so each delta is first divided by
    the sample's code ``v_mk``: the shift per unit of the atom (adding raw deltas of norm ~ ||a||
    to a unit atom would replace the concept by the mean shift).
    """
    if method == "kmeans":
        return deltas.mean(0)
    return (deltas / np.maximum(activations, 1e-12)[:, None]).mean(0)


def representation_shift(
    base,
    finetuned,
    samples: Iterable,
    layer: int,
    features: str = "last",
    token_of_interest: str | Sequence[str] | None = None,
    finetuned_token_of_interest: str | Sequence[str] | None = None,
    n_concepts: int = 20,
    method: str = "kmeans",
    match: str = "base",
    seed: int = 0,
    sparsity: float = 0.1,
    top_words: int = 10,
    top_images: int = 8,
    max_new_tokens: int = 8,
    batch_size: int = 8,
    cache=None,
    progress: bool = True,
) -> ShiftResult:
    """Analyse how fine-tuning shifts the concepts of decoder layer ``layer``.

    Args:
        base, finetuned: the two models (same family, hidden size and layer count).
        samples: the inputs, the same for both.
        layer: the decoder layer whose output is read.
        features: ``"last"`` (last prompt position), ``"generated"`` (mean over the positions
            that produce the greedy answer) or ``"token_of_interest"`` (the first position that
            predicts one of ``token_of_interest``).
        token_of_interest: word(s) for the base model; ``finetuned_token_of_interest`` for the
            fine-tuned one (default the same words).
        n_concepts, method, match, seed, sparsity: see ``concept_shift``.
        top_words: grounding words per concept (top logits of ``unembed(u)``, with and without
            the final norm; special and non-alphanumeric tokens skipped).
        top_images: top-activating samples per concept.
        max_new_tokens, batch_size, cache, progress: see ``analysis.capture.capture``.

    Returns:
        ``ShiftResult``; samples dropped by either model (no token of interest, ...) are listed
        in ``dropped``. Raises ``InputError`` when no sample is valid in both.
    """
    check_compatible(base, finetuned)
    layer = base.check_layer(layer)
    if features not in FEATURES:
        raise InputError(f"features must be one of {', '.join(FEATURES)}; got {features!r}")
    samples = as_samples(samples)
    if len({s.id for s in samples}) != len(samples):
        raise InputError("sample ids must be unique: they pair each sample's base and fine-tuned features")
    ft_words = finetuned_token_of_interest if finetuned_token_of_interest is not None else token_of_interest
    common = dict(layers=[layer], roles=[features], pool="mean", max_new_tokens=max_new_tokens,
                  batch_size=batch_size, cache=cache, progress=progress)
    acts_a, dropped_a = _capture_or_none(base, samples, token_of_interest, common)
    acts_b, dropped_b = _capture_or_none(finetuned, samples, ft_words, common)
    dropped = pd.concat([dropped_a.assign(model="base"), dropped_b.assign(model="finetuned")], ignore_index=True)
    in_b = set(acts_b.ids) if acts_b is not None else set()
    valid = [s for s in acts_a.ids if s in in_b] if acts_a is not None else []
    if not valid:
        raise InputError(f"no sample is valid in both models ({dropped['sample'].nunique()} of {len(samples)} "
                         f"dropped: {dropped['reason'].value_counts().to_dict()}); nothing to compare")
    by_id = {s.id: s for s in samples}
    kept = [by_id[s] for s in valid]
    result = concept_shift(acts_a.subset(valid).get(features, layer), acts_b.subset(valid).get(features, layer),
                           n_concepts, method, seed, match, sparsity, ids=valid,
                           question_types=[s.question_type for s in kept])
    result.samples, result.layer, result.features, result.dropped = kept, layer, features, dropped
    _ground(result, base, finetuned, top_words, top_images)
    return result


def check_compatible(base, finetuned) -> None:
    """Raise ``InputError`` unless both models share family, hidden size and layer count."""
    problems = [f"{what}: {x} vs {y}" for what, x, y in (
        ("family", base.family, finetuned.family), ("hidden size", base.hidden_size, finetuned.hidden_size),
        ("decoder layers", base.n_layers, finetuned.n_layers)) if x != y]
    if problems:
        raise InputError("the base and fine-tuned models have different architectures ("
                         + "; ".join(problems) + "); compare a model with its own fine-tune")


def _capture_or_none(vlm, samples, words, common):
    """Return ``(activations, dropped)``; activations are None when every sample was dropped."""
    try:
        acts = capture(vlm, samples, token_of_interest=words, **common)
    except AllDroppedError as err:
        return None, err.dropped
    return acts, acts.dropped


def _ground(result: ShiftResult, base, finetuned, top_words: int, top_images: int) -> None:
    """Fill ``words``, ``images`` and the overlap columns of ``result.concepts``."""
    sets = {"base": (base, result.base.dictionary), "shifted": (finetuned, result.shifted),
            "finetuned": (finetuned, result.finetuned.dictionary)}
    word_rows = []
    for name, (vlm, vectors) in sets.items():
        for final_norm in (True, False):
            for k, tokens in enumerate(concept_words(vlm, vectors, top_words, final_norm)):
                word_rows += [dict(model=name, concept=k, final_norm=final_norm, rank=r, token=t, logit=v)
                              for r, (t, v) in enumerate(tokens)]
    result.words = pd.DataFrame(word_rows)
    acts = {"base": result.base.activations, "finetuned": result.finetuned.activations,
            "shifted": result.base.activate(result.finetuned_features, result.shifted)}
    ids = result.assignments["sample"].to_numpy()
    image_rows = []
    for name, act in acts.items():
        n = min(top_images, len(ids))
        order = np.argsort(-act, axis=0, kind="stable")[:n]
        for k in range(act.shape[1]):
            image_rows += [dict(model=name, concept=k, rank=r, sample=ids[i], activation=float(act[i, k]))
                           for r, i in enumerate(order[:, k])]
    result.images = pd.DataFrame(image_rows)
    table = result.concepts
    words = result.words[result.words["final_norm"]]
    tops = {name: words[words.model == name].groupby("concept")["token"].apply(list).to_dict() for name in sets}
    imgs = {name: result.images[result.images.model == name].groupby("concept")["sample"].apply(list).to_dict()
            for name in acts}
    for name in sets:
        table[f"words_{name}"] = [", ".join(tops[name].get(k if name != "finetuned" else j, []))
                                  for k, j in zip(table["concept"], table["matched"])]
    for name in ("base", "shifted"):
        table[f"word_overlap_{name}"] = [_overlap(tops["finetuned"].get(j, []), tops[name].get(k, []))
                                         for k, j in zip(table["concept"], table["matched"])]
        table[f"image_overlap_{name}"] = [_overlap(imgs["finetuned"].get(j, []), imgs[name].get(k, []))
                                          for k, j in zip(table["concept"], table["matched"])]


def concept_words(vlm, vectors: np.ndarray, n: int = 10, final_norm: bool = True) -> list[list[tuple[str, float]]]:
    """Return, per concept vector, its ``n`` top ``(token, logit)`` pairs through ``vlm.unembed``.

    Special tokens and tokens without a letter or digit are skipped.
    """
    with torch.no_grad():
        logits = vlm.unembed(torch.as_tensor(np.asarray(vectors), dtype=torch.float32), final_norm=final_norm).cpu()
    tok = vlm.tokenizer
    special = set(tok.all_special_ids)
    out = []
    for row in logits:
        picked = []
        for index in torch.argsort(row, descending=True).tolist():
            text = tok.decode([index]).strip()
            if index not in special and any(ch.isalnum() for ch in text):
                picked.append((text, float(row[index])))
                if len(picked) == n:
                    break
        out.append(picked)
    return out


def _overlap(reference: list, other: list) -> float:
    """Share of ``reference`` items that are in ``other`` (NaN when ``reference`` is empty)."""
    return len(set(reference) & set(other)) / len(reference) if reference else np.nan


def _as_array(x) -> np.ndarray:
    z = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise InputError(f"features must be a non-empty (N, D) array; got shape {z.shape}")
    if not np.isfinite(z).all():
        raise InputError("features contain NaN or infinite values")
    return z


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the ``(len(a), len(b))`` cosine similarity matrix (0 for zero vectors)."""
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return na @ nb.T
