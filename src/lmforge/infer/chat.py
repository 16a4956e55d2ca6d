"""Chat templates: a conversation (a list of {"role", "content"} messages) rendered to the prompt text a chat
model was trained on, with the Jinja template its tokenizer carries.

Rendering follows Hugging Face's `apply_chat_template`: an immutable sandbox (the template comes with a
downloaded checkpoint and is untrusted), `trim_blocks` and `lstrip_blocks`, loop controls, a `tojson` filter
that does not escape HTML, `raise_exception`, `strftime_now`, and the variables `messages`, `tools`,
`documents`, `add_generation_prompt` and the special tokens (`bos_token`, `eos_token`, ...). The rendered
text already holds the special tokens it needs, so it is tokenized without adding any (no second BOS).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import CheckpointError, InputError

Message = dict[str, Any]


def render_chat(tokenizer, messages: list[Message], add_generation_prompt: bool = True,
                template: str | None = None, **variables) -> str:
    """The prompt text for `messages` under `template` (default: the tokenizer's chat template).
    `variables` reach the template too (e.g. enable_thinking=False for Qwen3)."""
    template = template if template is not None else getattr(tokenizer, "chat_template", None)
    if template is None:
        raise InputError("this model's tokenizer has no chat template (tokenizer_config.json 'chat_template' or "
                         "chat_template.jinja); give one with --template FILE, or use `lmforge generate` for plain text")
    check_messages(messages)
    context = {**{f"{role}_token": token for role, token in tokenizer.specials.items()}, **variables}
    compiled = compile_template(template)
    try:
        return compiled.render(messages=messages, tools=None, documents=None,
                               add_generation_prompt=add_generation_prompt, **context)
    except jinja2.exceptions.UndefinedError as error:
        raise InputError(f"the chat template uses an unknown variable ({error}); the template gets messages, "
                         f"add_generation_prompt, tools, documents and {', '.join(sorted(context)) or 'no tokens'}"
                         ) from None
    except jinja2.exceptions.TemplateError as error:  # raise_exception(...) in the template, a security refusal
        raise InputError(f"the chat template refused this conversation: {error}") from None


def chat_ids(tokenizer, messages: list[Message], add_generation_prompt: bool = True,
             template: str | None = None, **variables) -> list[int]:
    """Token ids of the rendered conversation (no special tokens added on top of the template's own)."""
    text = render_chat(tokenizer, messages, add_generation_prompt, template, **variables)
    return tokenizer.encode(text, add_special_tokens=False)


def check_messages(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise InputError("a conversation is a non-empty list of {'role': ..., 'content': ...} messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise InputError(f"message {index + 1} of the conversation is {message!r}; every message needs a "
                             "'role' (system, user, assistant) and a 'content'")


@lru_cache(maxsize=16)
def compile_template(template: str):
    """The template compiled in Hugging Face's sandboxed environment; `CheckpointError` for bad syntax."""
    class PrintedUndefined(jinja2.Undefined):
        """Lenient in tests (`if message.tool_calls`), an error when printed: a template that writes a
        variable nobody gave it is broken, not silently empty."""

        __str__ = jinja2.StrictUndefined.__str__

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols],
                                        undefined=PrintedUndefined)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as error:
        raise CheckpointError(f"the chat template is not valid Jinja (line {error.lineno}: {error.message}); "
                              "fix the template") from None


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)
