"""Proof run: WNUT-17 named entities, all-MiniLM-L6-v2 fine-tuned vs the same architecture from scratch.

    python examples/finetune_wnut17.py [--budget-min 6] [--arms pretrained,scratch] [--out runs/wnut17] [--threads 1]

Both arms use the same settings and wall-time budget (the scratch arm a higher learning rate); the best
checkpoint by dev entity F1 (seqeval) is re-scored on the WNUT-17 test set with `evaluate`.
"""

from __future__ import annotations

from pathlib import Path

from proof_arms import SHARED, arm_parser, minilm_folder, need, print_table, run_arm, set_threads

DATA = SHARED / "ner"


def main() -> None:
    args = arm_parser(__doc__, budget_min=6.0, max_steps=400, out="runs/wnut17").parse_args()
    files = [DATA / f"wnut17.{split}.conll" for split in ("train", "dev", "test")]
    need(*files)
    set_threads(args.threads)
    rows = []
    for arm in args.arms.split(","):
        scratch = arm == "scratch"
        settings = {"max_steps": args.max_steps, "batch_size": 16, "lr": 5e-4 if scratch else 1e-4,
                    "warmup_steps": 20, "eval_every": 100, "log_every": 1, "seed": 0}
        rows.append(run_arm(arm, "tag", files[0], files[1], Path(args.out), args.budget_min * 60, settings, "f1",
                            score_data=files[2], checkpoint=minilm_folder(), from_scratch=scratch))
    print_table(rows, "f1", ("precision", "recall"))


if __name__ == "__main__":
    main()
