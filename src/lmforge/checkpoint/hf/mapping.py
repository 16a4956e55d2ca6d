"""Apply a format's rules: Hugging Face tensors -> lmforge state dict (checked), and back."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ...errors import CheckpointError
from .rules import Rule, join_hf, split_hf, split_ours
from .spec import HFFormat

NEW_HEAD_PREFIXES = ("head.", "pooler.")  # what a task adds on top of a base model, initialised when absent


@dataclass
class Mapped:
    """Our tensors, and what the checkpoint did not provide (initialised) or provided but we do not use."""

    state: dict[str, torch.Tensor] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def active_rules(fmt: HFFormat, config, task: str) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """(backbone rules, head rules) that apply to this config and task."""
    return (tuple(r for r in fmt.backbone if r.applies(config)),
            tuple(r for r in fmt.heads.get(task, ()) if r.applies(config)))


def strip_prefix(fmt: HFFormat, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backbone names without the base model prefix (`bert.`, `transformer.`, `model.`); head names unchanged."""
    prefix = fmt.base_prefix
    if not prefix or not any(name.startswith(prefix) for name in state):
        return dict(state)
    return {name.removeprefix(prefix): value for name, value in state.items()}


def to_lmforge(fmt: HFFormat, model, hf_state: dict[str, torch.Tensor], origin: dict[str, str],
               source: str) -> Mapped:
    """Map `hf_state` (prefix stripped) onto `model`'s names and shapes; raise `CheckpointError` for
    missing backbone weights, unknown weights and shape mismatches."""
    expected = model.state_dict()
    backbone, heads = active_rules(fmt, model.config, model.task)
    rules = backbone + heads
    result, consumed, missing, seen = Mapped(), set(), [], set()
    for name in expected:
        if name in seen:
            continue
        rule, (our_names, hf_names) = bind(rules, name, fmt)
        seen.update(our_names)
        chosen = [next((alt for alt in alternatives if alt in hf_state), None) for alternatives in hf_names]
        consumed.update(alt for alternatives in hf_names for alt in alternatives if alt in hf_state)
        if None in chosen:
            if name.startswith(NEW_HEAD_PREFIXES):
                result.initialised.extend(our_names)
            else:
                missing.extend(alternatives[0] for alternatives, c in zip(hf_names, chosen) if c is None)
            continue
        parts = split_ours(join_hf(rule, [hf_state[c] for c in chosen]), [expected[n].shape for n in our_names])
        if parts is None:
            have = ", ".join(f"{c} {tuple(hf_state[c].shape)}" for c in chosen)
            want = ", ".join(f"{n} {tuple(expected[n].shape)}" for n in our_names)
            raise CheckpointError(f"{origin.get(chosen[0], source)}: shape mismatch: {have} cannot fill {want} "
                                  "of the model described by config.json")
        result.state.update(zip(our_names, parts))
    if missing:
        raise CheckpointError(f"{source} lacks weights the model needs: {shorten(missing)}; the checkpoint is "
                              "incomplete or does not match its config.json")
    consumed |= tied_copies(fmt, model.config, hf_state, result.state, origin, source)
    leftover = [n for n in hf_state if n not in consumed and not fmt.ignored(n)]
    result.unused = [n for n in leftover if belongs_to_other_head(fmt, model.task, n)]
    unexpected = [n for n in leftover if n not in result.unused]
    if unexpected:
        files = sorted({origin.get(n, source) for n in unexpected})
        raise CheckpointError(f"{', '.join(files)} holds weights that a {fmt.model_type} {model.task} model does "
                              f"not have: {shorten(unexpected)}; the config.json does not describe these weights")
    return result


def bind(rules: tuple[Rule, ...], name: str, fmt: HFFormat):
    for rule in rules:
        bound = rule.bind(name)
        if bound is not None:
            return rule, bound
    raise CheckpointError(f"lmforge weight {name} has no {fmt.model_type} renaming rule; this architecture cannot "
                          f"be expressed in the {fmt.model_type} format")


def tied_copies(fmt: HFFormat, config, hf_state, ours, origin, source) -> set[str]:
    """Output matrices stored as copies of a tied embedding: consumed after checking they are copies."""
    if not config.tie_embeddings:
        return set()
    found = {n for n in fmt.tied_copies if n in hf_state}
    for name in found:
        if hf_state[name].shape != ours["embed.weight"].shape or not torch.equal(hf_state[name], ours["embed.weight"]):
            raise CheckpointError(f"{origin.get(name, source)}: {name} differs from the token embedding, but "
                                  "config.json ties them (tie_word_embeddings); set tie_word_embeddings to false")
    return found


def belongs_to_other_head(fmt: HFFormat, task: str, name: str) -> bool:
    """A weight of another task's head (e.g. BERT's MLM head when loading for embeddings)."""
    for other, rules in fmt.heads.items():
        if other == task:
            continue
        for rule in rules:
            for hf in rule.hf:
                for alt in hf.split("|"):
                    text = re.escape(alt).replace(r"\{i\}", r"\d+").replace(r"\{p\}", r"(weight|bias)")
                    if re.fullmatch(text, name):
                        return True
    return name in fmt.tied_copies


def to_hf(fmt: HFFormat, model, architecture: str, state: dict | None = None) -> dict[str, torch.Tensor]:
    """`model`'s weights (or `state`, some of them) under Hugging Face names for `architecture` (backbone
    prefixed for head classes)."""
    state = model.state_dict() if state is None else state
    backbone, heads = active_rules(fmt, model.config, model.task)
    prefix = "" if fmt.is_base(architecture) else fmt.base_prefix
    out: dict[str, torch.Tensor] = {}
    done: set[str] = set()
    for rules, name_prefix in ((heads, ""), (backbone, prefix)):
        for name in state:
            if name in done or not any(r.bind(name) for r in rules):
                continue
            rule, (our_names, hf_names) = bind(rules, name, fmt)
            for alternatives, value in zip(hf_names, split_hf(rule, [state[n] for n in our_names])):
                out[name_prefix + alternatives[0]] = value.detach().clone().contiguous()
            done.update(our_names)
    left = [n for n in state if n not in done]
    if left:
        raise CheckpointError(f"no {fmt.model_type} weight holds {shorten(left, 3)}")
    return out


def shorten(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
