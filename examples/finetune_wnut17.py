"""Proof run: WNUT-17 named entities, all-MiniLM-L6-v2 fine-tuned vs the same architecture from scratch.

    python examples/finetune_wnut17.py [--budget-min 6] [--arms pretrained,scratch] [--out runs/wnut17] [--threads 1]

Both arms use the same settings and wall-time budget (the scratch arm a higher learning rate); the best
checkpoint by dev entity F1 (seqeval) is re-scored on the WNUT-17 test set with `evaluate`.
"""

from __future__ import annotations

from proof_arms import SHARED, arm_parser, minilm_arms, need, print_table, set_threads

DATA = SHARED / "ner"


def main() -> None:
    args = arm_parser(__doc__, budget_min=6.0, max_steps=400, out="runs/wnut17").parse_args()
    files = [DATA / f"wnut17.{split}.conll" for split in ("train", "dev", "test")]
    need(*files)
    set_threads(args.threads)
    rows = minilm_arms(args, "tag", files[0], files[1], "f1", batch_size=16, scratch_lr=5e-4, warmup_steps=20,
                       score_data=files[2])
    print_table(rows, "f1", ("precision", "recall"))


if __name__ == "__main__":
    main()
