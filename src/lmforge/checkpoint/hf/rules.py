"""Declarative renaming rules between lmforge and Hugging Face weight names, read in both directions.

A `Rule` says: the rows of our tensors, concatenated, equal the rows of the Hugging Face tensors,
concatenated (after undoing the Hugging Face layout). That one statement covers every case we need:

  rename           ("encoder.embed_norm.{p}",) <- ("embeddings.LayerNorm.{p}",)
  fused k|v        ("...self_attn.kv.{p}",)    <- ("...key.{p}", "...value.{p}")
  GPT-2 c_attn     ("...q.{p}", "...kv.{p}")  <- ("h.{i}.attn.c_attn.{p}",) with layout "conv1d"

Patterns hold `{i}` (a layer index) and `{p}` (weight or bias). A Hugging Face name may list
alternatives separated by "|" (tied copies of one tensor): loading reads the first present one,
exporting writes the first one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import torch

LAYOUTS = ("linear", "conv1d", "row")  # conv1d: (in, out) matrices (GPT-2); row: a (1, n) buffer (BART bias)


@dataclass(frozen=True)
class Rule:
    ours: tuple[str, ...]
    hf: tuple[str, ...]
    layout: str = "linear"
    when: str | None = None  # a boolean ModelConfig field the rule needs ("!field": needs it false)

    def applies(self, config) -> bool:
        if self.when is None:
            return True
        wanted = not self.when.startswith("!")
        return bool(getattr(config, self.when.lstrip("!"))) == wanted

    @cached_property
    def pattern(self) -> re.Pattern:
        """Regex matching our first name, capturing `i` and `p`."""
        text = re.escape(self.ours[0]).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
        return re.compile(text + "$")

    def bind(self, our_name: str) -> tuple[list[str], list[list[str]]] | None:
        """Our names and Hugging Face name alternatives for `our_name`, or None if the rule does not apply."""
        match = self.pattern.match(our_name)
        if match is None:
            return None
        values = match.groupdict()
        return ([name.format(**values) for name in self.ours],
                [[alt.format(**values) for alt in name.split("|")] for name in self.hf])


def linear(ours: str, hf: str | tuple[str, ...], layout: str = "linear", when: str | None = None) -> Rule:
    """A rule for the weight and bias of linear/norm layers: `ours` ("a+b" for several) and `hf` are
    module paths."""
    hf_names = (hf,) if isinstance(hf, str) else hf
    our_names = tuple(f"{name}.{{p}}" for name in ours.split("+"))
    return Rule(our_names, tuple(f"{name}.{{p}}" for name in hf_names), layout, when)


def tensor(ours: str, hf: str, layout: str = "linear", when: str | None = None) -> Rule:
    """A rule for one named tensor."""
    return Rule((ours,), (hf,), layout, when)


# ---- tensor layouts -------------------------------------------------------------------------------

def from_hf_layout(value: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "conv1d" and value.dim() == 2:
        return value.t()  # (in, out) -> (out, in)
    if layout == "row":
        return value.reshape(-1)  # (1, n) -> (n,)
    return value


def to_hf_layout(value: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "conv1d" and value.dim() == 2:
        return value.t()
    if layout == "row":
        return value.reshape(1, -1)
    return value


def join_hf(rule: Rule, values: list[torch.Tensor]) -> torch.Tensor:
    """The Hugging Face tensors of a rule as one (rows, ...) tensor in our layout."""
    values = [from_hf_layout(v, rule.layout) for v in values]
    return values[0] if len(values) == 1 else torch.cat(values, dim=0)


def split_ours(joined: torch.Tensor, shapes: list[torch.Size]) -> list[torch.Tensor] | None:
    """Cut rows into our tensors of `shapes`; None when the sizes do not add up."""
    rows = [shape[0] if len(shape) else 1 for shape in shapes]
    if joined.shape[0] != sum(rows):
        return None
    parts = torch.split(joined, rows, dim=0) if len(rows) > 1 else (joined,)
    if any(part.shape != shape for part, shape in zip(parts, shapes)):
        return None
    return [part.contiguous() for part in parts]


def split_hf(rule: Rule, ours: list[torch.Tensor]) -> list[torch.Tensor]:
    """Our tensors of a rule -> its Hugging Face tensors (equal row blocks, e.g. k and v)."""
    joined = ours[0] if len(ours) == 1 else torch.cat(ours, dim=0)
    parts = joined.chunk(len(rule.hf), dim=0)
    return [to_hf_layout(part, rule.layout).contiguous() for part in parts]
