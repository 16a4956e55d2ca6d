"""One write policy for every command's output (--out folders and files).

    claim_folder(path, "shards", overwrite)   # before writing: may `path` receive this kind of output?
    ... write ...
    mark_folder(path, "shards")               # after writing: lmforge's own output, of this kind

A non-empty folder (or an existing file) lmforge did not write is refused, naming the path. `--overwrite`
replaces only lmforge's earlier output of the SAME kind (a tokenizer replaces a tokenizer, never a
checkpoint); nothing else is ever deleted. A folder's kind is read from its marker file, `.lmforge-output`
(or, for folders written before the marker existed, from the file that kind always writes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import ConfigError
from .atomic import write_text
from .io import is_lmforge_checkpoint

MARKER = ".lmforge-output"
KINDS = ("tokenizer", "shards", "pretrain", "finetune", "distill", "checkpoint", "hf-checkpoint", "demo")
# folders written before the marker: the file each kind always wrote
LEGACY_FILES = {"pretrain": "run.json", "finetune": "finetune.json", "distill": "distill.json",
                "demo": ".lmforge-demo"}
METRICS_KEYS = ("task", "model", "data", "wall_s")  # what every `lmforge evaluate` metrics file holds


def folder_kind(path: str | Path) -> str | None:
    """The kind of lmforge output in folder `path` (None: not lmforge's, or not a folder)."""
    path = Path(path)
    marker = path / MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text(encoding="utf-8"))["kind"]
        except (ValueError, KeyError, TypeError, OSError):
            return None
    legacy = next((kind for kind, name in LEGACY_FILES.items() if (path / name).is_file()), None)
    if legacy is None and is_lmforge_checkpoint(path):
        return "checkpoint"
    return legacy


def is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def claim_folder(path: str | Path, kind: str, overwrite: bool, option: str = "--out",
                 exists_hint: str | None = None) -> bool:
    """Check that folder `path` may receive output of `kind`. Returns True when it holds earlier output of
    that kind which `overwrite` allows to replace, False when it is new or empty. `exists_hint` replaces
    the advice given when the same kind is already there and `overwrite` is not set."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file; give a folder (nothing was written)")
    if not path.exists() or is_empty_folder(path):
        return False
    found = folder_kind(path)
    if found != kind:
        what = f"lmforge {found} output" if found else "no lmforge run or output, only files lmforge did not write"
        raise ConfigError(f"{path} is not empty and is not a {kind} folder (it holds {what}); choose a new or "
                          f"empty folder for {option} (--overwrite replaces only earlier {kind} output)")
    if not overwrite:
        raise ConfigError(exists_hint or f"{path} already holds lmforge {kind} output; pass --overwrite to "
                          f"replace it, or choose another {option}")
    return True


def mark_folder(path: str | Path, kind: str) -> None:
    """Record that folder `path` holds lmforge output of `kind`."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    write_text(Path(path) / MARKER, json.dumps({"kind": kind}) + "\n")


def start_folder(path: str | Path, kind: str, overwrite: bool, option: str = "--out") -> Path:
    """Claim `path` for `kind`, remove the earlier output of that kind when `overwrite` allows it, and
    create and mark the folder. For outputs written in place (run folders), not atomically."""
    path = Path(path)
    if claim_folder(path, kind, overwrite, option):
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    mark_folder(path, kind)
    return path


def claim_file(path: str | Path, overwrite: bool, option: str = "--out") -> None:
    """Check that file `path` may be written: new, or an earlier lmforge metrics file with `overwrite`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name such as {path / 'metrics.json'}")
    if not path.exists():
        if path.parent.exists() and not path.parent.is_dir():
            raise ConfigError(f"{option} {path}: {path.parent} is a file, not a folder")
        return
    if not _is_metrics_file(path):
        raise ConfigError(f"{path} exists and was not written by lmforge evaluate; choose another {option}")
    if not overwrite:
        raise ConfigError(f"{path} already holds metrics; pass --overwrite to replace it, or choose another {option}")


def _is_metrics_file(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and all(key in data for key in METRICS_KEYS)
