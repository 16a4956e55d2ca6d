"""Reading the files a user edits (JSON/YAML settings, configs, indexes) and naming file-system failures.

    read_mapping(path, "model config")  # a dict, or one-line ConfigError for a syntax error / wrong shape
    check_fields(settings, "training setting")  # every dataclass field has its declared type
    coerce_fields(TrainSettings, {"lr": "3e-4"})  # {"lr": 0.0003}: only unambiguous text becomes a number
    describe_os_error(error)  # "cannot write afile/x: a file stands where a folder is needed (...)"
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterator

import yaml

from .errors import ConfigError, LmforgeError


def read_mapping(path: str | Path, what: str, error: type[LmforgeError] = ConfigError) -> dict[str, Any]:
    """The JSON or YAML object in file `path` (YAML for .yaml/.yml); `what` names it in errors.
    A missing file, a syntax error or a top level that is not a mapping raises `error` in one line."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    text = path.read_text(encoding="utf-8")
    is_yaml = path.suffix in (".yaml", ".yml")
    try:
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as problem:
        where = _position(problem)
        raise error(f"{what} {path} is not valid {'YAML' if is_yaml else 'JSON'}{where}: "
                    f"{_first_line(problem)}; fix the file or write it again") from None
    if data is None and is_yaml:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {path} must hold a mapping of names to values, not a {type(data).__name__}")
    return data


def _position(problem: Exception) -> str:
    if isinstance(problem, json.JSONDecodeError):
        return f" (line {problem.lineno}, column {problem.colno})"
    mark = getattr(problem, "problem_mark", None)
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _first_line(problem: Exception) -> str:
    if isinstance(problem, json.JSONDecodeError):
        return problem.msg
    text = getattr(problem, "problem", None) or str(problem)
    return " ".join(str(text).split())


# ---- typed dataclass fields -----------------------------------------------------------------------
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def coerce_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """A copy of `data` (field name -> value for dataclass `cls`) where text that can only mean a number is
    that number: "3e-4" for a float field (PyYAML reads 3e-4 without a dot as text), "12" for an int field.
    Nothing else is converted ("no" stays text and `check_fields` refuses it for a bool)."""
    hints = typing.get_type_hints(cls)
    coerced = dict(data)
    for name, value in data.items():
        if not isinstance(value, str) or name not in hints:
            continue
        allowed = _allowed_types(hints[name])
        text = value.strip()
        if int in allowed and _INTEGER.fullmatch(text):
            coerced[name] = int(text)
        elif float in allowed and _NUMBER.fullmatch(text):
            coerced[name] = float(text)
    return coerced


def check_fields(instance: Any, what: str) -> None:
    """Raise `ConfigError` naming the first field of dataclass `instance` whose value does not have its
    declared type (bool is not accepted as a number, nor a number as a bool; an int is a valid float)."""
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        allowed = _allowed_types(hints[field.name])
        if not _is_instance(value, allowed):
            raise ConfigError(f"invalid {what}: {field.name}={value!r} must be {_describe(allowed)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"invalid {what}: {field.name}={value!r} must be a finite number")


def _allowed_types(hint: Any) -> tuple[Any, ...]:
    """The runtime types a type hint accepts: `float | None` -> (float, NoneType)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _allowed_types(arg))
    if hint is type(None) or hint is None:
        return (type(None),)
    if hint is Any:
        return (object,)
    return (origin or hint,)


def _is_instance(value: Any, allowed: tuple[Any, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed or object in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def _describe(allowed: tuple[Any, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", dict: "a mapping",
             list: "a list", type(None): "null"}
    return " or ".join(names.get(t, getattr(t, "__name__", str(t))) for t in allowed)


# ---- file-system failures -------------------------------------------------------------------------
_CAUSES = {
    errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
    errno.EEXIST: "a file or folder is already there; choose another path",
    errno.EISDIR: "it is a folder; give a file name",
    errno.EACCES: "permission denied; choose a location you may write, or fix its permissions",
    errno.EPERM: "operation not permitted (immutable or protected); choose another location",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENOSPC: "no space left on the device; free some space or choose another location",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another location",
    errno.ENOENT: "no such file or folder",
    errno.EBUSY: "it is in use (the current folder or a mount point); choose another path",
    errno.ENAMETOOLONG: "the name is too long",
}


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Name `path` in the errors of the writes inside: an OSError without a file name gets it, and the
    plain exceptions of Rust libraries (safetensors, tokenizers) that carry "(os error N)" become OSErrors."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            raise OSError(error.errno, error.strerror or str(error), str(path)) from None
        raise
    except Exception as error:
        code = re.search(r"os error (\d+)", str(error))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def describe_os_error(error: OSError) -> str:
    """One line naming the path(s) of a failed file-system operation and what to do about it."""
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    cause = _CAUSES.get(error.errno, error.strerror or str(error))
    return f"cannot use {paths}: {cause}" if paths else f"file-system error: {cause}"
