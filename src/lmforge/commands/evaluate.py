"""`lmforge evaluate`: score a checkpoint on a labelled file for its task; print and write metrics JSON.

    lmforge evaluate --model runs/sst2/model --data sst2.dev.txt
    lmforge evaluate --model runs/mt/model --data val.en val.de --num-beams 4 --out val.json

classify: accuracy, macro-F1 (per class in the JSON); tag: entity precision/recall/F1 (seqeval);
seq2seq: sacreBLEU and chrF (ROUGE-1/2/L with --rouge); clm: loss and perplexity.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import load
from ..errors import InputError
from ..eval.evaluate import evaluate
from ..finetune.tasks import TASKS
from ..finetune.tasks import DataOptions
from ..models.weight_formats import weight_format_name
from .finetune import data_options
from .flags import add_adapter_flag, add_dataclass_flags, add_dtype_flag


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="metrics of a checkpoint on a labelled file",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="DIR", help="an lmforge or Hugging Face checkpoint")
    add_adapter_flag(parser, "--model")
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE",
                        help="labelled data (seq2seq: SOURCE TARGET files, or one .jsonl)")
    parser.add_argument("--task", choices=list(TASKS), help="default: the task the model's head serves")
    parser.add_argument("--out", metavar="FILE",
                        help="metrics JSON (default: metrics-<model name>-<data name>.json in the current folder; "
                             "with --adapter and a --dtype other than fp32, their names too)")
    parser.add_argument("--overwrite", action="store_true", help="replace a metrics file lmforge wrote at --out")
    add_dtype_flag(parser)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-examples", type=int, metavar="N", help="score N random examples only")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="seq2seq: tokens to generate")
    parser.add_argument("--num-beams", type=int, default=1, help="seq2seq: beam search width")
    parser.add_argument("--rouge", action="store_true", help="seq2seq: also ROUGE-1/2/L (summarization)")
    add_dataclass_flags(parser, DataOptions, "data format")
    parser.set_defaults(run=run)


def folder_label(path: str) -> str:
    """A folder's name, with its parent's for a generic one (`model`, `final`, `adapter`...: run/final -> run-final)."""
    folder = Path(path).absolute()
    generic = ("model", "final", "best", "last", "adapter")
    return f"{folder.parent.name}-{folder.name}" if folder.name in generic else folder.name


def default_metrics_path(model: str, data: str, adapter: str | None = None, dtype: str | None = None) -> Path:
    """metrics-<model>[-<adapter>]-<data>[-<dtype>].json, so evaluating two models, a model with and without an
    adapter, or one model in two weight formats (the quality cost of int8 against fp32) writes two files."""
    dtype = weight_format_name(dtype)  # an alias such as "bfloat16" names the file as "bf16" does
    parts = [folder_label(model), *([folder_label(adapter)] if adapter is not None else []), Path(data).stem,
             *([dtype] if dtype != "fp32" else [])]
    return Path(f"metrics-{'-'.join(parts)}.json")


def run(args) -> int:
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    out = Path(args.out) if args.out else default_metrics_path(args.model, args.data[0], args.adapter, args.dtype)
    model = args.model
    if args.adapter is not None or args.dtype is not None:
        model = load(args.model, adapter=args.adapter, dtype=args.dtype)
        with_adapter = f" + adapter {args.adapter}" if args.adapter is not None else ""
        model.config.name = f"{args.model}{with_adapter}" + (f" ({args.dtype})" if args.dtype is not None else "")
    metrics = evaluate(model, args.data, args.task, out=out, batch_size=args.batch_size,
                       data_options=data_options(args), max_examples=args.max_examples,
                       max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, rouge=args.rouge,
                       overwrite=args.overwrite)
    shown = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    print(json.dumps(shown, indent=2))
    print(f"metrics written to {out}")
    return 0
