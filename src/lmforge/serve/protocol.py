"""Request bodies -> checked values: every invalid field is a 400 naming it (OpenAI's `param`)."""

from __future__ import annotations

import json

from .engine import Sampling
from .errors import ApiError, bad_field

_MISSING = object()


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400 saying why it is not one."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the request body is not valid JSON ({error}); send a JSON object",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    return body


class Fields:
    """Typed access to a JSON object's fields; a wrong type or value raises a 400 naming the field."""

    def __init__(self, body: dict, prefix: str = ""):
        self.body, self.prefix = body, prefix

    def _name(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def get(self, name: str, kinds: tuple, default=_MISSING, low=None, high=None, low_open=False,
            what: str = ""):
        value = self.body.get(name, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise bad_field(self._name(name), f"'{self._name(name)}' is required", code="missing_required_parameter")
            return default
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise bad_field(self._name(name), f"'{self._name(name)}' must be {what or names}, got {value!r}",
                            code="invalid_type")
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            bound = f"in {'(' if low_open else '['}{low}, {high}]" if high is not None \
                else f"{'>' if low_open else '>='} {low}"
            raise bad_field(self._name(name), f"'{self._name(name)}' must be {bound}, got {value!r}")
        return value

    def strings(self, name: str, default=_MISSING) -> list[str] | None:
        """A string or a list of strings (OpenAI's `stop`, `input`), as a list."""
        value = self.body.get(name, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise bad_field(self._name(name), f"'{self._name(name)}' is required", code="missing_required_parameter")
            return default
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
        raise bad_field(self._name(name), f"'{self._name(name)}' must be a string or a non-empty list of strings")


def sampling(fields: Fields, default_max_tokens: int, default_temperature: float = 1.0) -> Sampling:
    """OpenAI's sampling fields (plus top_k and stop_token_ids): temperature 0 means greedy."""
    number = (int, float)
    stop = fields.strings("stop", default=[])
    if len(stop) > 4:
        raise bad_field("stop", f"'stop' takes at most 4 sequences, got {len(stop)}")
    n = fields.get("n", (int,), 1, low=1, high=1, what="1 (one choice per prompt)")
    del n
    stop_ids = fields.get("stop_token_ids", (list,), [])
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in stop_ids):
        raise bad_field("stop_token_ids", "'stop_token_ids' must be a list of integer token ids")
    return Sampling(
        max_tokens=fields.get("max_completion_tokens", (int,), None, low=1)
        or fields.get("max_new_tokens", (int,), None, low=1)  # the pipelines' name
        or fields.get("max_tokens", (int,), default_max_tokens, low=1),
        temperature=float(fields.get("temperature", number, default_temperature, low=0, high=2)),
        top_k=fields.get("top_k", (int,), 0, low=0),
        top_p=float(fields.get("top_p", number, 1.0, low=0, high=1, low_open=True)),
        seed=fields.get("seed", (int,), None),
        stop=stop, stop_token_ids=stop_ids, ignore_eos=fields.get("ignore_eos", (bool,), False))


def stream_settings(fields: Fields) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = fields.get("stream", (bool,), False)
    options = fields.get("stream_options", (dict,), {})
    include_usage = Fields(options, "stream_options.").get("include_usage", (bool,), False)
    return stream, include_usage


def messages(fields: Fields) -> list[dict]:
    """Chat messages: a non-empty list of {"role", "content"} with string content (or text parts)."""
    value = fields.get("messages", (list,))
    if not value:
        raise bad_field("messages", "'messages' must be a non-empty list")
    out = []
    for index, message in enumerate(value):
        item = Fields(message if isinstance(message, dict) else {}, f"messages[{index}].")
        if not isinstance(message, dict):
            raise bad_field(f"messages[{index}]", f"'messages[{index}]' must be an object with role and content")
        role = item.get("role", (str,))
        content = message.get("content")
        if isinstance(content, list):  # OpenAI's content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            raise bad_field(f"messages[{index}].content", f"'messages[{index}].content' must be a string")
        out.append({"role": role, "content": content})
    return out
