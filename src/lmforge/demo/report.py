"""The demo's report: the label-efficiency plot (the headline), the pretraining curve, report.html and a
terminal table.

`summary` is the dict the demo writes to summary.json: "sizes" (labelled examples per class), "arms"
(per arm: "points" by size with mean/sd/min/max/seeds, cost), "comparisons" (paired tests by size),
"phases" (pretraining facts and curve, the corpus's unigram entropy) and "verdict".
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..checkpoint.atomic import write_text

HEADLINE = "label_efficiency.png"


def plot_curves(summary: dict[str, Any], folder: Path) -> list[str]:
    """Write label_efficiency.png (test accuracy against labelled examples per class, mean over seeds with
    min-max bars) and pretraining.png (masked-LM loss against the unigram entropy); return their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    sizes = summary.get("sizes", [])
    if sizes and summary.get("arms"):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for arm in summary["arms"]:
            points = [arm["points"][str(size)] for size in sizes]
            means = [p["mean"] for p in points]
            spread = [[m - p["min"] for m, p in zip(means, points)], [p["max"] - m for m, p in zip(means, points)]]
            ax.errorbar(sizes, means, yerr=spread, marker="o", capsize=4, label=arm["name"])
        majority = summary.get("task", {}).get("majority_accuracy")
        if majority is not None:
            ax.axhline(majority, color="grey", linestyle=":", label="always the most frequent package")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set(xlabel="labelled examples per class", ylabel="test accuracy",
               title="Label efficiency: test accuracy (mean over seeds, min-max bars)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / HEADLINE, dpi=110)
        plt.close(fig)
        written.append(HEADLINE)
    pretrain = summary.get("phases", {}).get("pretrain")
    if pretrain and pretrain.get("curve"):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for key, label in (("train_loss", "train"), ("eval_loss", "validation")):
            points = [(p["step"], p[key]) for p in pretrain["curve"] if p.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o" if key == "eval_loss" else None, label=label)
        if pretrain.get("unigram_entropy") is not None:
            ax.axhline(pretrain["unigram_entropy"], color="grey", linestyle="--", label="unigram entropy (word counts only)")
        ax.set(xlabel="step", ylabel="masked-LM loss (nats)", title="Pretraining (masked LM)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "pretraining.png", dpi=110)
        plt.close(fig)
        written.append("pretraining.png")
    return written


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Header and rows: each arm's mean ± sd test accuracy per size, its fine-tuning time and energy,
    then the paired verdicts per size."""
    sizes = summary.get("sizes", [])
    rows = [["arm"] + [f"{size} per class" for size in sizes] + ["fine-tune s", "energy Wh"]]
    for arm in summary.get("arms", []):
        cells = [f"{arm['points'][str(s)]['mean']:.3f} ± {arm['points'][str(s)]['sd']:.3f}" for s in sizes]
        rows.append([arm["name"]] + cells + [f"{arm['wall_s']:.0f}", f"{arm['energy_wh']:.3f}"])
    for name, by_size in summary.get("comparisons", {}).items():
        rows.append([name] + [_verdict_cell(by_size[str(s)]) for s in sizes] + ["", ""])
    return rows


def _verdict_cell(comparison: dict) -> str:
    return f"{comparison['verdict']} {comparison['difference'] * 100:+.1f} (p={comparison['p_value']:.1g})"


def pretraining_line(summary: dict[str, Any]) -> str:
    pre = summary.get("phases", {}).get("pretrain")
    if not pre:
        return ""
    return (f"pretraining: {pre['steps']} steps, {pre['tokens']:,} tokens, {pre['wall_s']:.0f} s, {pre['energy_wh']:.3f} Wh, "
            f"{pre['co2_g']:.3f} g CO2eq ({pre.get('recipe')} recipe); validation masked-LM loss {pre['eval_loss']:.2f} "
            f"nats, the corpus's unigram entropy {pre['unigram_entropy']:.2f} nats")


def terminal_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the curve and the verdicts, the pretraining line, and the verdict paragraph."""
    rows = table_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", pretraining_line(summary), "", summary.get("verdict", "")]
    return "\n".join(lines)


def write_html(summary: dict[str, Any], folder: Path, images: list[str]) -> Path:
    """report.html: the headline plot, what was run, the table, the verdict and the pretraining curve."""
    e = html.escape
    rows = table_rows(summary)
    header = "".join(f"<th>{e(cell)}</th>" for cell in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in rows[1:])
    task = summary.get("task", {})
    plan = summary.get("budget", {}).get("finetune", {})
    facts = [
        f"Corpus: {e(str(summary.get('corpus', '')))}",
        f"Task: {e(str(task.get('description', '')))} — labels {e(', '.join(task.get('labels', [])))}; "
        f"{task.get('test', '?')} test docstrings shared by every run (always answering the most frequent package "
        f"scores {task.get('majority_accuracy', 0):.3f})",
        f"Each point: {plan.get('seeds', '?')} fine-tuning runs (seeds), each on its own draw of k labelled docstrings "
        f"per package (the same draw for every arm); verdicts from a paired bootstrap over test docstrings "
        f"(95% interval of the accuracy difference) with the exact McNemar p-value",
        e(pretraining_line(summary)),
    ]
    plots = "".join(f'<p><img src="{e(name)}" alt="{e(name)}"></p>' for name in images)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lmforge demo: does pretraining help, and with how few labels?</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:right}}
td:first-child,th:first-child{{text-align:left}} .verdict{{background:#f4f4f4;padding:1em}}</style></head>
<body><h1>Does pretraining help, and with how few labels? (lmforge demo)</h1>
{plots}
<ul>{''.join(f'<li>{fact}</li>' for fact in facts)}</ul>
<table><tr>{header}</tr>{body}</table>
<p class="verdict">{e(summary.get('verdict', ''))}</p>
<p>Machine: {e(str(summary.get('machine', '')))}. Every step is seeded and the tokenizer is trained
deterministically: a second run on this machine gives the same accuracies. Times and energy vary with the machine's load.</p>
</body></html>
"""
    path = folder / "report.html"
    write_text(path, page)
    return path
