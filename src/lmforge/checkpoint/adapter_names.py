"""Where each LoRA pair of an lmforge model lives in an adapter file, read off the Hugging Face rule tables.

A `Group` is one renaming rule bound to one layer: our linears (rows concatenated) and the module names in
the file (equal row chunks of the same rows). BERT's `kv` is one group of our `kv` and the file's `key`,
`value`; GPT-2's `c_attn` is one group of our `q`, `kv` and the file's `c_attn`. Our row blocks (q, k, v)
fall inside one chunk each, so every conversion is a matter of placing blocks:

  file -> ours: each block in a chunk takes the chunk's A and its own rows of B (exact), without the rank
                columns its rows leave at zero (so a block-diagonal chunk comes back as its pairs);
  ours -> file: a chunk whose blocks share one A and scaling gets that A and the stacked B's (rank r);
                otherwise A = [A_1; A_2; ...] and B = diag(B_1, B_2, ...) (rank r_1 + r_2 + ..., exact).

Without a Hugging Face format that fits the model, the file uses lmforge's own names: a layer's path, or
for a fused layer its blocks' qualified names (`encoder.blocks.0.self_attn.k`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CheckpointError
from ..models.lora import sites, wrap
from ..nn.lora import LoRALinear, LoRAPair, row_blocks
from .hf.mapping import active_rules

PREFIX = "base_model.model."  # what PEFT puts before the model's own module names


@dataclass
class Block:
    layer: str  # our linear's path
    name: str  # its row block
    start: int  # first row in the group
    stop: int


@dataclass
class Chunk:
    """One module of the file: rows [start, stop) of a group, holding some of our blocks."""

    name: str  # full module name in the file (prefix included)
    blocks: list[Block]
    in_features: int

    @property
    def rows(self) -> int:
        return sum(b.stop - b.start for b in self.blocks)


def chunks(model: nn.Module, fmt=None, architecture: str | None = None) -> dict[str, Chunk]:
    """Every adaptable module of the file for `model`, by full name (Hugging Face names through `fmt`'s
    rules for `architecture`, else lmforge names)."""
    by_layer: dict[str, list] = {}
    for site in sites(model):
        by_layer.setdefault(site.path, []).append(site)
    result = {}
    for layers, names in (_hf_groups(model, fmt, architecture, by_layer) if fmt else _own_groups(by_layer)):
        blocks, offset = [], 0
        for path in layers:
            linear = model.get_submodule(path)
            for start, stop, block in _blocks(linear, by_layer[path]):
                blocks.append(Block(path, block, offset + start, offset + stop))
            offset += linear.out_features
        size = offset // len(names)
        for j, name in enumerate(names):
            inside = [b for b in blocks if j * size <= b.start and b.stop <= (j + 1) * size]
            if sum(b.stop - b.start for b in inside) != size:
                raise CheckpointError(f"{name} does not cover whole LoRA blocks of {', '.join(layers)}; "
                                      "this layer cannot carry an adapter in that format")
            first = model.get_submodule(layers[0])
            result[name] = Chunk(name, inside, first.in_features)
    return result


def _blocks(linear: nn.Linear, layer_sites) -> list[tuple[int, int, str]]:
    owner, attribute = layer_sites[0].owner, layer_sites[0].attribute
    return [(start, stop, name) for name, (start, stop) in row_blocks(owner, attribute, linear).items()]


def _own_groups(by_layer):
    for path, layer_sites in by_layer.items():
        yield (path,), [PREFIX + site.name for site in layer_sites]


def _hf_groups(model, fmt, architecture, by_layer):
    backbone, heads = active_rules(fmt, model.config, model.task)
    prefix = "" if fmt.is_base(architecture) else fmt.base_prefix
    done = set()
    for path in by_layer:
        if path in done:
            continue
        for rules, name_prefix in ((heads, ""), (backbone, prefix)):
            bound = next((b for b in (r.bind(f"{path}.weight") for r in rules) if b is not None), None)
            if bound is not None:
                break
        else:
            raise CheckpointError(f"lmforge layer {path} has no {fmt.model_type} renaming rule")
        ours, theirs = bound
        layers = tuple(name.removesuffix(".weight") for name in ours)
        done.update(layers)
        yield layers, [PREFIX + name_prefix + alternatives[0].removesuffix(".weight") for alternatives in theirs]


def lookup(table: dict[str, Chunk], name: str, base_prefix: str) -> Chunk | None:
    """The chunk a file's module name refers to, with or without the base model prefix (an adapter made on
    a bare `BertModel` applies to `BertForSequenceClassification`, and back)."""
    if name in table:
        return table[name]
    bare = name.removeprefix(PREFIX)
    for candidate in (PREFIX + base_prefix + bare, PREFIX + bare.removeprefix(base_prefix)):
        if base_prefix and candidate in table:
            return table[candidate]
    return None


# ---- ours -> the file ------------------------------------------------------------------------------

def export_chunk(model: nn.Module, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(A, B, scaling) of one file module, or None when none of its blocks is adapted."""
    placed = []
    for block in chunk.blocks:
        layer = model.get_submodule(block.layer)
        pair = layer.lora[block.name] if isinstance(layer, LoRALinear) and block.name in layer.lora else None
        if pair is not None:
            placed.append((block, pair))
    if not placed:
        return None
    offset = chunk.blocks[0].start
    first = placed[0][1]
    shared = all(p.scaling == first.scaling and torch.equal(p.A, first.A) for _, p in placed)
    rank = first.r if shared else sum(p.r for _, p in placed)
    a = first.A.detach().clone() if shared else torch.cat([p.A.detach() for _, p in placed])  # (rank, in)
    b = first.B.new_zeros(chunk.rows, rank)  # (rows, rank)
    column = 0
    for block, pair in placed:
        rows = slice(block.start - offset, block.stop - offset)
        columns = slice(0, rank) if shared else slice(column, column + pair.r)
        b[rows, columns] = pair.B.detach() * (pair.scaling / first.scaling)
        column += pair.r
    return a.contiguous(), b.contiguous(), first.scaling


# ---- the file -> ours -----------------------------------------------------------------------------

def check_chunk(model: nn.Module, chunk: Chunk, a: torch.Tensor, b: torch.Tensor, where: str) -> None:
    """A file pair must fit the chunk's layer (A: (r, in), B: (rows, r)) and find its blocks unadapted."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != chunk.in_features or b.shape != (chunk.rows, a.shape[0]):
        raise CheckpointError(f"{where}: the adapter of {chunk.name.removeprefix(PREFIX)} has lora_A "
                              f"{tuple(a.shape)} and lora_B {tuple(b.shape)}, but the base model's layer needs "
                              f"({a.shape[0]}, {chunk.in_features}) and ({chunk.rows}, {a.shape[0]}); "
                              "the adapter was made for a base model of another size")
    for block in chunk.blocks:
        layer = model.get_submodule(block.layer)
        if isinstance(layer, LoRALinear) and block.name in layer.lora:
            raise CheckpointError(f"{where}: {block.layer} ({block.name}) already has an adapter; load one "
                                  "adapter per model")


def import_chunk(model: nn.Module, chunk: Chunk, a: torch.Tensor, b: torch.Tensor, scaling: float,
                 dropout: float) -> None:
    """Give each block of `chunk` a pair with A = `a` and its rows of `b` (checked by `check_chunk`)."""
    by_site = {(s.path, s.block): s for s in sites(model)}
    offset = chunk.blocks[0].start
    for block in chunk.blocks:
        layer = wrap(by_site[(block.layer, block.name)], dropout)
        block_a, block_b = own_columns(a, b[block.start - offset:block.stop - offset])
        pair: LoRAPair = layer.add(block.name, block_a.shape[0], scaling)
        with torch.no_grad():
            pair.A.copy_(block_a)
            pair.B.copy_(block_b)


def own_columns(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's (A, B) without the rank columns its rows of B leave at zero (the off-diagonal blocks
    `export_chunk` writes): exact, and a block-diagonal file adapter comes back as the pairs it was made of.
    A B that is zero throughout (a fresh adapter) keeps every column."""
    used = b.abs().sum(dim=0) != 0  # (rank,)
    if not used.any() or used.all():
        return a, b
    return a[used], b[:, used]
