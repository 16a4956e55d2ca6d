"""The output folder of a run: what --out may be, and when --overwrite may replace it."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def check_run_folder(out: Path, overwrite: bool, marker: str) -> None:
    """Refuse an --out that is a file, or a non-empty folder unless `overwrite` is set and the folder
    holds an earlier run (its `marker` file): --overwrite never deletes a folder lmforge did not write."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the run")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty; pass --overwrite to replace the run there, or choose another --out")
        if not (out / marker).is_file():
            raise ConfigError(f"{out} is not empty and holds no lmforge run ({marker}); --overwrite only replaces "
                              "earlier runs, so choose a new or empty folder")
