"""A run's output folder: its kind, its run file, the refuse/overwrite policy and the resume checks.

    folder = RunFolder("runs/gpt", "pretrain", run_file="run.json")
    previous = folder.open(resume=args.resume, overwrite=args.overwrite)   # the recorded run, when resuming
    folder.start(run_spec)            # rank 0: replace an earlier run of this kind if allowed, mark, write run.json
    with folder.refusals_leave_nothing(new=not resuming):
        trainer.fit(...)

Every command that trains follows the policy of `lmforge.checkpoint.output`. A run killed before its
first checkpoint is continued by `--resume` from step 0 (the plain rerun says the same); hidden
`.tmp`/`.old` folders a kill left in checkpoints/ are cleaned, and a checkpoint caught between its two
renames is put back, before a resume reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from ..checkpoint.atomic import write_text
from ..checkpoint.output import claim_folder, folder_kind, mark_folder
from ..errors import ConfigError, LmforgeError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


class RunFolder:
    """The folder `path` of one training run of `kind` (pretrain, finetune, distill, demo)."""

    def __init__(self, path: str | Path, kind: str, run_file: str | None = None, option: str = "--out"):
        self.path, self.kind, self.run_file, self.option = Path(path), kind, run_file, option
        self.existed = self.path.exists()  # a refused new run removes only what it wrote

    # ---- before anything is written ----------------------------------------------------------
    def open(self, resume: bool = False, overwrite: bool = False) -> dict | None:
        """Check the folder for a new run (or, with `resume`, for continuing the recorded one).
        Returns the recorded run file's content when resuming, else None. Writes nothing."""
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; choose one")
        if resume:
            return self._recorded()
        hint = (f"{self.path} already holds a run; pass --resume to continue it, --overwrite to "
                f"replace it, or choose another {self.option}") if self.can_resume_kind else None
        self.replace = claim_folder(self.path, self.kind, overwrite, self.option, exists_hint=hint)
        return None

    @property
    def can_resume_kind(self) -> bool:
        return self.run_file is not None and self.kind == "pretrain"

    def _recorded(self) -> dict:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.option} {self.path} is a file; give the run folder to resume")
        spec_file = self.path / (self.run_file or "")
        if self.run_file is None or folder_kind(self.path) != self.kind or not spec_file.is_file():
            raise ConfigError(f"nothing to resume: {self.path} holds no {self.kind} run; start it without --resume")
        try:
            return json.loads(spec_file.read_text(encoding="utf-8"))
        except ValueError:
            raise ConfigError(f"{spec_file} is damaged; start again with --overwrite") from None

    # ---- writing -----------------------------------------------------------------------------
    def start(self, spec: dict | None = None) -> None:
        """Replace the earlier run of this kind (when `open` allowed it), create and mark the folder and
        write the run file. Rank 0 only."""
        if getattr(self, "replace", False):
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        mark_folder(self.path, self.kind)
        if spec is not None and self.run_file is not None:
            write_text(self.path / self.run_file, json.dumps(spec, indent=2) + "\n")

    def write_json(self, name: str, data: dict) -> Path:
        write_text(self.path / name, json.dumps(data, indent=2) + "\n")
        return self.path / name

    @contextlib.contextmanager
    def refusals_leave_nothing(self, new: bool) -> Iterator[None]:
        """Around a new run: when it is refused (an LmforgeError: bad data, bad settings) before its first
        checkpoint, remove what it wrote, so the refusal leaves the folder as it was. An interrupt or a
        crash keeps the folder (its run file lets --resume start it again)."""
        try:
            yield
        except LmforgeError:
            if new and not self.has_checkpoint():
                self._remove_written()
            raise

    def _remove_written(self) -> None:
        if self.existed:  # the user's empty folder, or an earlier run --overwrite had already replaced: keep it
            for child in self.path.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        else:
            shutil.rmtree(self.path, ignore_errors=True)

    # ---- resuming ----------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        """Whether checkpoints/last holds a complete training checkpoint (after `recover` put back one a
        kill caught between its two renames)."""
        return (self.path / CHECKPOINTS / "last" / STATE_FILE).is_file()

    def recover(self) -> None:
        """Put back a checkpoint a kill caught between its renames, then delete the hidden `.tmp`/`.old`
        leftovers of interrupted writes (checkpoint folders and files). Rank 0 only; call before reading."""
        folder = self.path / CHECKPOINTS
        if folder.is_dir():
            for name in ("last", "best"):
                if not (folder / name).exists():
                    olds = sorted(folder.glob(f".{name}.*.old"), key=os.path.getmtime)
                    if olds and (olds[-1] / STATE_FILE).is_file():
                        os.replace(olds[-1], folder / name)
        for parent in (self.path, folder):
            if not parent.is_dir():
                continue
            for leftover in list(parent.glob(".*.tmp")) + list(parent.glob(".*.old")):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()

    def restart_without_checkpoint(self) -> None:
        """A run killed before its first checkpoint starts again from step 0: drop its partial log."""
        for name in ("metrics.jsonl", "summary.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
