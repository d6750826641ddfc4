"""Hidden-state capture: chosen decoder layers x token roles x points, raw or pooled, fp32 on CPU.

``capture(vlm, samples, layers, roles, points, pool)`` runs the model over samples in left-padded
batches and returns an ``Activations``: for every site (``point``, ``layer``) and role, either one
pooled ``(N, hidden)`` tensor or, with ``pool=None``, one ``(n_positions, hidden)`` tensor per
sample. Hidden states are taken with forward hooks on the modules of ``vlm.layers`` (never on
version-specific paths), pooled on the model's device and moved to the CPU in fp32 as each batch
finishes: memory is bounded by the batch plus the results themselves (pooled results go into
``(N, hidden)`` tensors allocated once per site and role).

Points (where inside decoder layer ``l`` the hidden state is read):

* ``"input"``: the residual stream entering layer ``l`` (for ``l = 0`` the LLM's input
  embeddings, image features merged in) — ``output_hidden_states[l]``;
* ``"attn"``: the attention block's output (its write to the residual stream);
* ``"mlp"``: the MLP block's output (its write to the residual stream);
* ``"output"``: the residual stream after layer ``l``, never final-normed —
  ``output_hidden_states[l + 1]`` except for the last layer, whose ``output_hidden_states`` entry
  transformers 5 returns after the final norm.

For pre-norm decoder layers (every supported family) ``input + attn + mlp == output``.

Roles (which positions are read; join several with ``"+"``, e.g. ``"question+answer"``):

* ``"image"``, ``"question"``, ``"last"``, ``"other"``: the prompt roles of ``VLM.prepare``;
* ``"answer"``: the sample's gold answer, appended to the prompt and teacher-forced;
* ``"generated"``: the positions whose next-token prediction produced each greedily generated
  token (the last prompt position, then every generated token but the last); the generated
  tokens (up to the first end-of-sequence or image token) are teacher-forced in a second forward;
* ``"token_of_interest"``: the first of the ``"generated"`` positions whose prediction is one of
  the ``token_of_interest`` words; samples where none occurs are dropped and reported.

Padded batches are exact on every supported family: left padding with the attention mask
masked out, pixel inputs stacked the way each family's processor stacks a batch (tests compare
each position with a per-sample ``output_hidden_states``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from analysis.cache import ActivationCache, image_digest, model_fields
from analysis.data.images import load_image
from analysis.errors import InputError
from analysis.models.inputs import ROLES, PreparedInputs
from analysis.probes.flow import is_correct
from analysis.probes.samples import Sample, as_samples

POINTS: tuple[str, ...] = ("input", "attn", "mlp", "output")
CAPTURE_ROLES: tuple[str, ...] = ROLES + ("answer", "generated", "token_of_interest")
POOLS: tuple[str | None, ...] = ("mean", "max", None)
_GENERATED_ROLES = ("generated", "token_of_interest")
_SUBMODULES = {"attn": ("self_attn", "attention", "attn", "self_attention"), "mlp": ("mlp", "feed_forward", "ffn")}
# Per-token model inputs and the value an appended (teacher-forced) token takes in each; PaliGemma's
# token_type_ids mark the causal suffix with 1, Qwen2-VL's mm_token_type_ids mark text with 0.
_APPEND_FILL = {"attention_mask": 1, "token_type_ids": 1, "mm_token_type_ids": 0}
_PAD_FILL = {"attention_mask": 0, "token_type_ids": 0, "mm_token_type_ids": 0}

Site = tuple[str, int]


class AllDroppedError(InputError):
    """Every sample was dropped (no token of interest, nothing generated, ...); ``dropped`` says why."""

    def __init__(self, message: str, dropped: pd.DataFrame):
        super().__init__(message)
        self.dropped = dropped


@dataclass
class Activations:
    """Hidden states captured by ``capture``.

    Attributes:
        features: ``{(point, layer, role): value}``; ``value`` is a ``(N, hidden)`` fp32 tensor when
            pooled, else a list of N ``(n_positions_i, hidden)`` fp32 tensors (sample order of
            ``meta``).
        meta: one row per kept sample: ``sample`` (id), ``question_type``, ``answer`` (gold),
            ``prediction`` (greedy first answer token, decoded), ``prediction_id``, ``correct``
            (None without a gold answer), ``generated`` (text, when generation ran),
            ``n_positions`` (prompt length) and ``cached`` (served from the cache).
        dropped: one row per dropped sample: ``sample``, ``question_type``, ``reason``.
        sites: the ``(point, layer)`` pairs captured; roles: the roles; pool: the pooling.
    """

    features: dict[tuple[str, int, str], torch.Tensor | list[torch.Tensor]]
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

    def get(self, role: str, layer: int, point: str = "output") -> torch.Tensor | list[torch.Tensor]:
        """Return the features of one site and role: ``(N, hidden)`` if pooled, else a list.

        ``layer`` is the non-negative decoder layer index as captured (``sites``).
        """
        key = (point, int(layer), role)
        if key not in self.features:
            raise InputError(
                f"nothing captured for point {point!r}, layer {layer}, role {role!r}; captured sites "
                f"{self.sites} and roles {self.roles}"
            )
        return self.features[key]

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
    """One sample's work item: its index, sample, positions per role and, once computed, its meta."""

    index: int
    sample: Sample
    prepared: PreparedInputs | None = None
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
    points: Sequence[str] = ("output",),
    pool: str | None = "mean",
    sites: Sequence[Site] | None = None,
    token_of_interest: str | Sequence[str] | None = None,
    max_new_tokens: int = 8,
    batch_size: int = 8,
    template: str | None = None,
    cache=None,
    progress: bool = True,
) -> Activations:
    """Capture hidden states of ``vlm`` over ``samples``.

    Args:
        vlm: the model.
        samples: ``Sample`` objects, dicts or zoo samples (see ``analysis.probes.samples``).
        layers: decoder layers (negative counts from the end); default all.
        roles: role names from ``CAPTURE_ROLES``, or unions joined with ``"+"``.
        points: names from ``POINTS``; captured at every layer of ``layers``.
        pool: ``"mean"`` or ``"max"`` over each role's positions, or None for every position.
        sites: explicit ``(point, layer)`` pairs, instead of the ``points`` x ``layers`` product.
        token_of_interest: word(s) whose first generated occurrence is the ``"token_of_interest"``
            role (case-insensitive, compared with the decoded token, stripped).
        max_new_tokens: greedy generation length for the generated roles.
        batch_size: samples per forward.
        template: prompt template passed to ``VLM.prepare``.
        cache: an ``analysis.cache.ActivationCache`` (or a folder for one); samples found there are
            not recomputed, computed ones are stored as each batch finishes (an interrupted run
            resumes where it stopped).
        progress: show a progress bar over samples.

    Returns:
        ``Activations``; samples whose roles are empty (no token of interest, nothing generated)
        are dropped and listed in ``dropped``. Raises ``AllDroppedError`` (an ``InputError``) if
        none remain.
    """
    samples = as_samples(samples)
    request = _Request.make(vlm, layers, roles, points, pool, sites, token_of_interest, max_new_tokens,
                            batch_size, template)
    if "answer" in request.base_roles and any(s.answer is None for s in samples):
        raise InputError("the 'answer' role teacher-forces each sample's gold answer; give every sample an answer")
    if cache is not None and not isinstance(cache, ActivationCache):
        cache = ActivationCache(cache)
    model_key = model_fields(vlm) if cache is not None else None
    rows = [_Row(i, s) for i, s in enumerate(samples)]
    store = _Store(request.names, len(rows), vlm.hidden_size, request.pool is not None)
    bar = tqdm(total=len(rows), desc="capture", disable=not progress)
    for start in range(0, len(rows), request.batch_size):
        chunk = rows[start : start + request.batch_size]
        keys = [request.key_fields(model_key, r.sample) for r in chunk] if cache is not None else [None] * len(chunk)
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
    punctuation stripped), ``correct`` (``word`` equals the gold answer, lower case; None without
    one).
    Runs inside any active ``analysis.probes.steering.steer`` block.
    """
    samples = as_samples(samples)
    if max_new_tokens < 1:
        raise InputError("max_new_tokens must be at least 1")
    records = []
    for start in tqdm(range(0, len(samples), batch_size), desc="generate", disable=not progress):
        chunk = samples[start : start + batch_size]
        prepared = [vlm.prepare(s.image, s.question, template) for s in chunk]
        for sample, tokens in zip(chunk, _generate(vlm, prepared, max_new_tokens)):
            text = vlm.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            word = first_word(text)
            correct = None if sample.answer is None else word == sample.answer.strip().lower()
            records.append(dict(sample=sample.id, question_type=sample.question_type, answer=sample.answer,
                                generated=text, word=word, correct=correct))
    return pd.DataFrame(records)


def first_word(text: str) -> str:
    """Return the first whitespace-separated word of ``text``, lower case, without punctuation."""
    words = text.strip().lower().split()
    return words[0].strip(".,;:!?'\"") if words else ""


def decoder_submodule(vlm, layer: int, point: str) -> nn.Module:
    """Return the module of decoder layer ``layer`` whose output is ``point`` (``"attn"``/``"mlp"``).

    The attention and MLP blocks are found among the layer's children by name (``self_attn``,
    ``attention``, ... / ``mlp``, ``feed_forward``, ...); raises ``InputError`` when the family's
    layers have none.
    """
    module = vlm.layers[vlm.check_layer(layer)]
    children = dict(module.named_children())
    for name in _SUBMODULES[point]:
        if isinstance(children.get(name), nn.Module):
            return children[name]
    raise InputError(
        f"cannot find the {point} block in {type(module).__name__} (children: {', '.join(children)}); "
        "capture the points 'input' and 'output' for this family"
    )


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
    def make(cls, vlm, layers, roles, points, pool, sites, token_of_interest, max_new_tokens, batch_size,
             template) -> "_Request":
        if pool not in POOLS:
            raise InputError(f"pool must be one of {POOLS}; got {pool!r}")
        if batch_size < 1:
            raise InputError("batch_size must be at least 1")
        if sites is None:
            layers = range(vlm.n_layers) if layers is None else layers
            sites = [(p, l) for p in points for l in layers]
        sites = list(dict.fromkeys((p, vlm.check_layer(l)) for p, l in sites))
        if not sites:
            raise InputError("nothing to capture: give at least one layer and one point")
        for point, layer in sites:
            if point not in POINTS:
                raise InputError(f"unknown point {point!r}; use one of {', '.join(POINTS)}")
            if point in _SUBMODULES:
                decoder_submodule(vlm, layer, point)
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
        return [_tensor_name(point, layer, role) for point, layer in self.sites for role in self.roles]

    @property
    def generates(self) -> bool:
        return bool(self.base_roles & set(_GENERATED_ROLES))

    def key_fields(self, model_key: dict, sample: Sample) -> dict:
        """Everything besides the model that determines one sample's captured tensors."""
        return {
            **model_key,
            "image": image_digest(load_image(sample.image)),
            "question": sample.question,
            "template": self.template,
            "answer": sample.answer,  # teacher-forced by the "answer" role; decides ``correct`` always
            "generation": {"max_new_tokens": self.max_new_tokens, "greedy": True} if self.generates else None,
            "token_of_interest": list(self.words) if "token_of_interest" in self.base_roles else None,
            "sites": [list(s) for s in self.sites],
            "roles": self.roles,
            "pool": self.pool,
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
        features = {(point, layer, role): collected[_tensor_name(point, layer, role)]
                    for point, layer in self.sites for role in self.roles}
        meta = pd.DataFrame([
            dict(sample=r.sample.id, question_type=r.sample.question_type, answer=r.sample.answer,
                 prediction=r.meta["prediction"], prediction_id=r.meta["prediction_id"],
                 correct=r.meta["correct"], generated=r.meta.get("generated"),
                 n_positions=r.meta["n_positions"], cached=r.meta["cached"])
            for r in kept
        ])
        return Activations(features, meta, dropped, self.sites, self.roles, self.pool)


def _tensor_name(point: str, layer: int, role: str) -> str:
    return f"{point}/{layer}/{role}"


def _compute(vlm, request: _Request, rows: list[_Row], store: _Store) -> None:
    """Fill ``store`` and each row's ``meta`` (one generation pass if needed, one forward)."""
    for row in rows:
        row.prepared = vlm.prepare(row.sample.image, row.sample.question, request.template)
    generated: list[list[int]] = [[] for _ in rows]
    if request.generates:
        generated = _generate(vlm, [r.prepared for r in rows], request.max_new_tokens)
    for row, tokens in zip(rows, generated):
        length = row.prepared.length
        row.meta = dict(n_positions=length, prediction=None, prediction_id=None, correct=None)
        if "answer" in request.base_roles:
            row.appended = continuation_ids(vlm, row.prepared.prompt, row.sample.answer)
        elif request.generates:
            row.meta["generated"] = vlm.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            row.appended = tokens[:-1]
        reason = _set_positions(vlm, row, tokens, request.words, request.base_roles)
        if reason:
            row.meta["dropped"] = reason
    live = [r for r in rows if "dropped" not in r.meta]
    if not live:
        return
    batch, offsets = pad_batch(vlm, [_with_appended(r.prepared, r.appended) for r in live])
    last = [o + r.prepared.length - 1 for o, r in zip(offsets, live)]
    with torch.no_grad(), _site_hooks(vlm, request, live, offsets, last) as out:
        vlm.model(**batch, logits_to_keep=1)
    indices = [r.index for r in live]
    for name, values in out["values"].items():
        store.put_batch(name, indices, values, out["counts"][name.rsplit("/", 1)[1]])
    for row, predicted in zip(live, out["predictions"]):
        row.meta.update(prediction=vlm.tokenizer.decode([predicted]).strip(), prediction_id=predicted,
                        correct=None if row.sample.answer is None else
                        bool(is_correct(vlm, row.prepared, predicted, row.sample.answer)))


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


def continuation_ids(vlm, prompt: str, text: str) -> list[int]:
    """Return the token ids that ``text`` adds when it follows ``prompt`` (space-separated).

    The prompt alone and the prompt with the text are tokenized and the ids after their common
    prefix are returned, so tokenizers that merge across the boundary are handled.
    """
    tok = vlm.tokenizer
    full_text = prompt + (text if prompt[-1:].isspace() else " " + text)
    base = tok(prompt, add_special_tokens=False)["input_ids"]
    full = tok(full_text, add_special_tokens=False)["input_ids"]
    start = next((i for i, (a, b) in enumerate(zip(base, full)) if a != b), len(base))
    if start >= len(full):
        raise InputError(f"{text!r} adds no token after the prompt")
    return [int(t) for t in full[start:]]


def _with_appended(prepared: PreparedInputs, tokens: list[int]) -> dict:
    """Return the prepared inputs (batch of one) with ``tokens`` appended after the prompt."""
    if not tokens:
        return prepared.inputs
    length = prepared.length
    ids = torch.tensor([tokens], dtype=prepared.input_ids.dtype, device=prepared.input_ids.device)
    out = {}
    for key, value in prepared.inputs.items():
        if key == "input_ids":
            out[key] = torch.cat([value, ids], dim=1)
        elif torch.is_tensor(value) and value.dim() == 2 and value.shape[1] == length and not key.startswith("pixel"):
            if key not in _APPEND_FILL:
                raise InputError(f"do not know how to extend the per-token input {key!r} for appended tokens")
            out[key] = torch.cat([value, torch.full_like(ids, _APPEND_FILL[key], dtype=value.dtype)], dim=1)
        else:
            out[key] = value
    return out


def pad_batch(vlm, inputs: Sequence[dict]) -> tuple[dict, list[int]]:
    """Stack per-sample model inputs (batches of one) into one left-padded batch.

    Token inputs are left-padded (pad token, attention mask 0); pixel inputs are concatenated,
    zero-padding the tile / patch dimension when samples have different numbers of tiles (as the
    processors do). Floating pixel inputs are cast to the model's dtype.

    Returns:
        ``(batch, offsets)``; ``offsets[i]`` is the number of pad positions before sample ``i``.
    """
    lengths = [int(x["input_ids"].shape[1]) for x in inputs]
    width = max(lengths)
    pad_id = vlm.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    batch = {}
    for key in inputs[0]:
        values = [x[key] for x in inputs]
        if not torch.is_tensor(values[0]):
            batch[key] = values[0]
        elif key == "input_ids" or key in _PAD_FILL:
            fill = pad_id if key == "input_ids" else _PAD_FILL[key]
            batch[key] = torch.cat([F.pad(v, (width - v.shape[1], 0), value=fill) for v in values])
        elif all(v.shape[1:] == values[0].shape[1:] for v in values):
            batch[key] = torch.cat(values)
        elif all(v.dim() > 2 and v.shape[2:] == values[0].shape[2:] for v in values):
            most = max(v.shape[1] for v in values)
            batch[key] = torch.cat([torch.cat([v, v.new_zeros(v.shape[:1] + (most - v.shape[1],) + v.shape[2:])], 1)
                                    for v in values])
        else:
            raise InputError(f"cannot batch input {key!r} with shapes {[tuple(v.shape) for v in values]}; "
                             "use batch_size=1")
        if key.startswith("pixel_values") and batch[key].is_floating_point():
            batch[key] = batch[key].to(vlm.dtype)
    return batch, [width - n for n in lengths]


def _eos_ids(vlm) -> set[int]:
    ids = {vlm.tokenizer.eos_token_id}
    configured = getattr(vlm.model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {int(i) for i in ids if i is not None}


def _generate(vlm, prepared: Sequence[PreparedInputs], max_new_tokens: int) -> list[list[int]]:
    """Greedy generation for a batch; return each sample's new tokens before the first stop token.

    Stop tokens are the end-of-sequence ids and the image placeholder (which cannot be fed back).
    """
    batch, _ = pad_batch(vlm, [p.inputs for p in prepared])
    pad_id = vlm.tokenizer.pad_token_id
    with torch.no_grad():
        out = vlm.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad_id if pad_id is not None else 0)
    stop = _eos_ids(vlm) | {vlm.adapter.image_token_id}
    result = []
    for row in out[:, batch["input_ids"].shape[1]:].tolist():
        cut = next((k for k, t in enumerate(row) if t in stop), len(row))
        result.append(row[:cut])
    return result


@contextlib.contextmanager
def _site_hooks(vlm, request: _Request, rows: list[_Row], offsets: list[int], last: list[int]) -> Iterator[dict]:
    """Hooks that collect every site's role features during one batched forward.

    Yields a dict filled during the forward: ``"predictions"``, each row's greedy prediction at its
    last prompt position (the final norm's output through the unembedding); ``"values"``,
    ``{tensor name: (B, hidden) pooled or (sum of positions, hidden) raw}`` fp32 CPU tensors in
    row order; ``"counts"``, ``{role: positions per row}``.
    """
    out: dict = {"predictions": [], "values": {}, "counts": {}}
    width = max(o + len(r.prepared.input_ids) + len(r.appended) for r, o in zip(rows, offsets))
    masks = {}  # role -> (B, T) bool mask of the role's positions in the padded batch
    for role in request.roles:
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, (row, offset) in enumerate(zip(rows, offsets)):
            mask[i, torch.cat([row.positions[p] for p in role.split("+")]) + offset] = True
        masks[role] = mask
        out["counts"][role] = mask.sum(1).tolist()

    def store(point: str, layer: int, hidden: torch.Tensor) -> None:
        for role, mask in masks.items():
            mask = mask.to(hidden.device)
            if request.pool is None:
                values = hidden[mask].float()
            elif request.pool == "mean":
                values = torch.einsum("bt,btd->bd", mask.float() / mask.sum(1, keepdim=True), hidden.float())
            else:
                values = hidden.float().masked_fill(~mask[..., None], -torch.inf).amax(1)
            out["values"][_tensor_name(point, layer, role)] = values.cpu()

    def on_output(point, layer):
        def hook(module, args, output):
            store(point, layer, output[0] if isinstance(output, tuple) else output)
        return hook

    def on_input(layer):
        def hook(module, args, kwargs):
            store("input", layer, kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])
        return hook

    def on_norm(module, args, output):
        rows_at = torch.tensor(last, device=output.device)
        picked = output[torch.arange(len(last), device=output.device), rows_at]
        out["predictions"] = vlm.unembed(picked, final_norm=False).argmax(-1).tolist()

    handles = []
    try:
        for point, layer in request.sites:
            if point == "input":
                handles.append(vlm.layers[layer].register_forward_pre_hook(on_input(layer), with_kwargs=True))
            elif point == "output":
                handles.append(vlm.layers[layer].register_forward_hook(on_output(point, layer)))
            else:
                handles.append(decoder_submodule(vlm, layer, point).register_forward_hook(on_output(point, layer)))
        handles.append(vlm.final_norm.register_forward_hook(on_norm))
        yield out
    finally:
        for handle in handles:
            handle.remove()

