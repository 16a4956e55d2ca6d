"""A corpus and a labelled task built from the Python standard library's docstrings.

Why docstrings: they are real English prose written by many authors, every Python installation has
them (no download), and each one carries a natural label — the standard-library package it
documents (`asyncio`, `email`, `logging`, ...). Code itself would make the task trivial (import
lines name the package); comments are short and noisy. Tests, demos and GUI packages are skipped.

The split is decided by a hash of each docstring's text, never by looking at results: validation
and test docstrings are held out of the pretraining corpus too, so pretraining never sees them.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SKIPPED_FOLDERS = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo",
                   "ensurepip", "tkinter", "dist-packages"}
MIN_CHARS = 40


@dataclass(frozen=True)
class Docstring:
    package: str  # top-level standard-library module or package
    text: str

    @property
    def bucket(self) -> float:
        """A stable number in [0, 1) from the text alone: decides the split."""
        return int(hashlib.sha1(self.text.encode("utf-8")).hexdigest()[:12], 16) / 16 ** 12


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_docstrings(root: Path | None = None) -> list[Docstring]:
    """Every docstring (module, class, function) of at least MIN_CHARS characters, in file order, unique."""
    root = root or stdlib_root()
    seen: set[str] = set()
    found: list[Docstring] = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if set(parts[:-1]) & SKIPPED_FOLDERS or parts[0].startswith("_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        package = parts[0][:-3] if len(parts) == 1 else parts[0]
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_docstring(node)
                if text and len(text) >= MIN_CHARS and text not in seen:
                    seen.add(text)
                    found.append(Docstring(package, text))
    return found


@dataclass
class StdlibTask:
    """Unlabelled pretraining text and a small labelled classification task from the same source."""

    pretrain_texts: list[str]
    train: list[tuple[str, str]]  # (package label, docstring)
    valid: list[tuple[str, str]]
    test: list[tuple[str, str]]
    labels: list[str]


def build_task(num_labels: int = 8, train_per_label: int | None = 32, valid_fraction: float = 0.15,
               test_fraction: float = 0.25, root: Path | None = None) -> StdlibTask:
    """Split docstrings by hash into test / valid / pool; the labelled task keeps the `num_labels` most
    frequent packages and only `train_per_label` training docstrings per package (little labelled data;
    None: every pool docstring of those packages); pretraining uses every pool docstring (of all
    packages), never a validation or test one."""
    docs = stdlib_docstrings(root)
    labels = sorted(p for p, _ in Counter(d.package for d in docs).most_common(num_labels))
    test, valid, pool = [], [], []
    for doc in docs:
        if doc.bucket < test_fraction:
            test.append(doc)
        elif doc.bucket < test_fraction + valid_fraction:
            valid.append(doc)
        else:
            pool.append(doc)
    train, taken = [], Counter()
    for doc in sorted(pool, key=lambda d: d.bucket):
        if doc.package in labels and (train_per_label is None or taken[doc.package] < train_per_label):
            taken[doc.package] += 1
            train.append((doc.package, doc.text))

    def labelled(split):
        return [(d.package, d.text) for d in split if d.package in labels]

    return StdlibTask(pretrain_texts=[d.text for d in pool], train=train, valid=labelled(valid),
                      test=labelled(test), labels=labels)
