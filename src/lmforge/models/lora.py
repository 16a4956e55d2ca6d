"""LoRA on an lmforge model: choose the linear layers to adapt, wrap them, freeze the rest.

    settings = LoraSettings(r=8, alpha=16, targets=("attention", "mlp"))
    add_lora(model, settings, trainable=["head.out.weight", "head.out.bias"])   # base frozen, head trained
    set_merged(model, True)    # adapters added into the weights (inference at the base's speed); False: back
    merge_and_unload(model)    # a plain model again

Targets name projections the way lmforge's blocks do: q, k, v, o (self- and cross-attention), up, gate,
down (the MLP), any other linear by its name (`pooler.dense`), a longer suffix to be specific
(`cross_attn.q`, `decoder.blocks.0.self_attn.v`), the groups `attention` and `mlp`, or `all-linear`
(every linear layer). The task head is never adapted: a new one is trained in full. k and v are the two row blocks of attention's fused `kv`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..nn.lora import LoRALinear, row_blocks

GROUPS = {"attention": ("q", "k", "v", "o"), "mlp": ("up", "gate", "down")}
ALL_LINEAR = "all-linear"
HEAD_PREFIX = "head."  # targets leave the task head out


@dataclass(frozen=True)
class LoraSettings:
    """r: rank; alpha: scaling numerator (default 2r), scaling = alpha / r, or alpha / sqrt(r) with rslora;
    dropout on the adapters' input; targets: see the module docstring."""

    r: int = field(default=8, metadata={"help": "adapter rank; turns LoRA on", "metavar": "R"})
    alpha: float | None = field(default=None, metadata={"help": "scaling numerator (default 2R)", "metavar": "A"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapters' input (default 0)",
                                                  "metavar": "P"})
    targets: tuple[str, ...] = field(default=("attention", "mlp"), metadata={
        "help": "comma-separated layers: q,k,v,o,up,gate,down, attention, mlp, any linear's name, or all-linear "
                "(default attention,mlp)", "metavar": "LIST"})
    rslora: bool = field(default=False, metadata={"help": "rank-stabilised scaling alpha/sqrt(R)",
                                                  "flag": "--rslora"})

    def __post_init__(self):
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", tuple(t.strip() for t in self.targets.split(",") if t.strip()))
        else:
            object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def lora_alpha(self) -> float:
        return float(2 * self.r if self.alpha is None else self.alpha)

    @property
    def scaling(self) -> float:
        return scaling_for(self.lora_alpha, self.r, self.rslora)

    def validate(self) -> "LoraSettings":
        if not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"the LoRA rank must be a positive integer, got {self.r!r}; pass --lora-r 8 (or 4, 16)")
        if self.alpha is not None and not self.alpha > 0:
            raise ConfigError(f"the LoRA alpha must be positive, got {self.alpha!r}; leave --lora-alpha out for 2r")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"the LoRA dropout must be in [0, 1), got {self.dropout!r}; pass --lora-dropout 0.05")
        if not self.targets:
            raise ConfigError("no LoRA targets given; pass --lora-targets attention,mlp (or all-linear)")
        return self

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


def scaling_for(alpha: float, r: int, rslora: bool) -> float:
    """alpha / r, or rank-stabilised alpha / sqrt(r)."""
    return alpha / math.sqrt(r) if rslora else alpha / r


@dataclass
class Site:
    """One adaptable row block: `owner.<attribute>` (a linear at `path`) rows of `block`."""

    path: str
    block: str
    owner: nn.Module
    attribute: str

    @property
    def name(self) -> str:
        """The block's qualified name: the layer's path, with a fused layer's block in place of its name."""
        parent = self.path.rpartition(".")[0]
        return self.path if self.block == self.attribute else f"{parent}.{self.block}".lstrip(".")


def sites(model: nn.Module) -> list[Site]:
    """Every adaptable row block of every linear layer, in module order."""
    found = []
    for owner_path, owner in model.named_modules():
        for attribute, child in owner.named_children():
            path = f"{owner_path}.{attribute}".lstrip(".")
            if isinstance(child, nn.Linear):
                found.extend(Site(path, block, owner, attribute) for block in row_blocks(owner, attribute, child))
    return found


def select(model: nn.Module, targets: tuple[str, ...]) -> list[Site]:
    """The sites `targets` name; a target that matches nothing is a `ConfigError` listing the names that exist."""
    available = [s for s in sites(model) if not s.path.startswith(HEAD_PREFIX)]
    chosen: dict[str, Site] = {}
    for target in targets:
        wanted = GROUPS.get(target, (target,))
        matched = available if target == ALL_LINEAR else [
            s for s in available if any(s.name == w or s.name.endswith("." + w) for w in wanted)]
        if not matched and target not in GROUPS:
            leaves = dict.fromkeys(s.name.rpartition(".")[2] for s in available)
            raise ConfigError(f"LoRA target {target!r} matches no linear layer of this {model.config.family} model; "
                              f"layers are named {', '.join(leaves)} (or use attention, mlp, {ALL_LINEAR})")
        chosen.update((s.name, s) for s in matched)
    if not chosen:
        raise ConfigError(f"the LoRA targets {', '.join(targets)} match no linear layer of this model; "
                          f"use attention, mlp or {ALL_LINEAR}")
    return list(chosen.values())


def wrap(site: Site, dropout: float) -> LoRALinear:
    """The site's layer as a `LoRALinear` (wrapped on first use, shared by its blocks)."""
    layer = getattr(site.owner, site.attribute)
    if not isinstance(layer, LoRALinear):
        layer = LoRALinear(layer, row_blocks(site.owner, site.attribute, layer), dropout)
        setattr(site.owner, site.attribute, layer)
    return layer


def add_lora(model, settings: LoraSettings, trainable: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Adapt the layers `settings.targets` names with new rank-r pairs (B = 0, so the model is unchanged),
    freeze every other weight except the tensors named in `trainable` (a new task head), and return the
    qualified names of the adapted blocks."""
    settings = settings.validate()
    chosen = select(model, settings.targets)
    for site in chosen:
        wrap(site, settings.dropout).add(site.block, settings.r, settings.scaling)
    model.lora_settings = settings
    freeze_except(model, trainable)
    return [site.name for site in chosen]


def freeze_except(model, trainable) -> None:
    """Only adapter pairs and the tensors named in `trainable` keep gradients."""
    keep = set(trainable)
    for name, param in model.named_parameters():
        param.requires_grad = ".lora." in f".{name}" or name in keep
    model.lora_trainable = sorted(keep)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {path: m for path, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_spec(model) -> dict | None:
    """What rebuilds the adapters of `model` before its weights are loaded (None without adapters):
    settings, each pair's layer, block, rank and scaling, the fully trained tensors."""
    layers = lora_layers(model)
    if not layers:
        return None
    pairs = [[path, block, pair.r, pair.scaling] for path, layer in layers.items() for block, pair in layer.lora.items()]
    dropout = next(iter(layers.values())).lora_dropout
    settings = getattr(model, "lora_settings", None)
    return {"settings": settings.to_dict() if settings else None, "pairs": pairs,
            "dropout": dropout.p if isinstance(dropout, nn.Dropout) else 0.0,
            "trainable": list(getattr(model, "lora_trainable", []))}


def restore_lora(model, spec: dict) -> None:
    """Rebuild the adapters `lora_spec` described (weights still to be loaded) and the same frozen set."""
    by_path = {(site.path, site.block): site for site in sites(model)}
    for path, block, r, scaling in spec["pairs"]:
        site = by_path.get((path, block))
        if site is None:
            raise ConfigError(f"the checkpoint adapts {path} ({block}), which this model does not have")
        wrap(site, spec.get("dropout", 0.0)).add(block, int(r), float(scaling))
    if spec.get("settings"):
        model.lora_settings = LoraSettings(**{**spec["settings"], "targets": tuple(spec["settings"]["targets"])})
    freeze_except(model, spec.get("trainable", []))


def adapter_state(model) -> dict:
    """The tensors an adapter file holds: every pair's A and B, and the fully trained tensors."""
    keep = set(getattr(model, "lora_trainable", []))
    return {name: t for name, t in model.state_dict().items() if ".lora." in f".{name}" or name in keep}


SIGNATURE_VALUES = 4096  # values read from each base tensor for its signature
SIGNATURE_TOLERANCE = 1e-2  # relative: bf16 rounding moves a signature by about 2e-3


def base_signature(model, skipped=()) -> dict[str, list[float]]:
    """name -> [signed sum, norm] of at most SIGNATURE_VALUES evenly spaced values of every tensor under the
    adapters (not the adapter pairs, the task head or `skipped`, the fully trained tensors), with merged
    adapters taken out first: it tells one checkpoint's weights from another's of the same shape, and
    survives float rounding and a bf16 copy of the same weights."""
    signs = torch.randint(0, 2, (SIGNATURE_VALUES,), generator=torch.Generator().manual_seed(0)) * 2 - 1
    signature = {}
    with unmerged(model), torch.no_grad():
        for name, tensor in model.state_dict().items():
            if ".lora." in f".{name}" or name.startswith(HEAD_PREFIX) or name in skipped:
                continue
            flat = tensor.detach().reshape(-1)
            sample = flat[::max(1, flat.numel() // SIGNATURE_VALUES)][:SIGNATURE_VALUES].to("cpu", torch.float64)
            signature[name] = [float(sample @ signs[:len(sample)].double()), float(sample.norm())]
    return signature


def same_base(recorded: dict[str, list[float]], found: dict[str, list[float]]) -> bool:
    """Whether two `base_signature`s describe the same weights, up to SIGNATURE_TOLERANCE of each norm."""
    if recorded.keys() != found.keys():
        return False
    for (signed, norm), (signed2, norm2) in ((recorded[n], found[n]) for n in recorded):
        scale = SIGNATURE_TOLERANCE * max(norm, norm2, 1e-12)
        if abs(signed - signed2) > scale or abs(norm - norm2) > scale:
            return False
    return True


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())


def set_merged(model: nn.Module, merged: bool) -> None:
    """Merge every adapter into its layer's weight (or take it out again); exact up to float rounding."""
    for layer in lora_layers(model).values():
        layer.merge() if merged else layer.unmerge()


@contextlib.contextmanager
def unmerged(model: nn.Module):
    """Adapters kept separate for the duration (saving writes the base weights, not merged ones)."""
    was = [layer for layer in lora_layers(model).values() if layer.merged]
    for layer in was:
        layer.unmerge()
    try:
        yield model
    finally:
        for layer in was:
            layer.merge()


def merge_and_unload(model):
    """Replace every adapted layer by a plain linear holding the merged weight; the model has no adapters
    afterwards (and every weight is trainable again). Returns `model`."""
    for path, layer in lora_layers(model).items():
        owner_path, _, attribute = path.rpartition(".")
        setattr(model.get_submodule(owner_path), attribute, layer.plain())
    for param in model.parameters():
        param.requires_grad = True
    model.lora_settings, model.lora_trainable = None, []
    return model
