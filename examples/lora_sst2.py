"""LoRA vs full fine-tuning of all-MiniLM-L6-v2 on SST-2: dev accuracy, seconds per step, peak memory, energy,
trainable share and adapter size.

    python examples/lora_sst2.py --threads 1                  # both arms, one after the other
    python examples/lora_sst2.py --arms lora --max-steps 200  # one arm, shorter schedule

Full fine-tuning uses the teacher recipe of examples/distill_sst2.py (400 steps of 32, lr 1e-4, 10% warmup);
LoRA uses r=8, alpha=16 on attention (q, k, v, o) and the MLP (up, down) with the new classification head
trained in full, at lr 1e-3 with the same schedule. Each arm runs in its own process so that its peak resident
memory is its own; energy comes from codecarbon (or its estimate) as in every lmforge run. Wall-clock numbers
depend on the machine and on whatever else runs on it.

One run on a 2-core CPU shared with several other busy jobs (so s/step and energy mostly measure the
contention; the full arm hit its 30-minute budget at step 180 of 400):

    arm    dev acc  steps  s/step  peak MB       kWh  trainable   share  file MB
    lora    0.8750    400    3.95     2096   0.00488    332,546   1.46%     1.28
    full    0.8693    180   10.96     1789   0.00575 22,713,986 100.00%    86.66

Peak MB is the arm process's peak resident memory including the final evaluation, where the LoRA arm loads
the base and builds the classifier from the adapter (a second copy of the weights). Full fine-tuning run to
400 steps reached 0.875 (examples/distill_sst2.py's teacher).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from proof_arms import SHARED, arm_parser, minilm_folder, need, run_arm, set_threads

SST2 = SHARED / "classification"
LORA = {"r": 8, "alpha": 16.0, "targets": "attention,mlp"}
LEARNING_RATE = {"full": 1e-4, "lora": 1e-3}


def one_arm(arm: str, args) -> dict:
    """Fine-tune one arm in this process and return its row (peak memory of this process included)."""
    from lmforge.models.lora import LoraSettings

    set_threads(args.threads)
    settings = {"max_steps": args.max_steps, "batch_size": 32, "lr": LEARNING_RATE[arm],
                "warmup_steps": args.max_steps // 10, "eval_every": max(args.max_steps // 4, 1), "log_every": 10,
                "seed": 0}
    extra = {"lora": LoraSettings(**LORA)} if arm == "lora" else {}
    started = time.perf_counter()
    row = run_arm(arm, "classify", SST2 / "sst2.train.txt", SST2 / "sst2.dev.txt", Path(args.out),
                  args.budget_min * 60, settings, "accuracy", checkpoint=minilm_folder(), **extra)
    run = json.loads((Path(args.out) / arm / "finetune.json").read_text())
    summary = json.loads((Path(args.out) / arm / "summary.json").read_text())
    model_dir = Path(args.out) / arm / ("adapter" if arm == "lora" else "model")
    weights = model_dir / ("adapter_model.safetensors" if arm == "lora" else "model.safetensors")
    return {**row, "scores": {k: v for k, v in row["scores"].items() if not isinstance(v, (dict, list))},
            "s_per_step": summary["wall_s"] / max(row["steps"], 1), "peak_rss_mb": peak_rss_mb(),
            "trainable": run["trainable_parameters"], "file_mb": weights.stat().st_size / 2**20,
            "process_s": time.perf_counter() - started}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def print_rows(rows: list[dict], backbone: int) -> None:
    print(f"\n{'arm':<5} {'dev acc':>8} {'steps':>6} {'s/step':>7} {'peak MB':>8} {'kWh':>9} "
          f"{'trainable':>10} {'share':>7} {'file MB':>8}")
    for r in rows:
        print(f"{r['arm']:<5} {r['accuracy']:>8.4f} {r['steps']:>6} {r['s_per_step']:>7.2f} {r['peak_rss_mb']:>8.0f} "
              f"{r['kwh']:>9.5f} {r['trainable']:>10,} {r['trainable'] / backbone:>7.2%} {r['file_mb']:>8.2f}"
              f"  ({r['energy_source']}, stopped by {r['stopped']})")


def main() -> None:
    parser = arm_parser(__doc__, budget_min=30.0, max_steps=400, out="runs/lora_sst2", arms=True)
    parser.set_defaults(arms="lora,full")
    parser.add_argument("--arm", help=argparse_hidden())
    args = parser.parse_args()
    need(SST2 / "sst2.train.txt", SST2 / "sst2.dev.txt")
    if args.arm:  # a child process: run one arm, print its row as JSON
        print("ROW " + json.dumps(one_arm(args.arm, args)))
        return
    rows = []
    for arm in args.arms.split(","):
        command = [sys.executable, __file__, "--arm", arm, "--out", args.out, "--max-steps", str(args.max_steps),
                   "--budget-min", str(args.budget_min)] + (["--threads", str(args.threads)] if args.threads else [])
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(next(line[4:] for line in output.splitlines() if line.startswith("ROW "))))
        print(f"{arm}: accuracy {rows[-1]['accuracy']:.4f} after {rows[-1]['steps']} steps", flush=True)
    import lmforge

    backbone = lmforge.load(minilm_folder()).num_parameters(backbone_only=True)
    print_rows(rows, backbone)
    (Path(args.out) / "lora_vs_full.json").write_text(json.dumps({"backbone": backbone, "rows": rows}, indent=2))


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
