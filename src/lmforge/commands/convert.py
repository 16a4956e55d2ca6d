"""`lmforge convert SRC DST [--to hf|lmforge]`: Hugging Face <-> lmforge checkpoint folders."""

from __future__ import annotations

from .. import load
from ..checkpoint.hf import export_hf
from ..checkpoint.output import claim_folder, mark_folder
from ..errors import InputError
from ..models.lora import lora_layers, merge_and_unload


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a checkpoint between the Hugging Face and lmforge formats",
        description="Read SRC (a Hugging Face folder of type gpt2, bert, distilbert, roberta, bart or t5, or an "
                    "lmforge checkpoint) and write DST as an lmforge checkpoint (default) or, with --to hf, "
                    "as a Hugging Face folder that transformers loads.")
    parser.add_argument("src", metavar="SRC", help="checkpoint folder to read")
    parser.add_argument("dst", metavar="DST", help="folder to write (new, or a checkpoint to replace)")
    parser.add_argument("--overwrite", action="store_true", help="replace a checkpoint lmforge wrote in DST")
    parser.add_argument("--to", choices=("lmforge", "hf"), default="lmforge", help="format of DST (default lmforge)")
    parser.add_argument("--task", default=None,
                        help="head to load from a Hugging Face SRC (default: from its `architectures`)")
    parser.add_argument("--merge-adapter", metavar="DIR", nargs="?", const="",
                        help="write a plain model with a LoRA adapter merged in: the adapter folder DIR for SRC, "
                             "or without DIR the adapter SRC holds (an adapter folder or a LoRA run's checkpoint)")
    parser.add_argument("--model-type", default=None,
                        help="with --to hf: the Hugging Face model_type to write (default: the first that fits)")
    parser.set_defaults(run=run)


def run(args) -> int:
    kind = "hf-checkpoint" if args.to == "hf" else "checkpoint"
    claim_folder(args.dst, kind, args.overwrite, option="DST")
    model = load(args.src, task=args.task, adapter=args.merge_adapter or None)
    if args.merge_adapter is not None:
        if not lora_layers(model):
            raise InputError(f"{args.src} holds no LoRA adapter to merge; name the adapter folder: "
                             "--merge-adapter DIR")
        model = merge_and_unload(model)
    elif args.to == "hf" and lora_layers(model):
        raise InputError(f"{args.src} holds a LoRA adapter, which a Hugging Face model folder cannot hold; add "
                         "--merge-adapter to write the model with the adapter merged in (or convert --to lmforge "
                         "to keep the adapter)")
    if args.to == "hf":
        export_hf(model, args.dst, model_type=args.model_type)
    else:
        merged = f" with the adapter {args.merge_adapter or 'it held'} merged in" if args.merge_adapter is not None else ""
        model.save(args.dst, card={"description": f"Converted by lmforge from {args.src}{merged}."})
    mark_folder(args.dst, kind)
    print(f"wrote {args.dst} ({args.to}, {model.config.family} {model.task}, {model.num_parameters():,} parameters)")
    return 0
