"""`lmforge finetune`: train a task head on labelled data, from a checkpoint or from scratch.

    lmforge finetune --from minilm/ --task classify --train sst2.train.txt --valid sst2.dev.txt --out runs/sst2
    lmforge finetune --from minilm/ --from-scratch --task classify ...        # same architecture, random weights
    lmforge finetune --preset tiny-bert --from-scratch --tokenizer tok/ --task tag --train a.conll ...
    lmforge finetune --from t5/ --task seq2seq --train train.en train.de --valid val.en val.de --out runs/mt

The run folder gets model/ (the best checkpoint by the validation metric: accuracy, entity F1, BLEU or
loss), finetune.json, metrics.jsonl, summary.json, checkpoints/ and final/ (the last step).
"""

from __future__ import annotations

from ..finetune import finetune
from ..finetune.run import DEFAULT_SETTINGS
from ..finetune.tasks import TASKS, DataOptions
from .flags import add_energy_flags, add_setting_flags, setting_overrides

CHOSEN_BY_TASK = ("best_metric", "best_mode", "seq_len")  # finetune's --best-metric and --max-length decide these


def register(subparsers) -> None:
    parser = subparsers.add_parser("finetune", help="fine-tune a checkpoint (or train from scratch) on a labelled task",
                                   description=__doc__.split("\n\n")[0])
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--from", dest="checkpoint", metavar="CHECKPOINT", help="an lmforge or Hugging Face folder")
    start.add_argument("--preset", help="a named architecture (needs --from-scratch and --tokenizer)")
    parser.add_argument("--from-scratch", action="store_true", help="random weights (the baseline)")
    parser.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder (default: the checkpoint's)")
    parser.add_argument("--task", required=True, choices=list(TASKS), help="classify | tag | seq2seq | clm")
    parser.add_argument("--train", required=True, nargs="+", metavar="FILE",
                        help="training data (seq2seq: SOURCE TARGET files, or one .jsonl)")
    parser.add_argument("--valid", nargs="+", metavar="FILE", help="validation data, read like --train")
    parser.add_argument("--out", required=True, metavar="DIR", help="the run folder (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier fine-tuning run in --out")
    parser.add_argument("--max-train-examples", type=int, metavar="N", help="train on N random examples")
    parser.add_argument("--patience", type=int, metavar="N", help="stop after N evaluations without improvement")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this much wall time")
    parser.add_argument("--best-metric", help="metric that selects model/ (default: accuracy, f1, bleu, eval_loss)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="seq2seq: tokens generated for BLEU")
    add_energy_flags(parser, measure_by_default=False)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_options(parser)
    add_setting_flags(parser, "training settings", f"defaults: {DEFAULT_SETTINGS}", exclude=CHOSEN_BY_TASK)
    parser.set_defaults(run=run)


def add_data_options(parser) -> None:
    data = parser.add_argument_group("data format")
    data.add_argument("--max-length", type=int, default=512, help="tokens per example, specials included")
    data.add_argument("--text-field", default="text", help="text column (.csv/.tsv/.jsonl)")
    data.add_argument("--pair-field", help="second text column, for sentence pairs")
    data.add_argument("--label-field", default="label", help="label column")
    data.add_argument("--source-field", default="source", help="seq2seq .jsonl source field")
    data.add_argument("--target-field", default="target", help="seq2seq .jsonl target field")
    data.add_argument("--block-size", type=int, default=128, help="clm: tokens per training block")


def data_options(args):
    """The readers' options from the data-format flags (shared with `lmforge evaluate`)."""
    return DataOptions(max_length=args.max_length, text_field=args.text_field, pair_field=args.pair_field,
                       label_field=args.label_field, source_field=args.source_field,
                       target_field=args.target_field, block_size=args.block_size)


def run(args) -> int:
    settings = setting_overrides(args, exclude=CHOSEN_BY_TASK)
    result = finetune(args.task, args.train, args.valid, out=args.out, checkpoint=args.checkpoint,
                      preset=args.preset, from_scratch=args.from_scratch, tokenizer=args.tokenizer,
                      settings=settings, data_options=data_options(args), max_train_examples=args.max_train_examples,
                      patience=args.patience, time_budget_s=args.time_budget, best_metric=args.best_metric,
                      max_new_tokens=args.max_new_tokens, overwrite=args.overwrite, country=args.country,
                      use_codecarbon=args.codecarbon, progress=not args.quiet)
    print(result.starting_point)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float))
    print(f"fine-tuned {result.steps} steps in {result.wall_s:.1f} s ({result.energy_kwh:.3g} kWh, "
          f"{result.energy_source}); best step {result.best_step}: {shown or 'no validation data'}; "
          f"model: {result.model_path}")
    return 0
