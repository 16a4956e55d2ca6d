"""The models one server serves: loaded checkpoints, the tasks their heads serve, prompts and pipelines."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint.folder import load
from ..checkpoint.hf.tokenizer import chat_template, read_settings
from ..errors import InputError
from ..infer.chat import render_chat
from ..infer.pipelines import PIPELINES, pipeline
from ..models.heads import LMHead
from ..models.weight_formats import weight_format_name
from .engine import Engine
from .errors import ApiError, bad_field
from .metrics import Metrics

GENERATION_TASKS = tuple(task for task, cls in PIPELINES.items() if cls.generates)  # through the batching engine
ENCODER_TASKS = tuple(task for task, cls in PIPELINES.items() if not cls.generates)  # one pipeline call


def servable_tasks(model) -> list[str]:
    """The pipeline tasks this model's head can serve."""
    return [task for task, cls in PIPELINES.items() if model.task in cls.heads]


def parse_model_specs(first: str, extra: list[str]) -> list[tuple[str, Path]]:
    """MODEL and `--model NAME=PATH` values -> (name, path); `InputError` for a duplicate name."""
    specs = [(Path(first).resolve().name, Path(first))]
    for item in extra:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--model {item!r} must be NAME=PATH, e.g. --model small=runs/gpt/final")
        specs.append((name, Path(path)))
    seen = set()
    for name, _ in specs:
        if name in seen:
            raise InputError(f"two models are named {name!r}; give each a different name with --model NAME=PATH")
        seen.add(name)
    return specs


def parse_per_model(values: list[str], names: list[str], flag: str) -> dict[str, list[str]]:
    """`FLAG [NAME=]VALUE` values -> the values given for each model name (without NAME=: for every model)."""
    per_model: dict[str, list[str]] = {}
    for item in values:
        name, sep, value = item.rpartition("=")
        targets = [name] if sep else names
        if sep and name not in names:
            raise InputError(f"{flag} {item!r} names model {name!r}, but the models are: {', '.join(names)}")
        for target in targets:
            per_model.setdefault(target, []).append(value)
    return per_model


def parse_task_limits(values: list[str], names: list[str]) -> dict[str, list[str]]:
    """`--task [NAME=]TASK` values -> tasks per model name (no entry: every task its head serves)."""
    return parse_per_model(values, names, "--task")


def parse_dtypes(values: list[str], names: list[str]) -> dict[str, str]:
    """`--dtype [NAME=]DTYPE` values -> the weight format of each model name (no entry: fp32); the last one
    given for a model wins, so `--dtype int8 --dtype small=fp32` runs every model but `small` in int8."""
    per_model = parse_per_model(values, names, "--dtype")
    for dtypes in per_model.values():
        for dtype in dtypes:
            weight_format_name(dtype)
    return {name: dtypes[-1] for name, dtypes in per_model.items()}


class ChatFormat:
    """Messages -> prompt text: the checkpoint's chat template (the tokenizer's own, else chat_template.jinja or
    tokenizer_config.json's `chat_template` in the folder) rendered as Hugging Face renders it
    (`infer.chat.render_chat`), or a plain 'role: content' transcript."""

    def __init__(self, folder: Path, tokenizer):
        self.tokenizer = tokenizer
        self.template = tokenizer.chat_template or chat_template(folder, read_settings(folder))

    def render(self, messages: list[dict]) -> str:
        if self.template is None:
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            return "\n".join(lines) + "\nassistant:"
        return render_chat(self.tokenizer, messages, template=self.template)

    def ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the prompt: a template writes its own special tokens (none are added, so no second
        BOS); a plain transcript gets the tokenizer's usual ones."""
        return self.tokenizer.encode(self.render(messages), add_special_tokens=self.template is None)


class ServedModel:
    """One loaded checkpoint with its engine thread, pipelines and prompt helpers."""

    def __init__(self, name: str, path: Path, metrics: Metrics, tasks: list[str] | None = None,
                 dtype: str | None = None, **engine_options):
        self.name, self.path = name, path
        self.model = load(path, dtype=dtype)
        if self.model.tokenizer is None:
            raise InputError(f"{path} has no tokenizer; the server needs one to read text (save the model with "
                             "its tokenizer)")
        can = servable_tasks(self.model)
        for task in tasks or []:
            if task not in PIPELINES:
                raise InputError(f"unknown task {task!r} for --task; choose one of: {', '.join(PIPELINES)}")
            if task not in can:
                raise InputError(f"model {name!r} has a {self.model.task} head and cannot serve {task}; "
                                 f"it can serve: {', '.join(can)}")
        self.tasks = list(tasks) if tasks else can
        self.generates = isinstance(self.model.head, LMHead)
        self.pipelines = {task: pipeline(task, self.model) for task in self.tasks if task in ENCODER_TASKS}
        self.chat = ChatFormat(path, self.model.tokenizer)
        self.engine = Engine(self.model, name, metrics, **engine_options)

    @property
    def context_length(self) -> int:
        return self.model.config.max_positions

    def describe(self) -> dict:
        """The /v1/models entry."""
        c = self.model.config
        return {"id": self.name, "object": "model", "created": 0, "owned_by": "lmforge", "family": c.family,
                "head": self.model.task, "tasks": self.tasks, "context_length": self.context_length,
                "parameters": self.model.num_parameters()}

    def encode(self, text: str, special_tokens: bool = True) -> list[int]:
        return self.model.tokenizer.encode(text, add_special_tokens=special_tokens)

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        return self.chat.ids(messages)

    def kv_bytes_upper_bound(self) -> int:
        """Bytes the KV cache takes with every batch slot at the full context (plus cross-attention keys/values)."""
        c = self.model.config
        layers = c.decoder_layers if c.is_encoder_decoder else c.n_layers
        per_token = 2 * layers * c.kv_heads * c.head_dim * self.model.dtype.itemsize
        tokens = self.context_length * (2 if c.is_encoder_decoder else 1)
        return self.engine.max_batch * tokens * per_token if self.generates else 0

    # ---- request checks (HTTP errors) ----------------------------------------------------------------------
    def check_length(self, ids: list[int], max_tokens: int, param: str) -> None:
        """400 `context_length_exceeded` when the prompt (+ the tokens to generate) does not fit the context."""
        limit = self.context_length
        if not ids:
            raise bad_field(param, f"'{param}' is empty; give at least one token of text")
        seq2seq = self.model.config.is_encoder_decoder
        needed = max_tokens + (1 if seq2seq else len(ids))
        if len(ids) > limit or (self.model.config.positions_bounded and needed > limit):
            where = f"{len(ids)} in the prompt, {max_tokens} in the completion"
            raise ApiError(400, f"this model's maximum context length is {limit} tokens, but {where} were "
                           f"requested; shorten the prompt or lower max_tokens", param=param,
                           code="context_length_exceeded")

    def default_new_tokens(self, prompt_len: int, most: int) -> int:
        """`most` new tokens, or as many as the context leaves after the prompt (at least 1)."""
        room = self.context_length - (1 if self.model.config.is_encoder_decoder else prompt_len)
        return max(1, min(most, room))

    def needs_generation(self, endpoint: str) -> None:
        if not self.generates:
            raise ApiError(400, f"model {self.name!r} has a {self.model.task} head and cannot generate text "
                           f"({endpoint}); it can serve: {', '.join(self.tasks)}", param="model",
                           code="unsupported_task")

    def completion_prompts(self, prompt) -> list[list[int]]:
        """OpenAI's `prompt`: a string, a list of strings or a list of token ids -> token ids per prompt."""
        if isinstance(prompt, str):
            return [self.encode(prompt)]
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            vocab = self.model.config.vocab_size
            if not all(0 <= t < vocab for t in prompt):
                raise bad_field("prompt", f"'prompt' holds token ids outside the vocabulary (0..{vocab - 1})")
            return [prompt]
        if isinstance(prompt, list) and prompt and all(isinstance(t, str) for t in prompt):
            return [self.encode(p) for p in prompt]
        raise bad_field("prompt", "'prompt' must be a string, a list of strings or a list of token ids")
