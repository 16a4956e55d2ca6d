"""ELECTRA replaced-token detection against masked LM at the same wall-clock budget, on the demo's data.

    OMP_NUM_THREADS=1 python examples/rtd_vs_mlm.py --work runs/rtd_vs_mlm --budget 240 --seeds 3 --threads 1

Both objectives pretrain the demo's 4 x 128 BERT on the demo corpus (Python standard-library docstrings,
WordPiece 4,000; built by examples/pretrain_ablation.py's `prepare`) with `--time-budget BUDGET` and the
same settings; then each encoder, and the same architecture from scratch, is fine-tuned on 16 labelled
docstrings per package (8 packages) for 120 steps at lr 1e-3 with SEEDS seeds. Prints the masked-LM loss
(RTD: its generator's) beside the corpus's unigram entropy, and the mean and spread of test accuracy.
Wall-clock budgets make the comparison depend on the machine's load: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from lmforge import presets
from lmforge.eval.evaluate import evaluate
from lmforge.finetune import DataOptions, finetune
from lmforge.train.metrics_log import MetricsLog
from lmforge.train.pretrain import PretrainRequest, pretrain
from pretrain_ablation import prepare

SETTINGS = {"batch_size": 32, "seq_len": 128, "lr": 1e-3, "weight_decay": 0.01, "beta2": 0.98, "warmup_steps": 30,
            "eval_batches": 16}
FINETUNE = {"max_steps": 120, "batch_size": 32, "warmup_steps": 12, "eval_every": 20, "lr": 1e-3}


def unigram_entropy(shards) -> float:
    """Entropy in nats of the training split's token frequencies (what a model knowing only counts scores)."""
    counts = np.bincount(np.asarray(shards.split("train")), minlength=shards.tokenizer.vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def pretrain_arm(objective: str, budget: float, work: Path, shards_dir: Path) -> dict:
    out = work / f"pretrain-{objective}"
    config = presets.bert_like(d_model=128, n_heads=4, n_layers=4, d_ff=512, max_positions=128, name="demo-bert")
    if not (out / "summary.json").is_file():
        pretrain(out, PretrainRequest(config=config, data=shards_dir, objective=objective, time_budget=budget,
                                      vocab_from_data=True, settings=dict(SETTINGS)),
                 overwrite=True, use_codecarbon=False, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    evals = [r for r in MetricsLog(out / "metrics.jsonl").read() if "eval_loss" in r]
    loss_key = "eval_generator_loss" if objective == "rtd" else "eval_loss"
    last = evals[-1]
    return {"objective": objective, "steps": summary["steps"], "wall_s": round(summary["wall_s"], 1),
            "mlm_loss": last[loss_key], "discriminator_loss": last.get("eval_discriminator_loss"),
            "discriminator_accuracy": last.get("eval_discriminator_accuracy"), "final": str(out / "final")}


def finetune_arm(name: str, source: dict, seeds: int, work: Path, data: Path) -> dict:
    accuracies = []
    for seed in range(seeds):
        folder = work / "finetune" / f"{name}-seed{seed}"
        options = DataOptions(max_length=128)
        result = finetune("classify", data / "train.jsonl", data / "valid.jsonl", out=folder, overwrite=True,
                          settings={**FINETUNE, "seed": seed}, data_options=options, progress=False, **source)
        accuracies.append(evaluate(result.model_path, data / "test.jsonl", "classify", data_options=options)["accuracy"])
    return {"arm": name, "test_accuracy": accuracies, "mean": statistics.mean(accuracies),
            "spread": statistics.pstdev(accuracies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/rtd_vs_mlm"))
    parser.add_argument("--budget", type=float, default=240.0, help="pretraining seconds per objective")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per arm")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, shards = prepare(args.work)
    entropy = unigram_entropy(shards)
    arms = [pretrain_arm(objective, args.budget, args.work, data / "shards") for objective in ("mlm", "rtd")]
    print(f"unigram entropy of the corpus: {entropy:.3f} nats")
    print("| objective | steps in budget | masked-LM loss (RTD: generator) | below unigram entropy | "
          "discriminator loss / accuracy |")
    print("|---|---:|---:|---:|---|")
    for arm in arms:
        detection = (f"{arm['discriminator_loss']:.3f} / {arm['discriminator_accuracy']:.3f}"
                     if arm["discriminator_loss"] is not None else "-")
        print(f"| {arm['objective']} | {arm['steps']} | {arm['mlm_loss']:.3f} | {entropy - arm['mlm_loss']:.3f} | "
              f"{detection} |")
    results = [finetune_arm(f"pretrained-{arm['objective']}", {"checkpoint": arm["final"]}, args.seeds, args.work, data)
               for arm in arms]
    results.append(finetune_arm("from-scratch", {"checkpoint": arms[0]["final"], "from_scratch": True}, args.seeds,
                                args.work, data))
    print(f"\n| arm | test accuracy, mean ± sd over {args.seeds} fine-tuning seeds | per seed |")
    print("|---|---:|---|")
    for row in results:
        print(f"| {row['arm']} | {row['mean']:.3f} ± {row['spread']:.3f} | "
              f"{', '.join(f'{a:.3f}' for a in row['test_accuracy'])} |")
    (args.work / "results.json").write_text(json.dumps({"unigram_entropy": entropy, "pretraining": arms,
                                                        "finetuning": results, "budget_s": args.budget}, indent=2))


if __name__ == "__main__":
    main()
