"""`lmforge distill`: make a smaller student from a teacher and report DistilBERT's three ratios.

    lmforge distill --teacher runs/bert/final --data shards/ --out runs/distil          # mlm (the teacher's head)
    lmforge distill --teacher sst2-teacher --train sst2.train.txt --valid sst2.dev.txt --out runs/student
    lmforge distill --teacher runs/gpt/final --data shards/ --out runs/small --student-layers 2

The student is the teacher with --student-layers K layers (default half), initialised from its
embeddings and evenly spaced layers, or --student-config FILE. The run folder holds metrics.jsonl,
checkpoints/, summary.json, distill.json and final/ (the student, whose card holds the ratios).
"""

from __future__ import annotations

from pathlib import Path

from .. import load
from ..distill import LossWeights, distill, format_report, make_student, objective_for, student_config
from ..distill.sources import labelled_sources, shard_sources
from ..errors import ConfigError
from ..train import EnergyMeter, seed_everything
from ..train.distributed import Distributed
from ..train.pretrain import settings_for
from ..train.run_folder import RunFolder
from .flags import add_energy_flags, add_setting_flags, setting_overrides


def register(subparsers) -> None:
    parser = subparsers.add_parser("distill", help="distil a teacher into a smaller student",
                                   description=__doc__.split("\n\n")[0] + " Training settings come from "
                                   "--run-config (YAML/JSON), then from the flags below.")
    parser.add_argument("--teacher", required=True, metavar="DIR", help="the teacher checkpoint (lmforge or HF)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder")
    parser.add_argument("--data", metavar="SHARDS", help="prepared token shards (objectives mlm, clm, seq2seq)")
    parser.add_argument("--train", metavar="FILE", help="labelled training file (objective task; seq2seq: JSONL)")
    parser.add_argument("--valid", metavar="FILE", help="labelled validation file, for evaluation and the report")
    parser.add_argument("--unlabelled", metavar="FILE", help="extra text lines taught by soft targets only (task)")
    parser.add_argument("--objective", choices=["mlm", "task", "clm", "seq2seq"],
                        help="default: from the teacher's head (masked-LM: mlm, classifier: task, causal-LM: clm, "
                             "seq2seq-LM: seq2seq)")
    student = parser.add_mutually_exclusive_group()
    student.add_argument("--student-layers", type=int, metavar="K", help="layers per stack (default: half the teacher's)")
    student.add_argument("--student-config", metavar="FILE", help="the student's architecture (.json/.yaml)")
    parser.add_argument("--alpha-ce", type=float, default=5.0, help="weight of the soft-target KL (default 5.0)")
    parser.add_argument("--alpha-mlm", "--alpha-hard", dest="alpha_hard", type=float, default=2.0,
                        help="weight of the hard-label loss: masked LM, next token, or task labels (default 2.0)")
    parser.add_argument("--alpha-cos", type=float, default=1.0, help="weight of the hidden-state cosine loss (default 1.0)")
    parser.add_argument("--temperature", type=float, default=2.0, help="softmax temperature T (default 2.0)")
    parser.add_argument("--max-length", type=int, default=128, help="truncate labelled texts to this many tokens")
    parser.add_argument("--speed-batches", type=int, default=20, help="validation batches timed for the report")
    parser.add_argument("--run-config", metavar="FILE", help="training settings as YAML or JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    add_energy_flags(parser, measure_by_default=True)
    parser.add_argument("--device", default=None, help="cpu or cuda:N (default: this rank's GPU, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_setting_flags(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    dist = Distributed.from_env(args.device)
    try:
        return _distill(args, dist)
    finally:
        dist.close()


def _distill(args, dist) -> int:
    out = Path(args.out)
    folder = RunFolder(out, "distill")
    folder.open(overwrite=args.overwrite)
    weights = LossWeights(args.alpha_ce, args.alpha_hard, args.alpha_cos, args.temperature).validate()
    teacher = load(args.teacher)
    objective = objective_for(teacher.task, args.objective)
    config = student_config(teacher.config, args.student_layers, args.student_config)
    if weights.alpha_cos and config.d_model != teacher.config.d_model:
        raise ConfigError(f"the student is {config.d_model} wide and the teacher {teacher.config.d_model}, so their "
                          "hidden states cannot be compared; pass --alpha-cos 0")
    settings = settings_for(teacher.config, args.run_config, setting_overrides(args))
    settings.check_world(dist.world_size)
    if objective == "task" or (objective == "seq2seq" and args.train):
        if not (args.train and args.valid) or args.data:
            raise ConfigError(f"objective {objective} reads labelled files: give --train FILE and --valid FILE "
                              "(not --data)")
        sources = labelled_sources(teacher, args.train, args.valid, args.unlabelled, args.max_length, settings.seed)
    else:
        if not args.data or args.train or args.valid:
            raise ConfigError(f"objective {objective} reads prepared token shards: give --data DIR (from "
                              "`lmforge prepare` with the teacher's tokenizer), not --train/--valid")
        if args.unlabelled:
            raise ConfigError("--unlabelled is for task distillation; put the text into the prepared shards")
        sources = shard_sources(teacher, args.data, settings.seq_len, settings.seed)
    seed_everything(settings.seed)
    student, init = make_student(teacher, config)
    if dist.is_main:
        print(f"student: {config.n_layers} layers from teacher layers {init['layers']}, "
              f"{init['copied']}/{init['total']} tensors copied from the teacher")
        folder.start()
    dist.barrier()
    with folder.refusals_leave_nothing(new=dist.is_main):
        summary, report = distill(teacher, student, sources, settings, weights, out, objective=objective, init=init,
                                  speed_batches=args.speed_batches, dist=dist,
                                  energy=EnergyMeter(args.country, use_codecarbon=args.codecarbon), progress=not args.quiet)
    if dist.is_main:
        print(format_report(report))
        print(f"distilled {summary['steps']:,} steps in {summary['wall_s']:.1f} s; student: {out / 'final'}")
    return 0
