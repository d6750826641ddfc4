"""Shared parts of the tiny models: sizes, the offline tokenizer, the Llama config and the chat templates
several families use (see ``analysis.testing``)."""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    ProcessorMixin,
)

from analysis.real_tokenizers import tokenizer_file

# Text decoder and vision encoder sizes shared by all families.
_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)

# Standard deviation of the random weights. transformers' default (0.02) gives a tiny model whose
# next-token distribution is almost uniform (top p ~ 1/vocabulary), so knockouts, occlusions and
# lens readings move probabilities by 1e-6 and an exactness test at 1e-5 could not tell a probe
# that does nothing from one that works. At 0.2 outputs are peaked like a trained model's (top p
# 0.03-0.1) and the effects the tests check are 1e-3 to 1 in log-probability.
_INIT_STD = 0.2

# Fields a sub-config derives from others or that name the writing version; rebuilt from the new values.
_DERIVED = ("transformers_version", "dtype", "architectures")

# What a family builder returns: the model config and the processor the model is built for.
_Recipe = tuple[PretrainedConfig, ProcessorMixin]

_WORDS = """
a an the this that these those it its there here what which where who whom whose why how when
is are was were be been being do does did has have had can could will would should may might must
of in on at to from by with without for into onto over under above below behind beside between
near next inside outside around across along through toward up down left right top bottom middle
center centre front back side corner edge part half first second third last other another same
different both each every all any some no not none only also and or but if than then so very
more most less least many much few several number count
yes true false
color colour shape size kind type name position place location object objects thing things item
items picture image photo photograph scene view background foreground area region
red green blue yellow orange purple pink brown black white gray grey cyan magenta violet gold
silver dark light bright pale
circle circles square squares triangle triangles rectangle rectangles star stars ellipse ellipses
disk dot dots line lines cross diamond hexagon pentagon ring heart arrow polygon box boxes ball
balls cube cubes sphere spheres cylinder block blocks
big small large little tiny huge long short tall wide narrow thin thick round flat solid empty
full filled striped dotted plain
one two three four five six seven eight nine ten zero eleven twelve
cat cats dog dogs person people man woman child astronaut rocket coffee cup mug camera coin coins
horse bird birds car cars tree trees flower flowers house sky water grass road street text sign
table chair book face hand hat shirt moon sun space cell cells page letter letters word words
see show shows shown look looks find describe caption answer question using single phrase
brief briefly detail detailed explain tell say write give list detect segment locate point
you your i me my we our they them he she his her
helpful assistant user system
USER ASSISTANT
en
""".split()
_DIGITS = [str(i) for i in range(21)]
_PUNCT = list("?.,!:;'\"()-/")


def _byte_level_bpe() -> Tokenizer:
    """A GPT-2-style byte-level BPE trained on the toy words, each with and without its leading space ("Ġ"), until every
    one is a single token (the 256 byte symbols, then the merges; deterministic). Special and added tokens are the
    caller's."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    words = [*_WORDS, *(w.capitalize() for w in _WORDS), *_DIGITS, *_PUNCT]
    trainer = trainers.BpeTrainer(vocab_size=100_000, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([*words, *(" " + w for w in words)], trainer=trainer)
    return backend


def _add_tokens(backend: Tokenizer, special, extra_tokens) -> None:
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra_tokens])


@functools.cache
def _scratch() -> Path:
    """A folder for this process's derived tokenizer files, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="vlm-probes-tokenizers-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def _real_tokenizer_file(real: str, special: tuple[str, ...], extra_tokens: tuple[str, ...]) -> tuple[str, str | None]:
    """The real tokenizer ``real`` with ``special`` and ``extra_tokens`` added, saved once per process; returns its
    path and its unknown token (``"<unk>"`` or None).

    transformers loads a ``tokenizer_file`` as it is but deep-copies a ``tokenizer_object``, and the copy of a
    real vocabulary costs more than reading it (Llama-3's 128k tokens: 1.2 s against 0.6 s; Gemma-3's 262k: 2.2 s
    against 1.6 s), once per tiny model built around it.
    """
    backend = Tokenizer.from_file(str(tokenizer_file(real)))
    backend.no_padding()
    backend.no_truncation()
    _add_tokens(backend, special, extra_tokens)
    digest = hashlib.sha256(json.dumps([real, special, extra_tokens]).encode()).hexdigest()[:16]
    path = _scratch() / f"{real}-{digest}.json"
    backend.save(str(path))
    return str(path), "<unk>" if backend.token_to_id("<unk>") is not None else None


def _tokenizer(
    bos: str | None,
    eos: str,
    pad: str,
    specials: list[str],
    chat_template: str | None,
    add_bos_token: bool = False,
    extra_tokens: tuple[str, ...] = (),
    real: str | None = None,
    named: dict[str, str] | None = None,
    byte_level: bool = False,
) -> PreTrainedTokenizerFast:
    """Return the family's tokenizer: a toy WordLevel one, or with ``real`` a real one (``analysis.real_tokenizers``).

    Toy: the given special tokens first (ids 0..k), then the words. ``specials`` are special added
    tokens (not split, dropped by ``skip_special_tokens``); ``extra_tokens`` are ordinary added
    tokens (kept by decode), and ``"\\n"`` is always one. ``<unk>`` is id 0. ``named`` gives some of
    ``specials`` a name the processor reads (``{"boi_token": "<start_of_image>"}`` -> ``tok.boi_token``
    and ``tok.boi_token_id``).

    ``byte_level``: the toy vocabulary as a GPT-2-style byte-level BPE instead (``_byte_level_bpe``), for model types
    whose checkpoints transformers reloads with ``GPT2Tokenizer`` whatever the saved class (HyperCLOVA X): it keeps
    spaces and punctuation as written ("circle?" decodes as "circle?"), and has no ``<unk>``.

    Real: the published ``tokenizer.json`` with the family's special tokens added where the
    vocabulary lacks them (as the checkpoints add e.g. LLaVA-1.5's ``<image>`` and ``<pad>``).
    """
    special = list(dict.fromkeys([*([bos] if bos else []), eos, pad, *specials]))
    if real is None:
        if byte_level:
            backend = _byte_level_bpe()
        else:
            special = ["<unk>", *special]
            words = [*_WORDS, *(w.capitalize() for w in _WORDS), *_DIGITS, *_PUNCT]
            vocab = {token: i for i, token in enumerate(dict.fromkeys([*special, *extra_tokens, "\n", *words]))}
            backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
            backend.pre_tokenizer = pre_tokenizers.Whitespace()  # no decoder: decode joins tokens with " "
            extra_tokens = (*extra_tokens, "\n")
        _add_tokens(backend, special, extra_tokens)
        source = {"tokenizer_object": backend}
        unk = "<unk>" if backend.token_to_id("<unk>") is not None else None
    else:
        path, unk = _real_tokenizer_file(real, tuple(special), tuple(extra_tokens))
        source = {"tokenizer_file": path}
    return PreTrainedTokenizerFast(
        **source,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=[t for t in special if t not in {"<unk>", bos, eos, pad}],
        add_bos_token=add_bos_token,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        chat_template=chat_template,
        model_max_length=32768,
        **(named or {}),
    )


def _llama(tok: PreTrainedTokenizerFast) -> LlamaConfig:
    """Return a tiny Llama text config over ``tok``'s vocabulary."""
    return LlamaConfig(
        **_TEXT,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


# LLaVA-1.5 (llava-hf/llava-1.5-7b-hf), images first, then the text.
_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# LLaVA-NeXT with a Mistral decoder (llava-hf/llava-v1.6-mistral-7b-hf).
_LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{% endif %}"
    "{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ ' ' + content['text'] }}{% endfor %}{{ '</s>' }}"
    "{% endif %}{% endfor %}"
)

# Qwen2-VL-Instruct's ChatML template.
_QWEN_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-OneVision's ChatML (Qwen2 decoder): the image as "<image>\n" before the text.
_ONEVISION_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Idefics3 (HuggingFaceM4/Idefics3-8B-Llama3); SmolVLM uses the same body after "<|im_start|>".
_IDEFICS_BODY = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
_IDEFICS_TILE_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


# Gemma 3 (google/gemma-3-4b-it): Gemma turns, the image as "<start_of_image>" inside the user turn.
_GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


