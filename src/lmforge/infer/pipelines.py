"""`lmforge.pipeline(task, model=PATH_or_model)`: text in, plain Python results out, for every task.

    >>> generate = lmforge.pipeline("text-generation", model="runs/gpt")
    >>> generate("Once upon a time", max_new_tokens=20)
    {'generated_text': 'Once upon a time ...'}

A pipeline called with one string returns one result; with a list of strings, a list of results.
Inputs are processed in batches of `batch_size` and cut to the model's maximum length with a
`TruncationWarning` (or an `InputError` with truncation=False).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Iterator

import torch

from ..checkpoint.adapter import apply_adapter
from ..checkpoint.folder import load
from ..errors import InputError
from ..models.heads import sentence_embedding
from ..models.weight_formats import to_weight_format
from .chat import Message, render_chat
from .entities import group_entities, word_predictions
from .generate import eval_mode, generate, stream
from .options import GenerationOptions
from .text import TextEncoder, check_not_empty

TEXT2TEXT_KEYS = {"translation": "translation_text", "summarization": "summary_text", "text2text": "generated_text"}


class Pipeline(abc.ABC):
    """Loads the model if given a path, checks that its head serves the task, batches and truncates."""

    task = ""
    heads: tuple[str, ...] = ()  # model tasks (heads) that can serve this pipeline
    generates = False  # decodes new tokens (served through the server's batching engine)
    parameters: tuple[str, ...] = ()  # per-call options a request may give (encoder pipelines)

    def __init__(self, model, truncation: bool = True, batch_size: int = 8):
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.encoder = TextEncoder(model, truncation)
        self.batch_size = batch_size

    @property
    def max_length(self) -> int:
        return self.model.config.max_positions

    def __call__(self, inputs: str | list[str], **kwargs):
        """One result for a string, a list of results for a list of strings."""
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not texts:
            raise InputError("no inputs given; pass a string or a non-empty list of strings")
        results = []
        with eval_mode(self.model), torch.inference_mode():
            for first in range(0, len(texts), self.batch_size):
                results.extend(self._batch(texts[first:first + self.batch_size], **kwargs))
        return results[0] if single else results

    @abc.abstractmethod
    def _batch(self, texts: list[str], **kwargs) -> list:
        """The results of one batch of texts, in order (each task's own work)."""


class FeatureExtraction(Pipeline):
    """Mean-pooled, L2-normalised sentence embeddings, as lists of floats (`embed` gives a tensor)."""

    task = "feature-extraction"
    heads = ("embedding", "masked-lm", "sequence-classification", "token-classification", "causal-lm", "seq2seq-lm")

    def embed(self, texts: list[str]) -> torch.Tensor:
        """(N, d) normalised embeddings of `texts`."""
        with eval_mode(self.model), torch.inference_mode():
            return torch.cat([self._vectors(texts[i:i + self.batch_size])
                              for i in range(0, len(texts), self.batch_size)])

    def _vectors(self, texts: list[str]) -> torch.Tensor:
        batch = self.encoder.encode(texts, self.max_length)
        if self.model.config.is_encoder_decoder:  # the encoder's states, whatever the head
            hidden = self.model.encode(batch.input_ids, batch.attention_mask)  # (B, T, d)
            return sentence_embedding(hidden, batch.attention_mask)
        out = self.model(batch.input_ids, attention_mask=batch.attention_mask)
        return sentence_embedding(out.hidden_states, batch.attention_mask)  # (B, d), what the embedding head gives

    def _batch(self, texts: list[str]) -> list[list[float]]:
        return self._vectors(texts).float().tolist()


class FillMask(Pipeline):
    """The `top_k` most likely tokens at each mask token: token, token_str, score, sequence."""

    task = "fill-mask"
    heads = ("masked-lm",)
    parameters = ("top_k",)

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        tokenizer = model.tokenizer
        self.mask_id = tokenizer.mask_id if tokenizer.mask_id is not None else model.config.mask_token_id
        if self.mask_id is None:
            raise InputError("this model's tokenizer has no mask token; fill-mask needs one")
        self.mask_token = tokenizer.id_to_token(self.mask_id)

    def _batch(self, texts: list[str], top_k: int = 5) -> list:
        if top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        batch = self.encoder.encode(texts, self.max_length)
        probs = self.model(batch.input_ids, attention_mask=batch.attention_mask).logits.float().softmax(-1)  # (B, T, V)
        results = []
        for row, text in enumerate(texts):
            positions = (batch.input_ids[row] == self.mask_id).nonzero().flatten().tolist()
            if not positions:
                raise InputError(f"input {text!r} has no {self.mask_token} token; put {self.mask_token} where a "
                                 "token should be predicted")
            ids = batch.encodings[row].ids  # right padding: positions in the batch are positions in ids
            per_mask = [self._candidates(probs[row, p], ids, p, top_k) for p in positions]
            results.append(per_mask[0] if len(per_mask) == 1 else per_mask)
        return results

    def _candidates(self, probs: torch.Tensor, ids: list[int], position: int, top_k: int) -> list[dict]:
        scores, tokens = probs.topk(min(top_k, probs.shape[-1]))
        found = []
        for score, token in zip(scores.tolist(), tokens.tolist()):
            filled = ids[:position] + [token] + ids[position + 1:]
            found.append({"token": token, "token_str": self.encoder.decode([token]), "score": score,
                          "sequence": self.encoder.decode(filled)})
        return found


class TextClassification(Pipeline):
    """label + score (softmax), or the `top_k` best labels; one-output regressors give the raw value."""

    task = "text-classification"
    heads = ("sequence-classification",)
    parameters = ("top_k",)

    def _batch(self, texts: list[str], top_k: int | None = 1) -> list:
        batch = self.encoder.encode(texts, self.max_length)
        logits = self.model(batch.input_ids, attention_mask=batch.attention_mask).logits.float()  # (B, L)
        labels = _labels(self.model.config)
        if logits.shape[-1] == 1:
            return [{"label": labels[0], "score": value} for value in logits[:, 0].tolist()]
        probs = logits.softmax(-1)
        k = probs.shape[-1] if top_k is None else min(top_k, probs.shape[-1])
        if k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        scores, index = probs.topk(k)
        ranked = [[{"label": labels[i], "score": s} for s, i in zip(row_s, row_i)]
                  for row_s, row_i in zip(scores.tolist(), index.tolist())]
        return [r[0] for r in ranked] if top_k == 1 else ranked


class TokenClassification(Pipeline):
    """Entities: consecutive words tagged B-X / I-X grouped into spans with character offsets."""

    task = "token-classification"
    heads = ("token-classification",)

    def _batch(self, texts: list[str]) -> list[list[dict]]:
        batch = self.encoder.encode(texts, self.max_length)
        probs = self.model(batch.input_ids, attention_mask=batch.attention_mask).logits.float().softmax(-1)
        scores, labels = probs.max(dim=-1)  # (B, T)
        labels_of = _labels(self.model.config)
        results = []
        for row, (text, encoding) in enumerate(zip(texts, batch.encodings)):
            n = len(encoding.ids)  # right padding: the first n positions are the text's
            words = word_predictions(encoding, labels[row, :n].tolist(), scores[row, :n].tolist())
            results.append(group_entities(text, words, labels_of))
        return results


class _Generating(Pipeline):
    """Shared by text generation and text-to-text: generation options with per-call overrides."""

    default_new_tokens = 20
    generates = True

    @staticmethod
    @abc.abstractmethod
    def result(task: str, text: str, generated: str) -> dict:
        """The result for input `text` and the text generated for it (as `__call__` gives it)."""

    def __init__(self, model, options: GenerationOptions | None = None, **kwargs):
        super().__init__(model, **kwargs)
        base = options or GenerationOptions(max_new_tokens=self.default_new_tokens)
        if base.pad_token_id is None:
            base = GenerationOptions.make(base, pad_token_id=self.encoder.pad_id)
        self.options = base.validate()

    def _continuation(self, prompt_ids: list[int], new_ids: list[int], stop_ids: list[int]) -> str:
        """The text the new tokens add after the prompt (up to the first stop token)."""
        end = next((i for i, t in enumerate(new_ids) if t in stop_ids), len(new_ids))
        prompt_text = self.encoder.decode(prompt_ids)
        return self.encoder.decode(prompt_ids + new_ids[:end])[len(prompt_text):]


class TextGeneration(_Generating):
    """Continue each prompt: {"generated_text": prompt + continuation}; `stream` yields text pieces.

    A conversation (a list of {"role", "content"} messages), or a list of them, is rendered with the
    model's chat template and answered: {"generated_text": messages + [{"role": "assistant", "content": reply}]}.
    """

    task = "text-generation"
    heads = ("causal-lm",)

    @staticmethod
    def result(task: str, text: str, generated: str) -> dict:
        return {"generated_text": text + generated}

    def __call__(self, inputs, **kwargs):
        conversations = as_conversations(inputs)
        if conversations is None:
            return super().__call__(inputs, **kwargs)
        prompts = [render_chat(self.model.tokenizer, messages) for messages in conversations]
        results = super().__call__(prompts, add_special_tokens=False, **kwargs)
        answered = [{"generated_text": [*messages, {"role": "assistant", "content": result["generated_text"][len(prompt):]}]}
                    for messages, prompt, result in zip(conversations, prompts, results)]
        one_conversation = conversations[0] is inputs
        return answered[0] if one_conversation else answered

    def stream_chat(self, messages: list[Message], **overrides) -> Iterator[str]:
        """Yield the assistant's reply to a conversation piece by piece."""
        return self.stream(render_chat(self.model.tokenizer, messages), add_special_tokens=False, **overrides)

    def _prompt_limit(self, options: GenerationOptions) -> int:
        if not self.model.config.positions_bounded:
            return self.max_length
        limit = self.max_length - options.max_new_tokens
        if limit < 1:
            raise InputError(f"max_new_tokens={options.max_new_tokens} leaves no room for a prompt in the "
                             f"model's {self.max_length} positions; lower it")
        return limit

    def _batch(self, texts: list[str], add_special_tokens: bool = True, **overrides) -> list[dict]:
        options = GenerationOptions.make(self.options, **overrides)
        batch = self.encoder.encode(texts, self._prompt_limit(options), left_pad=True, truncate_left=True,
                                    add_special_tokens=add_special_tokens)
        out = generate(self.model, batch.input_ids, batch.attention_mask, options)
        stop_ids = options.stop_ids(self.model.config.eos_token_id)
        width = batch.input_ids.shape[1]
        return [self.result(self.task, text, self._continuation(e.ids, out[row, width:].tolist(), stop_ids))
                for row, (text, e) in enumerate(zip(texts, batch.encodings))]

    def stream(self, text: str, add_special_tokens: bool = True, **overrides) -> Iterator[str]:
        """Yield the continuation of one prompt piece by piece as tokens are produced (a piece is held
        back while it ends inside a multi-byte character)."""
        options = GenerationOptions.make(self.options, **overrides)
        batch = self.encoder.encode([text], self._prompt_limit(options), truncate_left=True,
                                    add_special_tokens=add_special_tokens)
        stop_ids = options.stop_ids(self.model.config.eos_token_id)
        prompt, new, shown = batch.encodings[0].ids, [], ""
        for token in stream(self.model, batch.input_ids, batch.attention_mask, options):
            token = int(token[0])
            if token in stop_ids:
                break
            new.append(token)
            text_so_far = self._continuation(prompt, new, stop_ids)
            if not text_so_far.endswith("\ufffd") and len(text_so_far) > len(shown):
                yield text_so_far[len(shown):]
                shown = text_so_far
        rest = self._continuation(prompt, new, stop_ids)[len(shown):]
        if rest:  # whatever was held back at the very end
            yield rest


class Text2Text(_Generating):
    """Translation, summarization or any text-to-text task with an encoder-decoder."""

    heads = ("seq2seq-lm",)
    default_new_tokens = 64

    def __init__(self, model, task: str = "text2text", prefix: str = "", **kwargs):
        super().__init__(model, **kwargs)
        self.task, self.prefix = task, prefix

    @staticmethod
    def result(task: str, text: str, generated: str) -> dict:
        return {TEXT2TEXT_KEYS[task]: generated.strip()}

    def _batch(self, texts: list[str], **overrides) -> list[dict]:
        options = GenerationOptions.make(self.options, **overrides)
        check_not_empty(texts)  # before the prefix makes every text non-empty
        batch = self.encoder.encode([self.prefix + t for t in texts], self.max_length)
        out = generate(self.model, batch.input_ids, batch.attention_mask, options)
        stop_ids = options.stop_ids(self.model.config.eos_token_id)
        return [self.result(self.task, text, self._continuation([], row[1:], stop_ids))
                for text, row in zip(texts, out.tolist())]


def as_conversations(inputs) -> list[list[Message]] | None:
    """[conversation] for one conversation (a list of message dicts), the list for a list of them, None for text."""
    def is_conversation(value) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)

    if is_conversation(inputs):
        return [inputs]
    if isinstance(inputs, list) and inputs and all(is_conversation(c) for c in inputs):
        return inputs
    return None


PIPELINES = {
    "text-generation": TextGeneration, "fill-mask": FillMask, "text-classification": TextClassification,
    "token-classification": TokenClassification, "feature-extraction": FeatureExtraction,
    "translation": Text2Text, "summarization": Text2Text, "text2text": Text2Text,
}
ALIASES = {"ner": "token-classification", "sentiment-analysis": "text-classification",
           "text2text-generation": "text2text", "embedding": "feature-extraction"}


def pipeline(task: str, model, truncation: bool = True, batch_size: int = 8, device: str | torch.device = "cpu",
             adapter: str | Path | None = None, dtype: str | torch.dtype | None = None, **kwargs) -> Pipeline:
    """A ready pipeline for `task` on `model` (a checkpoint folder, lmforge or Hugging Face, or a loaded
    model), with the LoRA `adapter` folder applied to a model given as a folder, its weights in `dtype` ("fp32",
    "bf16", "int8", ...: see `lmforge.load`). Raises `InputError` when the model's head cannot serve the task, naming the tasks it can serve.
    Extra keyword arguments: `options` (GenerationOptions) for generation tasks, `prefix` for text2text."""
    task = ALIASES.get(task, task)
    if task not in PIPELINES:
        raise InputError(f"unknown pipeline task {task!r}; choose one of: {', '.join(PIPELINES)}")
    if isinstance(model, (str, Path)):
        model = load(model, device=device, adapter=adapter, dtype=dtype)
    else:
        if adapter is not None:
            model = apply_adapter(model, adapter)
        if dtype is not None:
            model = to_weight_format(model, dtype)
    cls = PIPELINES[task]
    if model.task not in cls.heads:
        can = [name for name, c in PIPELINES.items() if model.task in c.heads]
        raise InputError(f"the {task} pipeline needs a model with a {' or '.join(cls.heads)} head, but this "
                         f"model has a {model.task} head; it can serve: {', '.join(can)}")
    if cls is Text2Text:
        kwargs["task"] = task
    return cls(model, truncation=truncation, batch_size=batch_size, **kwargs)


def _labels(config) -> dict[int, str]:
    return config.label_names
