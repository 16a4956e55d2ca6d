"""The model card (README.md) written into every checkpoint, with Hugging Face-style metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_card(folder: Path, model, facts: dict[str, Any]) -> None:
    """Write README.md: YAML metadata (library, tags, co2_eq_emissions, metrics) and a short text.

    `facts` may hold: description, data, objective, steps, tokens, compute (dict), metrics (dict),
    co2_eq_emissions (dict as on the Hub: emissions in grams, source, training_type, ...)."""
    c = model.config
    metadata: dict[str, Any] = {"library_name": "lmforge", "tags": [c.family, model.task]}
    if facts.get("co2_eq_emissions"):
        metadata["co2_eq_emissions"] = facts["co2_eq_emissions"]
    if facts.get("metrics"):
        metadata["model-index"] = [{"name": c.name or "lmforge-model",
                                    "results": [{"metrics": [{"name": k, "type": k, "value": v}
                                                             for k, v in facts["metrics"].items()]}]}]
    params = model.num_parameters()
    lines = [
        "---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", "",
        f"# {c.name or 'lmforge model'}", "",
        facts.get("description", f"A {c.family} Transformer ({model.task}) saved by lmforge."), "",
        "| | |", "|---|---|",
        f"| family | {c.family} |", f"| task | {model.task} |", f"| parameters | {params:,} |",
        f"| layers | {c.n_layers}{f' + {c.decoder_layers} decoder' if c.is_encoder_decoder else ''} |",
        f"| d_model / heads / d_ff | {c.d_model} / {c.n_heads} / {c.d_ff} |",
    ]
    for key in ("objective", "data", "steps", "tokens"):
        if key in facts:
            lines.append(f"| {key} | {facts[key]} |")
    for key, value in (facts.get("compute") or {}).items():
        lines.append(f"| {key} | {value} |")
    for key, value in (facts.get("metrics") or {}).items():
        lines.append(f"| {key} | {value} |")
    lines += ["", "Load it with `lmforge.load(path)`, or inspect it with `lmforge info PATH`.", ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
