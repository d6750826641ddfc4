"""Build the zoo's tokenizer, processor and LLaVA models offline, and encode samples fast.

The tokenizer is word level (lower-cased, split on whitespace and punctuation) with LLaVA-1.5's
chat layout ``USER: <image>\\n{question} ASSISTANT:``. The processor is transformers'
``LlavaProcessor`` with a ``CLIPImageProcessor``; models are ``LlavaForConditionalGeneration``
(CLIP vision tower, MLP projector, Llama decoder). :func:`encode` reproduces the processor's
token ids and pixel values without its per-call overhead, for training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

from analysis.data.shapes import COLORS, COUNT_WORDS, SHAPES, SIZES, Sample

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIALS = (PAD, BOS, EOS, UNK, IMAGE)
DESCRIBE_PROMPT = "describe the image ."
WORDS = sorted(set(
    "user assistant : ? . , what color size is the or left right of above below are and same there "
    "a how many shapes at x y yes no true false describe image".split()
    + [str(d) for d in range(10)] + list(SHAPES) + list(COLORS) + list(SIZES) + list(COUNT_WORDS)))
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for part in parts %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% for part in parts %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{{ eos_token }} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a zoo model; ``image_size / patch_size`` squared is the number of image tokens."""

    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 3
    vision_heads: int = 4
    vision_mlp: int = 256
    text_hidden: int = 96
    text_layers: int = 4
    text_heads: int = 4
    text_mlp: int = 256
    max_positions: int = 256

    @property
    def n_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Return the word-level tokenizer: ids 0-4 are <pad> <s> </s> <unk> <image>, then ``WORDS``."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + tuple(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE}, chat_template=CHAT_TEMPLATE,
        padding_side="left", model_max_length=ModelSpec.max_positions)


def build_processor(spec: ModelSpec = ModelSpec()) -> LlavaProcessor:
    """Return the LLaVA processor: resize shortest edge + centre crop to ``spec.image_size``."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size}, crop_size={"height": spec.image_size, "width": spec.image_size},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return LlavaProcessor(image_processor=image_processor, tokenizer=build_tokenizer(),
                          patch_size=spec.patch_size, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)


def build_config(spec: ModelSpec = ModelSpec()) -> LlavaConfig:
    """Return a LLaVA config: CLIP tower (CLS token dropped: "default" strategy, last layer)."""
    tokenizer = build_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden, intermediate_size=spec.vision_mlp, num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads, image_size=spec.image_size, patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden)
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.text_hidden, intermediate_size=spec.text_mlp,
        num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_heads, max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
                       image_seq_length=spec.n_image_tokens, vision_feature_select_strategy="default",
                       vision_feature_layer=-1, projector_hidden_act="gelu", tie_word_embeddings=False)


def build_model(spec: ModelSpec = ModelSpec(), seed: int = 0) -> LlavaForConditionalGeneration:
    """Return a freshly initialised LLaVA model (deterministic for ``seed``)."""
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(spec))
    model.config.zoo_spec = asdict(spec)
    return model


class Encoder:
    """Turn samples into training tensors exactly as the processor would, but fast.

    ``dialog`` turns a conversation into (ids, labels); ``batch`` pads rows into model inputs.
    """

    def __init__(self, spec: ModelSpec = ModelSpec()):
        self.spec = spec
        self.tokenizer = build_tokenizer()
        self.vocab = self.tokenizer.get_vocab()
        self.mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(3, 1, 1)

    def ids(self, text: str) -> list[int]:
        """Return the ids of ``text`` (no special tokens added)."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, question: str, image: bool = True, context: str = "") -> list[int]:
        """Return the prompt ids: <s> USER: [<image>*N | context] question ASSISTANT:."""
        return self.dialog([(question, None)], image, context)[0]

    def dialog(self, turns: list[tuple[str, str | None]], image: bool = True,
               context: str = "") -> tuple[list[int], list[int]]:
        """Return (ids, labels) of a conversation, as the chat template writes it.

        The first user turn holds the image placeholders (or ``context`` text when ``image`` is
        False); each answer is followed by </s>; labels are -100 except on answers and </s>.
        A final ``(question, None)`` turn ends with the generation prompt "ASSISTANT:".
        """
        ids, labels = [self.vocab[BOS]], [-100]
        for k, (question, answer) in enumerate(turns):
            head = self.ids("USER:")
            if k == 0:
                head += [self.vocab[IMAGE]] * self.spec.n_image_tokens if image else self.ids(context)
            prompt = head + self.ids(question) + self.ids("ASSISTANT:")
            target = [] if answer is None else self.ids(answer) + [self.vocab[EOS]]
            ids += prompt + target
            labels += [-100] * len(prompt) + target
        return ids, labels

    def pixels(self, images) -> torch.Tensor:
        """Return normalised pixel values (B, 3, S, S) of images already rendered at S px."""
        arr = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
        return (arr.permute(0, 3, 1, 2).float() / 255 - self.mean) / self.std

    def batch(self, rows: list[tuple[list[int], list[int]]], images=None) -> dict:
        """Return right-padded ``input_ids``, ``labels``, ``attention_mask`` (B, T) and ``pixel_values``."""
        width = max(len(ids) for ids, _ in rows)
        pad = self.vocab[PAD]
        return {
            "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
            "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
            "pixel_values": None if images is None else self.pixels(images),
        }

    def samples(self, samples: list[Sample], answer_map: dict[str, str] | None = None) -> dict:
        """Return a training batch of single-turn image questions (answers renamed by ``answer_map``)."""
        renames = answer_map or {}
        return self.batch([self.dialog([(s.question, renames.get(s.answer, s.answer))]) for s in samples],
                          [s.image for s in samples])
