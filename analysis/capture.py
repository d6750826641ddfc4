"""Hidden-state capture: activation sites x token roles, raw or pooled, fp32 on CPU.

``capture(vlm, samples, layers, roles, kinds, pool)`` runs the model over samples in left-padded
batches and returns an ``Activations``: for every activation site (``analysis.models.sites``:
``embed``, ``resid_pre``, ``attn_out``, ``mlp_out``, ``resid_post`` of a decoder layer, ``final``)
and role, either one pooled ``(N, hidden)`` tensor or, with ``pool=None``, one
``(n_positions, hidden)`` tensor per sample. States are read through ``sites.reading``, pooled on
the model's device and moved to the CPU in fp32 as each batch finishes: memory is bounded by the
batch plus the results themselves (pooled results go into ``(N, hidden)`` tensors allocated once
per site and role).

Roles (which positions are read; join several with ``"+"``, e.g. ``"question+answer"``):

* ``"image"``, ``"question"``, ``"last"``, ``"other"``: the prompt roles of ``VLM.prepare``;
* ``"answer"``: the sample's gold answer, appended to the prompt and teacher-forced;
* ``"generated"``: the positions whose next-token prediction produced each greedily generated
  token (the last prompt position, then every generated token but the last); the generated
  tokens (up to the first end-of-sequence or image token) are teacher-forced in a second forward;
* ``"token_of_interest"``: the first of the ``"generated"`` positions whose prediction is one of
  the ``token_of_interest`` words; samples where none occurs are dropped and reported.

Padded batches are exact on every supported family: the adapter left-pads (attention mask 0)
and stacks image inputs the way each family's processor stacks a batch (tests compare each
position with a per-sample ``output_hidden_states``). ``correct`` follows the ``"first_token"``
rule of ``analysis.models.answers``; with ``options`` (each sample's candidate answers) the same
forward also gives the ``"options"`` rule's choice. Both are read at the last prompt position, which
the appended tokens (teacher-forced answer, generated tokens) cannot change: they are causal on
every family (PaliGemma's prefix-LM appends them as its causal suffix, ``token_type_ids`` 1), so the
prediction and the choice are the prompt's alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.cache import ActivationCache, model_fields
from analysis.data.images import load_image
from analysis.data.samples import Sample, as_samples
from analysis.errors import InputError
from analysis.models import answers
from analysis.models.digests import image_digest
from analysis.models.inputs import ROLES, PreparedInputs
from analysis.models.sites import Site, block, reading, site, sites as site_product
from analysis.models.numerics import finite

CAPTURE_ROLES: tuple[str, ...] = ROLES + ("answer", "generated", "token_of_interest")
POOLS: tuple[str | None, ...] = ("mean", "max", None)
_GENERATED_ROLES = ("generated", "token_of_interest")
_OPTION_COLUMNS = ("option", "option_scores", "correct_option")  # meta columns of rule "options"


class AllDroppedError(InputError):
    """Every sample was dropped (no token of interest, nothing generated, ...); ``dropped`` says why."""

    def __init__(self, message: str, dropped: pd.DataFrame):
        super().__init__(message)
        self.dropped = dropped


@dataclass
class Activations:
    """Hidden states captured by ``capture``.

    Attributes:
        features: ``{(site, role): value}``; ``value`` is a ``(N, hidden)`` fp32 tensor when
            pooled, else a list of N ``(n_positions_i, hidden)`` fp32 tensors (sample order of
            ``meta``).
        meta: one row per kept sample: ``sample`` (id), ``question_type``, ``answer`` (gold),
            ``prediction`` (greedy first answer token, decoded), ``prediction_id``, ``correct``
            (rule ``"first_token"`` of ``analysis.models.answers``; None without a gold answer), ``generated`` (text, when generation ran),
            ``n_positions`` (prompt length) and ``cached`` (served from the cache); with ``options``
            also ``option`` (the options-restricted prediction, rule ``"options"``), ``option_scores``
            (its options' next-token logits, a list of floats) and ``correct_option`` (None without a
            gold answer).
        dropped: one row per dropped sample: ``sample``, ``question_type``, ``reason``.
        sites: the ``Site``s captured; roles: the roles; pool: the pooling.
    """

    features: dict[tuple[Site, str], torch.Tensor | list[torch.Tensor]]
    meta: pd.DataFrame
    dropped: pd.DataFrame
    sites: list[Site]
    roles: list[str]
    pool: str | None

    @property
    def ids(self) -> list:
        """Sample ids of the kept samples, in order."""
        return self.meta["sample"].tolist()

    def __len__(self) -> int:
        return len(self.meta)

    def get(self, role: str, at, kind: str = "resid_post") -> torch.Tensor | list[torch.Tensor]:
        """Return the features of one site and role: ``(N, hidden)`` if pooled, else a list.

        Args:
            role: a captured role.
            at: a captured decoder layer, non-negative (the site is ``kind`` at that layer), or a site (``"embed"``, ``"attn_out.1"``, ``Site``, ...).
            kind: the site kind when ``at`` is a layer.
        """
        key = (self._site(at, kind), role)
        if key not in self.features:
            raise InputError(
                f"nothing captured at site {key[0]}, role {role!r}; captured sites "
                f"{', '.join(s.name for s in self.sites)} and roles {self.roles}"
            )
        return self.features[key]

    def _site(self, at, kind: str) -> Site:
        if isinstance(at, int) and not isinstance(at, bool):
            at = (kind, at)
        if isinstance(at, tuple) and isinstance(at[1], int) and at[1] < 0:
            raise InputError(f"Activations.get takes the captured (non-negative) layer, e.g. vlm.n_layers - 1; "
                             f"captured sites: {', '.join(s.name for s in self.sites)}")
        return at if isinstance(at, Site) else Site(*at) if isinstance(at, tuple) else _parse(at)

    def subset(self, ids: Sequence) -> "Activations":
        """Return the activations of the samples with ``ids``, in that order."""
        index = {s: i for i, s in enumerate(self.ids)}
        missing = [s for s in ids if s not in index]
        if missing:
            raise InputError(f"samples {missing[:5]} are not in these activations")
        rows = [index[s] for s in ids]
        features = {
            k: v[rows] if torch.is_tensor(v) else [v[r] for r in rows] for k, v in self.features.items()
        }
        return Activations(features, self.meta.iloc[rows].reset_index(drop=True), self.dropped,
                           self.sites, self.roles, self.pool)


@dataclass
class _Row:
    """One sample's work item: its index, sample, options, positions per role and, once computed, its meta."""

    index: int
    sample: Sample
    prepared: PreparedInputs | None = None
    options: tuple[str, ...] | None = None  # candidate answers, for rule "options"
    appended: list[int] = field(default_factory=list)
    positions: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


class _Store:
    """Where captured tensors go, by tensor name and sample index.

    Pooled features are written into ``(N, hidden)`` tensors allocated once, so nothing small and
    long-lived is allocated per batch (such allocations, interleaved with the forward's transient
    buffers, fragment the heap and make RSS grow with the number of samples); raw features are
    one tensor per sample.
    """

    def __init__(self, names: list[str], n: int, hidden: int, pooled: bool):
        self.pooled = pooled
        self.data = {name: torch.empty(n, hidden) if pooled else [None] * n for name in names}

    def put(self, name: str, index: int, value: torch.Tensor) -> None:
        if self.pooled:
            self.data[name][index] = value
        else:
            self.data[name][index] = value.clone()  # a compact copy, not a view of the batch

    def put_batch(self, name: str, indices: list[int], values: torch.Tensor, counts: list[int]) -> None:
        """Store a batch: ``(B, hidden)`` pooled, or raw positions concatenated in row order."""
        if self.pooled:
            self.data[name][indices] = values
        else:
            for index, part in zip(indices, values.split(counts)):
                self.put(name, index, part)

    def row(self, index: int) -> dict[str, torch.Tensor]:
        """Return one sample's tensors (copies, ready to be saved on their own)."""
        return {name: values[index].clone() for name, values in self.data.items()}

    def collect(self, indices: list[int]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Return every tensor name's values for the samples at ``indices``, in that order."""
        if self.pooled:
            everything = indices == list(range(len(next(iter(self.data.values())))))
            return {name: values if everything else values[indices] for name, values in self.data.items()}
        return {name: [values[i] for i in indices] for name, values in self.data.items()}


def capture(
    vlm,
    samples: Iterable,
    layers: Sequence[int] | None = None,
    roles: Sequence[str] = ("image", "question", "last"),
    kinds: Sequence[str] = ("resid_post",),
    pool: str | None = "mean",
    sites: Sequence | None = None,
    token_of_interest: str | Sequence[str] | None = None,
    max_new_tokens: int = 8,
    batch_size: int = 8,
    template: str | None = None,
    cache=None,
    progress: bool = True,
    options: Sequence[Sequence[str]] | None = None,
) -> Activations:
    """Capture hidden states of ``vlm`` over ``samples``.

    Args:
        vlm: the model.
        samples: ``Sample`` objects, dicts or zoo samples (see ``analysis.data.samples``).
        layers: decoder layers (negative counts from the end); default all.
        roles: role names from ``CAPTURE_ROLES``, or unions joined with ``"+"``.
        kinds: site kinds (``analysis.models.sites.KINDS``); per-layer kinds are captured at every
            layer of ``layers``, ``embed`` and ``final`` once.
        pool: ``"mean"`` or ``"max"`` over each role's positions, or None for every position.
        sites: explicit sites (``"embed"``, ``"resid_post.3"``, ``("attn_out", -1)``, ...), instead of
            the ``kinds`` x ``layers`` product.
        token_of_interest: word(s) whose first generated occurrence is the ``"token_of_interest"``
            role (case-insensitive, compared with the decoded token, stripped).
        max_new_tokens: greedy generation length for the generated roles.
        batch_size: samples per forward.
        template: prompt template passed to ``VLM.prepare``.
        cache: an ``analysis.cache.ActivationCache`` (or a folder for one); samples found there are
            not recomputed, computed ones are stored as each batch finishes (an interrupted run
            resumes where it stopped).
        progress: show a progress bar over samples.
        options: per sample, its candidate answers (at least 2 each, e.g. a shapes-world sample's
            ``options``), in sample order. Adds ``option``, ``option_scores`` and ``correct_option``
            to ``meta``: ``analysis.models.answers.choose_option`` (``method="first_token"``) on the
            next-token logits this forward computes anyway, so no extra forward. Memory: the
            ``(batch, vocab)`` fp32 logits of the batch being computed, as without ``options``, and
            ``len(options)`` floats per sample. Default None: no choice.

    Returns:
        ``Activations``; samples whose roles are empty (no token of interest, nothing generated)
        are dropped and listed in ``dropped``. Raises ``AllDroppedError`` (an ``InputError``) if
        none remain.
    """
    samples = as_samples(samples)
    if options is not None:
        options = [answers.check_options(o) for o in options]
        if len(options) != len(samples):
            raise InputError(f"need one option list per sample; got {len(samples)} samples, {len(options)} lists")
    request = _Request.make(vlm, layers, roles, kinds, pool, sites, token_of_interest, max_new_tokens,
                            batch_size, template)
    if "answer" in request.base_roles and any(s.answer is None for s in samples):
        raise InputError("the 'answer' role teacher-forces each sample's gold answer; give every sample an answer")
    if cache is not None and not isinstance(cache, ActivationCache):
        cache = ActivationCache(cache)
    model_key = model_fields(vlm) if cache is not None else None
    rows = [_Row(i, s, options=None if options is None else options[i]) for i, s in enumerate(samples)]
    store = _Store(request.names, len(rows), vlm.hidden_size, request.pool is not None)
    bar = tqdm(total=len(rows), desc="capture", disable=not progress)
    for start in range(0, len(rows), request.batch_size):
        chunk = rows[start : start + request.batch_size]
        keys = [request.key_fields(model_key, r) for r in chunk] if cache is not None else [None] * len(chunk)
        todo = []
        for row, key in zip(chunk, keys):
            hit = cache.load(key) if cache is not None else None
            if hit is None:
                todo.append((row, key))
            else:
                tensors, row.meta = hit
                for name, value in tensors.items():
                    store.put(name, row.index, value)
                row.meta["cached"] = True
        if todo:
            _compute(vlm, request, [row for row, _ in todo], store)
            for row, key in todo:
                row.meta["cached"] = False
                if cache is not None:
                    tensors = store.row(row.index) if "dropped" not in row.meta else {}
                    cache.store(key, tensors, {k: v for k, v in row.meta.items() if k != "cached"})
                row.prepared = None
        bar.update(len(chunk))
    bar.close()
    return request.assemble(rows, store)


def generate_answers(vlm, samples: Iterable, max_new_tokens: int = 8, batch_size: int = 8,
                     template: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Greedily answer every sample; return one row per sample.

    Columns: ``sample``, ``question_type``, ``answer`` (gold or None), ``generated`` (decoded text
    before the first end-of-sequence or image token), ``word`` (its first word, lower case,
    punctuation stripped), ``correct`` (rule ``"first_word"`` of ``analysis.models.answers``; None
    without a gold answer).
    Runs inside any active ``analysis.models.sites.editing`` block (e.g. ``steer``).
    """
    samples = as_samples(samples)
    if max_new_tokens < 1:
        raise InputError("max_new_tokens must be at least 1")
    records = []
    for start in tqdm(range(0, len(samples), batch_size), desc="generate", disable=not progress):
        chunk = samples[start : start + batch_size]
        prepared = [vlm.prepare(s.image, s.question, template) for s in chunk]
        for sample, p, tokens in zip(chunk, prepared, answers.generate(vlm, prepared, max_new_tokens)):
            text = answers.decode(vlm, tokens)
            correct = None if sample.answer is None else answers.is_correct(
                vlm, answers.answer_tokens(vlm, p.prompt, sample.answer), generated=text)
            records.append(dict(sample=sample.id, question_type=sample.question_type, answer=sample.answer,
                                generated=text, word=answers.first_word(text), correct=correct))
    return pd.DataFrame(records)


def capture_sites(vlm, layers: Sequence[int] | None = None, kinds: Sequence[str] = ("resid_post",),
                  sites: Iterable | None = None) -> list[Site]:
    """Return the sites ``capture`` reads for these arguments, checked against ``vlm`` before any forward.

    ``sites`` (names or ``Site``) replaces the product of ``kinds`` x ``layers`` (default every layer).

    Raises:
        InputError: a layer out of range, an unknown kind, nothing to capture.
        UnsupportedModelError: ``attn_out`` / ``mlp_out`` on a family whose residual stream is not a sum
            of its blocks' writes (the message says what to read instead).
    """
    if sites is None:
        layers = None if layers is None else [vlm.check_layer(layer) for layer in layers]
        sites = site_product(vlm, kinds, layers)
    sites = list(dict.fromkeys(site(s, vlm) for s in sites))
    if not sites:
        raise InputError("nothing to capture: give at least one layer and one site kind")
    for s in sites:
        if s.kind in ("attn_out", "mlp_out"):
            block(vlm, s.layer, s.kind)
    return sites


@dataclass
class _Request:
    """A validated capture request."""

    sites: list[Site]
    roles: list[str]
    base_roles: set[str]
    pool: str | None
    words: tuple[str, ...]
    max_new_tokens: int
    batch_size: int
    template: str | None

    @classmethod
    def make(cls, vlm, layers, roles, kinds, pool, sites, token_of_interest, max_new_tokens, batch_size,
             template) -> "_Request":
        if pool not in POOLS:
            raise InputError(f"pool must be one of {POOLS}; got {pool!r}")
        if batch_size < 1:
            raise InputError("batch_size must be at least 1")
        sites = capture_sites(vlm, layers, kinds, sites)
        roles = list(dict.fromkeys(roles))
        if not roles:
            raise InputError("give at least one role")
        base = {part for role in roles for part in role.split("+")}
        unknown = base - set(CAPTURE_ROLES)
        if unknown:
            raise InputError(f"unknown role(s) {sorted(unknown)}; use {', '.join(CAPTURE_ROLES)} or unions with '+'")
        if "answer" in base and base & set(_GENERATED_ROLES):
            raise InputError("the 'answer' role (teacher-forced gold answer) and the generated roles exclude each "
                             "other; capture them in two calls")
        words = (token_of_interest,) if isinstance(token_of_interest, str) else tuple(token_of_interest or ())
        words = tuple(w.strip().lower() for w in words)
        if "token_of_interest" in base and not any(words):
            raise InputError("the 'token_of_interest' role needs token_of_interest= (the word(s) to look for)")
        if base & set(_GENERATED_ROLES) and max_new_tokens < 1:
            raise InputError("max_new_tokens must be at least 1 for the generated roles")
        return cls(sites, roles, base, pool, words, int(max_new_tokens), int(batch_size), template)

    @property
    def names(self) -> list[str]:
        """The tensor name of every site x role."""
        return [_tensor_name(s, role) for s in self.sites for role in self.roles]

    @property
    def generates(self) -> bool:
        return bool(self.base_roles & set(_GENERATED_ROLES))

    def key_fields(self, model_key: dict, row: _Row) -> dict:
        """Everything besides the model that determines one sample's captured tensors and meta."""
        sample = row.sample
        return {
            **model_key,
            "image": image_digest(load_image(sample.image)),
            "question": sample.question,
            "template": self.template,
            "answer": sample.answer,  # teacher-forced by the "answer" role; decides ``correct`` always
            "generation": {"max_new_tokens": self.max_new_tokens, "greedy": True} if self.generates else None,
            "token_of_interest": list(self.words) if "token_of_interest" in self.base_roles else None,
            "sites": [s.name for s in self.sites],
            "roles": self.roles,
            "pool": self.pool,
            **({"options": list(row.options)} if row.options is not None else {}),
        }

    def assemble(self, rows: list[_Row], store: _Store) -> Activations:
        kept = [r for r in rows if "dropped" not in r.meta]
        dropped = pd.DataFrame(
            [dict(sample=r.sample.id, question_type=r.sample.question_type, reason=r.meta["dropped"])
             for r in rows if "dropped" in r.meta],
            columns=["sample", "question_type", "reason"],
        )
        if not kept:
            reasons = ", ".join(f"{n} x {reason}" for reason, n in dropped["reason"].value_counts().items())
            raise AllDroppedError(f"all {len(rows)} samples were dropped ({reasons}); nothing was captured", dropped)
        collected = store.collect([r.index for r in kept])
        features = {(s, role): collected[_tensor_name(s, role)] for s in self.sites for role in self.roles}
        meta = pd.DataFrame([
            dict(sample=r.sample.id, question_type=r.sample.question_type, answer=r.sample.answer,
                 prediction=r.meta["prediction"], prediction_id=r.meta["prediction_id"],
                 correct=r.meta["correct"], generated=r.meta.get("generated"),
                 n_positions=r.meta["n_positions"], cached=r.meta["cached"],
                 **({k: r.meta[k] for k in _OPTION_COLUMNS} if r.options is not None else {}))
            for r in kept
        ])
        return Activations(features, meta, dropped, self.sites, self.roles, self.pool)


def _tensor_name(s: Site, role: str) -> str:
    return f"{s.name}/{role}"


def _parse(name: str) -> Site:
    kind, dot, layer = str(name).partition(".")
    return Site(kind, int(layer) if dot else None)


def _compute(vlm, request: _Request, rows: list[_Row], store: _Store) -> None:
    """Fill ``store`` and each row's ``meta`` (one generation pass if needed, one forward)."""
    for row in rows:
        row.prepared = vlm.prepare(row.sample.image, row.sample.question, request.template)
    generated: list[list[int]] = [[] for _ in rows]
    if request.generates:
        generated = answers.generate(vlm, [r.prepared for r in rows], request.max_new_tokens)
    for row, tokens in zip(rows, generated):
        length = row.prepared.length
        row.meta = dict(n_positions=length, prediction=None, prediction_id=None, correct=None)
        if "answer" in request.base_roles:
            row.appended = list(answers.answer_tokens(vlm, row.prepared.prompt, row.sample.answer).ids)
        elif request.generates:
            row.meta["generated"] = answers.decode(vlm, tokens)
            row.appended = tokens[:-1]
        reason = _set_positions(vlm, row, tokens, request.words, request.base_roles)
        if reason:
            row.meta["dropped"] = reason
    live = [r for r in rows if "dropped" not in r.meta]
    if not live:
        return
    batch, offsets = vlm.adapter.pad([vlm.adapter.append(r.prepared.inputs, r.appended) for r in live])
    last = [o + r.prepared.length - 1 for o, r in zip(offsets, live)]
    out = _collect(vlm, request, live, offsets, last, batch)
    indices = [r.index for r in live]
    for name, values in out["values"].items():
        store.put_batch(name, indices, values, out["counts"][name.rsplit("/", 1)[1]])
    for row, predicted, logits in zip(live, out["logits"].argmax(-1).tolist(), out["logits"]):
        gold = row.sample.answer
        row.meta.update(prediction=vlm.tokenizer.decode([predicted]).strip(), prediction_id=predicted,
                        correct=None if gold is None else answers.is_correct(
                            vlm, answers.answer_tokens(vlm, row.prepared.prompt, gold), predicted=predicted))
        if row.options is not None:
            choice = answers.choose_option(vlm, row.prepared, row.options,
                                           logits=finite(vlm, logits, "next-token logits"))
            row.meta.update(option=choice.choice, option_scores=list(choice.scores),
                            correct_option=None if gold is None else answers.is_correct_option(gold, choice))


def _set_positions(vlm, row: _Row, generated: list[int], words: tuple[str, ...], base_roles: set[str]) -> str | None:
    """Set ``row.positions`` for every base role; return why the sample is dropped, or None."""
    prepared = row.prepared
    length = prepared.length
    for role in ROLES:
        row.positions[role] = prepared.positions(role)
    row.positions["answer"] = torch.arange(length, length + len(row.appended))
    row.positions["generated"] = torch.arange(length - 1, length - 1 + len(generated))
    if base_roles & set(_GENERATED_ROLES) and not generated:
        return "generated nothing (a stop token came first)"
    if "token_of_interest" in base_roles:
        decoded = [vlm.tokenizer.decode([t]).strip().lower() for t in generated]
        hits = [k for k, text in enumerate(decoded) if text and text in words]
        if not hits:
            return f"no token of interest ({', '.join(words)}) in the generated answer"
        row.positions["token_of_interest"] = torch.tensor([length - 1 + hits[0]])
    for role in base_roles:
        if len(row.positions[role]) == 0:
            return f"no {role} positions"
    return None


def _collect(vlm, request: _Request, rows: list[_Row], offsets: list[int], last: list[int], batch: dict) -> dict:
    """Run one batched forward and collect every site's role features and each row's next-token logits.

    Returns a dict: ``"logits"``, the ``(B, vocab)`` fp32 next-token logits at each row's last
    prompt position (read at the ``final`` site, through the unembedding) on the model's device;
    ``"values"``, ``{tensor name: (B, hidden) pooled or (sum of positions, hidden) raw}`` fp32 CPU
    tensors in row order; ``"counts"``, ``{role: positions per row}``.
    """
    out: dict = {"logits": None, "values": {}, "counts": {}}
    width = max(o + len(r.prepared.input_ids) + len(r.appended) for r, o in zip(rows, offsets))
    masks = {}  # role -> (B, T) bool mask of the role's positions in the padded batch
    for role in request.roles:
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, (row, offset) in enumerate(zip(rows, offsets)):
            mask[i, torch.cat([row.positions[p] for p in role.split("+")]) + offset] = True
        masks[role] = mask
        out["counts"][role] = mask.sum(1).tolist()
    final = Site("final")

    def store(s: Site, hidden: torch.Tensor) -> None:
        if s == final:
            rows_at = torch.tensor(last, device=hidden.device)
            picked = hidden[torch.arange(len(last), device=hidden.device), rows_at]
            out["logits"] = vlm.unembed(picked, final_norm=False)
        if s not in request.sites:
            return
        selected = torch.stack([mask.to(hidden.device) for mask in masks.values()]).any(0)
        finite(vlm, hidden[selected], f"captured {s} states")
        for role, mask in masks.items():
            mask = mask.to(hidden.device)
            if request.pool is None:
                values = hidden[mask].float()
            elif request.pool == "mean":
                values = torch.einsum("bt,btd->bd", mask.float() / mask.sum(1, keepdim=True), hidden.float())
            else:
                values = hidden.float().masked_fill(~mask[..., None], -torch.inf).amax(1)
            out["values"][_tensor_name(s, role)] = values.cpu()

    with torch.no_grad(), reading(vlm, list(dict.fromkeys([*request.sites, final])), on_value=store):
        vlm.model(**batch, logits_to_keep=1)
    return out
