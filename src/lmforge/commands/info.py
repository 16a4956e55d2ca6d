"""`lmforge info PATH_OR_PRESET`: family, task, parameter count and an architecture summary."""

from __future__ import annotations

from pathlib import Path

from .. import build_model, load, presets
from ..errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="describe a checkpoint folder or a preset",
                                   description="Print the family, task, parameter count and architecture "
                                               "of a checkpoint folder (lmforge or Hugging Face) or a preset.")
    parser.add_argument("target", metavar="PATH_OR_PRESET")
    parser.add_argument("--task", default=None, help="head to build for a preset (default: the family's LM head)")
    parser.set_defaults(run=run)


def run(args) -> int:
    if Path(args.target).exists():
        model = load(args.target)
        source = str(args.target)
    else:
        try:
            config = presets.get(args.target)
        except ConfigError as error:
            raise ConfigError(f"no checkpoint folder {args.target} (check the path), and {error}") from None
        model = build_model(config, args.task)
        source = f"preset {args.target}"
    print(describe(model, source))
    return 0


def head_description(model) -> str:
    """Whether the model's output matrix is the token embedding (a tied LM/MLM head), its own, or absent."""
    if not model.head.language_model:
        return f"{model.task} head (no vocabulary output, nothing tied)"
    tied = getattr(model.head, "weight", None) is None
    return f"{model.task} head, tied to the embeddings" if tied else f"{model.task} head, own output matrix"


def describe(model, source: str) -> str:
    """A human-readable summary of a model's architecture and size."""
    c = model.config
    backbone = model.num_parameters(backbone_only=True)
    total = model.num_parameters()
    layers = f"{c.n_layers} encoder + {c.decoder_layers} decoder" if c.is_encoder_decoder else str(c.n_layers)
    rows = [
        ("source", source),
        ("family", c.family),
        ("task", model.task),
        ("parameters", f"{backbone:,} (backbone){'' if total == backbone else f', {total:,} with the {model.task} head'}"),
        ("layers", layers),
        ("d_model / heads / d_head / d_ff", f"{c.d_model} / {c.n_heads} / {c.head_dim} / {c.d_ff}"),
        ("vocabulary", f"{c.vocab_size:,}"),
        ("positions", f"{c.positions}, up to {c.max_positions} tokens"
                      + (f" (offset {c.position_offset})" if c.position_offset else "")),
        ("norm", f"{c.norm_placement}-{c.norm} (eps {c.norm_eps:g})"),
        ("feed-forward", f"{'gated ' if c.gated_mlp else ''}{c.activation}"),
        ("head", head_description(model)),
    ]
    if c.positions == "rotary":
        scaling = "" if c.rope_scaling == "none" else f", {c.rope_scaling} scaling x{c.rope_factor:g}"
        rows.insert(-3, ("rotary", f"theta {c.rotary_theta:g}{scaling}, {c.rotary_dim} of {c.head_dim} dims"))
    if c.kv_heads != c.n_heads or c.qk_norm or c.sliding_window:
        window = f", window {c.sliding_window}" if c.sliding_window else ""
        rows.insert(-3, ("attention", f"{c.kv_heads} key/value heads{', q/k norm' if c.qk_norm else ''}{window}"))
    if model.tokenizer is not None:
        rows.append(("tokenizer", f"{model.tokenizer.vocab_size:,} tokens"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
