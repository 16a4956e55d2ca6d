"""The demo's report: learning-curve plots (PNG), report.html, and a terminal table.

`summary` is the dict the demo writes to summary.json: "phases" (pretraining facts and curve),
"arms" (one dict per fine-tuned model with its scores, cost and curves) and "verdict".
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..checkpoint.atomic import write_text


def plot_curves(summary: dict[str, Any], folder: Path) -> list[str]:
    """Write pretraining.png and finetuning.png; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    pretrain = summary.get("phases", {}).get("pretrain")
    if pretrain and pretrain.get("curve"):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for key, label in (("train_loss", "train"), ("eval_loss", "validation")):
            points = [(p["step"], p[key]) for p in pretrain["curve"] if p.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o" if key == "eval_loss" else None, label=label)
        ax.set(xlabel="step", ylabel="masked-LM loss", title="Pretraining (masked LM)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "pretraining.png", dpi=110)
        plt.close(fig)
        written.append("pretraining.png")
    arms = [a for a in summary.get("arms", []) if a.get("curve")]
    if arms:
        metric = summary.get("metric", "accuracy")
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        for arm in arms:
            losses = [(p["step"], p["train_loss"]) for p in arm["curve"] if p.get("train_loss") is not None]
            scores = [(p["step"], p[f"eval_{metric}"]) for p in arm["curve"] if p.get(f"eval_{metric}") is not None]
            if losses:
                left.plot(*zip(*losses), label=arm["name"])
            if scores:
                right.plot(*zip(*scores), marker="o", label=arm["name"])
        left.set(xlabel="step", ylabel="training loss", title="Fine-tuning loss")
        right.set(xlabel="step", ylabel=f"validation {metric}", title=f"Fine-tuning: validation {metric}")
        left.legend(fontsize=8)
        right.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "finetuning.png", dpi=110)
        plt.close(fig)
        written.append("finetuning.png")
    return written


TABLE_COLUMNS = [("arm", "name", "{}"), ("valid acc", "valid_accuracy", "{:.3f}"), ("test acc", "test_accuracy", "{:.3f}"),
                 ("test macro-F1", "test_macro_f1", "{:.3f}"), ("fine-tune s", "wall_s", "{:.0f}"),
                 ("energy Wh", "energy_wh", "{:.3f}"), ("CO2 g", "co2_g", "{:.3f}")]


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for arm in summary.get("arms", []):
        rows.append([fmt.format(arm[key]) if arm.get(key) is not None else "-" for _, key, fmt in TABLE_COLUMNS])
    return rows


def terminal_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the arms, the pretraining cost, and the verdict."""
    header = [title for title, _, _ in TABLE_COLUMNS]
    rows = [header] + table_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    pretrain = summary.get("phases", {}).get("pretrain")
    if pretrain:
        lines.append("")
        lines.append(f"pretraining: {pretrain['steps']} steps, {pretrain['tokens']:,} tokens, {pretrain['wall_s']:.0f} s, "
                     f"{pretrain['energy_wh']:.3f} Wh, {pretrain['co2_g']:.3f} g CO2eq")
    lines.append("")
    lines.append(summary.get("verdict", ""))
    return "\n".join(lines)


def write_html(summary: dict[str, Any], folder: Path, images: list[str]) -> Path:
    """report.html: what was run, the table, the verdict and the plots."""
    e = html.escape
    header = "".join(f"<th>{e(title)}</th>" for title, _, _ in TABLE_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in table_rows(summary))
    task = summary.get("task", {})
    pretrain = summary.get("phases", {}).get("pretrain", {})
    facts = [
        f"Corpus: {e(str(summary.get('corpus', '')))}",
        f"Task: {e(str(task.get('description', '')))} — labels {e(', '.join(task.get('labels', [])))}; "
        f"{task.get('train', '?')} training / {task.get('valid', '?')} validation / {task.get('test', '?')} test examples",
    ]
    if pretrain:
        facts.append(f"Pretraining: {pretrain.get('steps')} steps, {pretrain.get('tokens', 0):,} tokens, "
                     f"{pretrain.get('wall_s', 0):.0f} s, {pretrain.get('energy_wh', 0):.3f} Wh, "
                     f"{pretrain.get('co2_g', 0):.3f} g CO2eq")
    plots = "".join(f'<p><img src="{e(name)}" alt="{e(name)}"></p>' for name in images)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lmforge demo: does pretraining help?</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:right}}
td:first-child,th:first-child{{text-align:left}} .verdict{{background:#f4f4f4;padding:1em}}</style></head>
<body><h1>Does pretraining help? (lmforge demo)</h1>
<ul>{''.join(f'<li>{fact}</li>' for fact in facts)}</ul>
<table><tr>{header}</tr>{body}</table>
<p class="verdict">{e(summary.get('verdict', ''))}</p>
{plots}
<p>Machine: {e(str(summary.get('machine', '')))}. Every step after the tokenizer is seeded; WordPiece
training in Hugging Face tokenizers is not deterministic (ties between equally frequent merges), so another run
can score a few points differently. Times and energy vary with the machine's load.</p>
</body></html>
"""
    path = folder / "report.html"
    write_text(path, page)
    return path
