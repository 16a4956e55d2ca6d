"""ELECTRA replaced-token detection against masked LM at the same compute budget, on the demo's data.

    OMP_NUM_THREADS=1 python examples/rtd_vs_mlm.py --work runs/rtd_vs_mlm --steps 300 --seeds 3 --threads 1
    OMP_NUM_THREADS=1 python examples/rtd_vs_mlm.py --work runs/rtd_vs_mlm --budget 240   # a quiet machine

Both objectives pretrain the demo's 4 x 128 BERT on the demo corpus (Python standard-library docstrings,
WordPiece 4,000; built by examples/pretrain_ablation.py's `prepare`) with the same settings. The budget is
either wall-clock (`--budget SECONDS`, `lmforge pretrain --time-budget`: only fair on a quiet machine) or
`--steps N` masked-LM steps, RTD getting N x (one MLM step's time / one RTD step's time), the ratio measured
by interleaved timed steps in this process (so a loaded machine slows both alike). Each encoder, and the same
architecture from scratch, is then fine-tuned on 16 labelled docstrings per package (8 packages) for 120
steps at lr 1e-3 with SEEDS seeds. Prints the masked-LM loss (RTD: its generator's) beside the corpus's
unigram entropy, and the mean and spread of test accuracy.
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
from lmforge.finetune import DataOptions, FinetuneRequest, finetune
from lmforge.train import TrainSettings
from lmforge.train.budget import measure_step_seconds
from lmforge.train.metrics_log import MetricsLog
from lmforge.train.pretrain import PretrainRequest, pretrain
from lmforge.train.pretraining import ShardSources, build_objective, fit_config_to_tokenizer, objective_loss, \
    pretraining_model
from pretrain_ablation import prepare

SETTINGS = {"batch_size": 32, "seq_len": 128, "lr": 1e-3, "weight_decay": 0.01, "beta2": 0.98, "eval_batches": 8}
CONFIG = presets.bert_like(d_model=128, n_heads=4, n_layers=4, d_ff=512, max_positions=128, name="demo-bert")
FINETUNE = {"max_steps": 120, "batch_size": 32, "warmup_steps": 12, "eval_every": 20, "lr": 1e-3}


def unigram_entropy(shards) -> float:
    """Entropy in nats of the training split's token frequencies (what a model knowing only counts scores)."""
    counts = np.bincount(np.asarray(shards.split("train")), minlength=shards.tokenizer.vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def step_cost_ratio(shards, rounds: int = 3) -> float:
    """Seconds of one RTD optimizer step / one masked-LM step, from interleaved timed steps (median ratio)."""
    config = fit_config_to_tokenizer(CONFIG, shards.tokenizer, vocab_from_data=True)
    settings = TrainSettings(**SETTINGS)
    arms = {name: (pretraining_model(name, config), objective_loss(name),
                   ShardSources(shards, build_objective(name, "encoder", shards.tokenizer), 128).train(32))
            for name in ("mlm", "rtd")}
    ratios = []
    for _ in range(rounds):
        seconds = {name: measure_step_seconds(model, batches, loss, settings) for name, (model, loss, batches)
                   in arms.items()}
        ratios.append(seconds["rtd"] / seconds["mlm"])
    return statistics.median(ratios)


def pretrain_arm(objective: str, work: Path, shards_dir: Path, budget: float | None, steps: int | None) -> dict:
    out = work / f"pretrain-{objective}"
    if not (out / "summary.json").is_file():
        schedule = ({"max_steps": steps, "warmup_steps": max(1, steps // 10), "eval_every": max(1, steps // 4),
                     "save_every": steps, "log_every": 10} if steps else {"warmup_steps": 30})
        pretrain(out, PretrainRequest(config=CONFIG, data=shards_dir, objective=objective, time_budget=budget,
                                      vocab_from_data=True, settings={**SETTINGS, **schedule}),
                 overwrite=True, use_codecarbon=False, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    evals = [r for r in MetricsLog(out / "metrics.jsonl").read() if "eval_loss" in r]
    loss_key = "eval_generator_loss" if objective == "rtd" else "eval_loss"
    last = evals[-1]
    return {"objective": objective, "steps": summary["steps"], "wall_s": round(summary["wall_s"], 1),
            "mlm_loss": last[loss_key], "discriminator_loss": last.get("eval_discriminator_loss"),
            "discriminator_accuracy": last.get("eval_discriminator_accuracy"), "final": str(out / "final")}


def finetune_once(source: dict, seed: int, folder: Path, data: Path) -> float:
    """Test accuracy of one fine-tuning run from `source` with `seed`."""
    options = DataOptions(max_length=128)
    request = FinetuneRequest("classify", data / "train.jsonl", data / "valid.jsonl",
                              settings={**FINETUNE, "seed": seed}, data=options, **source)
    result = finetune(folder, request, overwrite=True, progress=False)
    return evaluate(result.model_path, data / "test.jsonl", "classify", data_options=options)["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/rtd_vs_mlm"))
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=float, help="pretraining seconds per objective (a quiet machine)")
    budget.add_argument("--steps", type=int, default=300, help="masked-LM steps; RTD gets as many seconds' worth")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per arm")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, shards = prepare(args.work)
    entropy = unigram_entropy(shards)
    if args.budget:
        arms = [pretrain_arm(objective, args.work, data / "shards", args.budget, None) for objective in ("mlm", "rtd")]
        ratio = None
    else:
        ratio = step_cost_ratio(shards)
        print(f"one RTD step costs {ratio:.2f} masked-LM steps (interleaved timing); "
              f"RTD gets {round(args.steps / ratio)} steps for {args.steps} masked-LM steps", flush=True)
        arms = [pretrain_arm("mlm", args.work, data / "shards", None, args.steps),
                pretrain_arm("rtd", args.work, data / "shards", None, round(args.steps / ratio))]
    print(f"unigram entropy of the corpus: {entropy:.3f} nats")
    print("| objective | steps in budget | masked-LM loss (RTD: generator) | below unigram entropy | "
          "discriminator loss / accuracy |")
    print("|---|---:|---:|---:|---|")
    for arm in arms:
        detection = (f"{arm['discriminator_loss']:.3f} / {arm['discriminator_accuracy']:.3f}"
                     if arm["discriminator_loss"] is not None else "-")
        print(f"| {arm['objective']} | {arm['steps']} | {arm['mlm_loss']:.3f} | {entropy - arm['mlm_loss']:.3f} | "
              f"{detection} |", flush=True)
    sources = {f"pretrained-{arm['objective']}": {"checkpoint": arm["final"]} for arm in arms}
    sources["from-scratch"] = {"checkpoint": arms[0]["final"], "from_scratch": True}
    accuracies: dict[str, list[float]] = {name: [] for name in sources}
    for seed in range(args.seeds):  # seed by seed, so that a stopped run still compares every arm
        for name, source in sources.items():
            accuracies[name].append(finetune_once(source, seed, args.work / "finetune" / f"{name}-seed{seed}", data))
            print(f"   {name} seed {seed}: test accuracy {accuracies[name][-1]:.3f}", flush=True)
    results = [{"arm": name, "test_accuracy": values, "mean": statistics.mean(values),
                "spread": statistics.pstdev(values)} for name, values in accuracies.items()]
    print(f"\n| arm | test accuracy, mean ± sd over {args.seeds} fine-tuning seeds | per seed |")
    print("|---|---:|---|")
    for row in results:
        print(f"| {row['arm']} | {row['mean']:.3f} ± {row['spread']:.3f} | "
              f"{', '.join(f'{a:.3f}' for a in row['test_accuracy'])} |")
    (args.work / "results.json").write_text(json.dumps({"unigram_entropy": entropy, "pretraining": arms,
                                                        "finetuning": results, "budget_s": args.budget,
                                                        "mlm_steps": args.steps, "rtd_step_cost": ratio}, indent=2))


if __name__ == "__main__":
    main()
