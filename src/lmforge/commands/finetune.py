"""`lmforge finetune`: train a task head on labelled data, from a checkpoint or from scratch.

    lmforge finetune --from minilm/ --task classify --train sst2.train.txt --valid sst2.dev.txt --out runs/sst2
    lmforge finetune --from minilm/ --from-scratch --task classify ...        # same architecture, random weights
    lmforge finetune --preset tiny-bert --from-scratch --tokenizer tok/ --task tag --train a.conll ...
    lmforge finetune --from t5/ --task seq2seq --train train.en train.de --valid val.en val.de --out runs/mt
    lmforge finetune --from minilm/ --task classify ... --lora-r 8 --lora-targets attention,mlp   # LoRA adapter

The run folder gets model/ (the best checkpoint by the validation metric: accuracy, entity F1, BLEU or
loss; with --lora-r, adapter/ instead: a PEFT-format adapter folder), finetune.json, metrics.jsonl, summary.json, checkpoints/ and final/ (the last step).
"""

from __future__ import annotations

import dataclasses
import sys

from ..errors import ConfigError
from ..finetune import FinetuneRequest, finetune
from ..finetune.run import DEFAULT_SETTINGS
from ..finetune.tasks import DataOptions
from ..models.lora import LoraSettings
from .flags import add_dataclass_flags, add_energy_flags, add_setting_flags, dataclass_values, flag_of, \
    setting_overrides

CHOSEN_BY_TASK = ("best_metric", "best_mode", "seq_len")  # finetune's --best-metric and --max-length decide these


def register(subparsers) -> None:
    parser = subparsers.add_parser("finetune", help="fine-tune a checkpoint (or train from scratch) on a labelled task",
                                   description=__doc__.split("\n\n")[0])
    add_dataclass_flags(parser, FinetuneRequest)
    parser.add_argument("--out", required=True, metavar="DIR", help="the run folder (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier fine-tuning run in --out")
    add_energy_flags(parser, measure_by_default=False)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_flags(parser, DataOptions, "data format")
    add_dataclass_flags(parser, LoraSettings, "LoRA (low-rank adapters on a frozen base; writes out/adapter)",
                        prefix="lora_")
    add_setting_flags(parser, "training settings", f"defaults: {DEFAULT_SETTINGS}; --lr, --warmup-steps and "
                      "--batch-size follow the model's size unless given (1e-3 below 10M parameters, 2e-4 below 60M, "
                      "5e-5 below 200M, 2e-5 above)", exclude=CHOSEN_BY_TASK)
    parser.set_defaults(run=run)


def lora_settings(args):
    """LoraSettings from the --lora-* flags, None without --lora-r (the others alone are a ConfigError)."""
    given = dataclass_values(args, LoraSettings, prefix="lora_")
    if "r" not in given:
        if given:
            field = next(f for f in dataclasses.fields(LoraSettings) if f.name in given)
            raise ConfigError(f"{flag_of(field, 'lora_')} needs --lora-r R (the adapter rank) to turn LoRA on")
        return None
    return LoraSettings(**given).validate()


def data_options(args) -> DataOptions:
    """The readers' options from the data-format flags (shared with `lmforge evaluate`)."""
    return DataOptions(**dataclass_values(args, DataOptions))


def request_of(args) -> FinetuneRequest:
    """The run the flags ask for (LoRA flag mistakes are found here, before any data is read)."""
    return FinetuneRequest(**dataclass_values(args, FinetuneRequest), data=data_options(args), lora=lora_settings(args),
                           settings=setting_overrides(args, exclude=CHOSEN_BY_TASK), country=args.country)


def run(args) -> int:
    result = finetune(args.out, request_of(args), overwrite=args.overwrite, use_codecarbon=args.codecarbon,
                      progress=not args.quiet)
    print(result.starting_point)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float))
    print(f"fine-tuned {result.steps} steps in {result.wall_s:.1f} s ({result.energy_kwh:.3g} kWh, "
          f"{result.energy_source}); best step {result.best_step}: {shown or 'no validation data'}; "
          f"model: {result.model_path}")
    if result.warning:
        print(result.warning, file=sys.stderr)
    return 0
