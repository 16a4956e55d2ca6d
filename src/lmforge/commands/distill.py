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

from ..distill import LossWeights, format_report
from ..distill.job import DistillRequest, distill_teacher
from ..distill.sources import OBJECTIVES
from ..train.distributed import Distributed
from .flags import add_adapter_flag, add_training_run_flags, setting_overrides


def register(subparsers) -> None:
    parser = subparsers.add_parser("distill", help="distil a teacher into a smaller student",
                                   description=__doc__.split("\n\n")[0] + " Training settings come from "
                                   "--run-config (YAML/JSON), then from the flags below.")
    parser.add_argument("--teacher", required=True, metavar="DIR", help="the teacher checkpoint (lmforge or HF)")
    add_adapter_flag(parser, "--teacher (merged into it)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder")
    parser.add_argument("--data", metavar="SHARDS", help="prepared token shards (objectives mlm, clm, seq2seq)")
    parser.add_argument("--train", metavar="FILE", help="labelled training file (objective task; seq2seq: JSONL)")
    parser.add_argument("--valid", metavar="FILE", help="labelled validation file, for evaluation and the report")
    parser.add_argument("--unlabelled", metavar="FILE", help="extra text lines taught by soft targets only (task)")
    parser.add_argument("--objective", choices=list(OBJECTIVES),
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
    add_training_run_flags(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    request = DistillRequest(teacher=args.teacher, teacher_adapter=args.adapter, data=args.data, train=args.train, valid=args.valid,
                             unlabelled=args.unlabelled, objective=args.objective, student_layers=args.student_layers,
                             student_config=args.student_config, max_length=args.max_length,
                             weights=LossWeights(args.alpha_ce, args.alpha_hard, args.alpha_cos, args.temperature),
                             speed_batches=args.speed_batches, run_config=args.run_config,
                             settings=setting_overrides(args))
    dist = Distributed.from_env(args.device)
    try:
        result, report = distill_teacher(args.out, request, overwrite=args.overwrite, dist=dist,
                                         use_codecarbon=args.codecarbon, country=args.country,
                                         progress=not args.quiet, say=print if dist.is_main else lambda line: None)
        if dist.is_main:
            print(format_report(report))
            print(f"distilled {result.steps:,} steps in {result.wall_s:.1f} s; student: {Path(args.out) / 'final'}")
    finally:
        dist.close()
    return 0
