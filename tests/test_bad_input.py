"""A catalogue of bad inputs and faults, tried as a new user would, on every command and the Python API.

Each CLI case runs `lmforge.cli.main` in-process (the same code path as the `lmforge` script; a few are
repeated in one real subprocess at the end) inside one shared folder of real files, and asserts: exit
status 2, exactly one line on stderr, naming what the case expects, no traceback, and a file tree after
the run equal to the tree before. Each API case asserts an `LmforgeError` with a one-line message and an
unchanged tree. Read-only and disk-full cases use small tmpfs mounts (skipped with the reason where this
process may not mount one).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from finetune_helpers import sentiment_lines, tagged_sentences, write_conll, write_lines
from process_helpers import ctrl_c_default
from lmforge import ModelConfig, build_model
from lmforge.checkpoint.io import load_checkpoint
from lmforge.cli import main
from lmforge.data import TokenShards, prepare_corpus
from lmforge.errors import LmforgeError
from lmforge.files import read_mapping
from lmforge.finetune import DataOptions, FinetuneRequest, finetune
from lmforge.infer.options import GenerationOptions
from lmforge.tokenizer import Tokenizer, train_tokenizer
from lmforge.train.settings import TrainSettings, read_run_file

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the cat sat on a mat and dog ran to big red house by sea".split()


# ---- the world every case runs in -------------------------------------------------------------------
def _mount_tmpfs(folder: Path, options: str) -> str | None:
    """Mount a tmpfs at `folder`; returns None on success, else why it could not."""
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                            capture_output=True, text=True)
    return None if result.returncode == 0 else (result.stderr.strip() or "mount failed")


def _tiny_config(tokenizer: Tokenizer, **changes) -> ModelConfig:
    return ModelConfig(family="decoder", vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1,
                       d_ff=32, max_positions=64, pad_token_id=tokenizer.padding_id, bos_token_id=tokenizer.bos_id,
                       eos_token_id=tokenizer.eos_id, **changes)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    text = "\n\n".join(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(30)) for i in range(200))
    (root / "corpus.txt").write_text(text, encoding="utf-8")
    (root / "empty.txt").write_text("  \n", encoding="utf-8")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 5)
    (root / "docs.jsonl").write_text('{"text": "a cat"}\n{"text": "a dog"}\n', encoding="utf-8")
    (root / "afile").write_text("a file, not a folder\n")
    (root / "notes").mkdir()
    (root / "notes" / "mine.txt").write_text("the user's own notes\n")
    write_lines(root / "train.txt", sentiment_lines(24, 0))
    write_lines(root / "dev.txt", sentiment_lines(8, 1))
    write_lines(root / "unseen.txt", ["7 the film was good"])
    write_lines(root / "reviews.txt", ["1 a warm , funny film", "0 dull", "1 the best film of the year"])
    write_conll(root / "ner.conll", tagged_sentences(12, 0))
    (root / "latin1_train.txt").write_bytes(b"1 caf\xe9 good\n0 bad film\n")
    write_lines(root / "one_label.txt", ["1 a warm , funny film", "1 the best film of the year"])
    # configuration and settings files, good and bad
    base = {"family": "decoder", "vocab_size": 300, "d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32,
            "max_positions": 64}
    (root / "bad.yaml").write_text("d_model: [\n")
    (root / "bad.json").write_text('{"family": "decoder",}')
    (root / "list.yaml").write_text("- family\n- decoder\n")
    (root / "tie.yaml").write_text(json.dumps({**base, "tie_embeddings": "no"}))
    (root / "tie.yaml").write_text("".join(f"{k}: {v}\n" for k, v in base.items()) + "tie_embeddings: \"no\"\n")
    (root / "dmodel.yaml").write_text("".join(f"{k}: {v}\n" for k, v in {**base, "d_model": "big"}.items()))
    (root / "heads.json").write_text(json.dumps({**base, "n_heads": 3}))
    (root / "unknown.json").write_text(json.dumps({**base, "colour": "blue"}))
    (root / "dropout.json").write_text(json.dumps({**base, "dropout": 2}))
    (root / "lr_text.yaml").write_text("lr: fast\n")
    (root / "batch.yaml").write_text("batch_size: 2.5\n")
    (root / "run_bad.yaml").write_text("lr: [1\n")
    (root / "skip.yaml").write_text("skip_nonfinite: maybe\n")
    # tokenizer, shards and checkpoints
    tokenizer = train_tokenizer("bpe", 300, [root / "corpus.txt"])
    tokenizer.save(root / "tok")
    (root / "badtok").mkdir()
    (root / "badtok" / "tokenizer.json").write_text("{not json")
    prepare_corpus([root / "corpus.txt"], tokenizer, root / "shards", blank_line_docs=True, progress=False)
    for name, index in (("shards_badjson", "{"), ("shards_fields", json.dumps({"format": "lmforge-token-shards"}))):
        (root / name).mkdir()
        (root / name / "index.json").write_text(index)
    torch.manual_seed(0)
    model = build_model(_tiny_config(tokenizer)).attach_tokenizer(tokenizer)
    model.save(root / "model")
    labels = {0: "0", 1: "1"}
    classifier = build_model(_tiny_config(tokenizer, num_labels=2, id2label=labels), "sequence-classification")
    classifier.attach_tokenizer(tokenizer).save(root / "clf")
    for name, change in (("intweights", lambda t: t.to(torch.int64)), ("nanweights", None)):
        folder = root / name
        folder.mkdir()
        for file in (root / "model").iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
        state = load_file(str(folder / "model.safetensors"))
        key = next(k for k in state if k.endswith("weight") and state[k].dim() == 2)
        state[key] = change(state[key]) if change else state[key].clone().fill_(float("nan"))
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        meta = json.loads((folder / "config.json").read_text())
        from lmforge.checkpoint.io import sha256_of
        meta["weights"]["sha256"] = sha256_of(folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(meta))
    (root / "badconfig").mkdir()
    (root / "badconfig" / "config.json").write_text("{ broken")
    (root / "badconfig" / "model.safetensors").write_bytes(b"")
    mounts = {"rofs": "ro,size=64k", "full": "size=4k"}
    reasons = {name: _mount_tmpfs(root / name, options) for name, options in mounts.items()}
    yield {"root": root, "mount_failures": {k: v for k, v in reasons.items() if v}}
    for name, reason in reasons.items():
        if reason is None:
            subprocess.run(["umount", str(root / name)], check=False)


def tree(folder: Path) -> dict[str, tuple]:
    """Every path under `folder` with its kind, size and content hash (files) - what a case may not change."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_dir():
            entries[rel] = ("dir",)
        else:
            entries[rel] = ("file", path.stat().st_size, hash(path.read_bytes()))
    return entries


def run_cli(root: Path, argv: list[str]) -> tuple[int, list[str], str]:
    """`lmforge ARGV` in-process with `root` as the current folder: (status, stderr lines, stdout)."""
    err, out = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                status = main(argv)
            except SystemExit as exit_:  # argparse
                status = exit_.code
    finally:
        os.chdir(previous)
    return status, [line for line in err.getvalue().splitlines() if line.strip()], out.getvalue()


# ---- the CLI catalogue: (id, command line, what the one stderr line must say) --------------------------
TRAIN = "--max-steps 2 --batch-size 2 --seq-len 16 --warmup-steps 0 --quiet --no-codecarbon"
PRE = f"pretrain --preset tiny-gpt2 --data shards {TRAIN}"
FT = "finetune --from model --task classify --train train.txt --max-steps 1 --batch-size 4 --quiet"
TOK = "tokenizer train --kind bpe --vocab-size 300"
PREP = "prepare --tokenizer tok --quiet"
CLI_CASES = [
    # tokenizer train
    ("tok-missing-input", f"{TOK} --out o nowhere.txt", "does not exist"),
    ("tok-vocab-too-small", f"{TOK.replace('300', '10')} --out o corpus.txt", "too small"),
    ("tok-empty-input", f"{TOK} --out o empty.txt", "no text"),
    ("tok-not-utf8", f"{TOK} --out o latin1.txt", "--errors replace"),
    ("tok-jsonl-field", f"{TOK} --out o --text-field body docs.jsonl", "--text-field"),
    ("tok-bad-special", f"{TOK} --out o --special foo=bar corpus.txt", "ROLE=TOKEN"),
    ("tok-out-under-file", f"{TOK} --out afile/x corpus.txt", "afile"),
    ("tok-out-deep-under-file", f"{TOK} --out afile/x/y corpus.txt", "afile"),
    ("tok-out-foreign-folder", f"{TOK} --out notes corpus.txt", "notes"),
    ("tok-out-current-folder", f"{TOK} --out . corpus.txt", "."),
    ("tok-out-is-file", f"{TOK} --out afile corpus.txt", "afile"),
    ("tok-out-checkpoint", f"{TOK} --out model --overwrite corpus.txt", "model"),
    ("tok-out-read-only-fs", f"{TOK} --out rofs/tok corpus.txt", "read-only"),
    ("tok-out-disk-full", f"{TOK} --out full/tok corpus.txt", "no space left"),
    ("tok-threads-zero", f"{TOK} --out o --threads 0 corpus.txt", "--threads"),
    # prepare
    ("prep-no-tokenizer", f"prepare --tokenizer nowhere --out o --quiet corpus.txt", "tokenizer"),
    ("prep-broken-tokenizer", f"prepare --tokenizer badtok --out o --quiet corpus.txt", "tokenizer.json"),
    ("prep-missing-input", f"{PREP} --out o nowhere.txt", "does not exist"),
    ("prep-empty-input", f"{PREP} --out o empty.txt", "no text"),
    ("prep-not-utf8", f"{PREP} --out o latin1.txt", "--errors replace"),
    ("prep-valid-fraction", f"{PREP} --out o --valid-fraction 1.5 corpus.txt", "valid fraction"),
    ("prep-out-under-file", f"{PREP} --out afile/x corpus.txt", "afile"),
    ("prep-out-foreign-folder", f"{PREP} --out notes corpus.txt", "notes"),
    ("prep-out-checkpoint", f"{PREP} --out model corpus.txt", "model"),
    ("prep-out-checkpoint-overwrite", f"{PREP} --out clf --overwrite corpus.txt", "clf"),
    ("prep-out-is-file", f"{PREP} --out afile corpus.txt", "afile"),
    ("prep-out-read-only-fs", f"{PREP} --out rofs/shards corpus.txt", "read-only"),
    ("prep-out-disk-full", f"{PREP} --out full/shards corpus.txt", "no space left"),
    # pretrain: configs and settings files
    ("pre-config-yaml-syntax", f"pretrain --config bad.yaml --data shards --out o {TRAIN}", "not valid YAML"),
    ("pre-config-json-syntax", f"pretrain --config bad.json --data shards --out o {TRAIN}", "not valid JSON"),
    ("pre-config-not-mapping", f"pretrain --config list.yaml --data shards --out o {TRAIN}", "mapping"),
    ("pre-config-bool-as-text", f"pretrain --config tie.yaml --data shards --out o {TRAIN}", "tie_embeddings"),
    ("pre-config-int-as-text", f"pretrain --config dmodel.yaml --data shards --out o {TRAIN}", "d_model"),
    ("pre-config-heads", f"pretrain --config heads.json --data shards --out o {TRAIN}", "n_heads"),
    ("pre-config-unknown-field", f"pretrain --config unknown.json --data shards --out o {TRAIN}", "colour"),
    ("pre-config-dropout-range", f"pretrain --config dropout.json --data shards --out o {TRAIN}", "dropout"),
    ("pre-config-missing", f"pretrain --config nowhere.yaml --data shards --out o {TRAIN}", "nowhere.yaml"),
    ("pre-run-config-syntax", f"{PRE} --out o --run-config run_bad.yaml", "not valid YAML"),
    ("pre-run-config-lr-text", f"{PRE.replace(TRAIN, '--quiet --no-codecarbon')} --out o --run-config lr_text.yaml",
     "lr"),
    ("pre-run-config-float-batch", f"{PRE.replace(TRAIN, '--quiet')} --out o --run-config batch.yaml",
     "batch_size"),
    ("pre-run-config-bool-text", f"{PRE} --out o --run-config skip.yaml", "skip_nonfinite"),
    ("pre-run-config-not-mapping", f"{PRE} --out o --run-config list.yaml", "mapping"),
    ("pre-lr-range", f"{PRE} --out o --lr 5", "lr"),
    ("pre-warmup-too-long", f"{PRE} --out o --warmup-steps 10", "--warmup-steps"),
    ("pre-seq-len", f"{PRE} --out o --seq-len 100000", "--seq-len"),
    ("pre-objective", f"{PRE} --out o --objective mlm", "mlm"),
    ("pre-unknown-preset", f"pretrain --preset no-such-model --data shards --out o {TRAIN}", "no-such-model"),
    ("pre-data-missing", f"pretrain --preset tiny-gpt2 --data nowhere --out o {TRAIN}", "prepare"),
    ("pre-data-index-syntax", f"pretrain --preset tiny-gpt2 --data shards_badjson --out o {TRAIN}", "index"),
    ("pre-data-index-fields", f"pretrain --preset tiny-gpt2 --data shards_fields --out o {TRAIN}", "index"),
    ("pre-resume-nothing", f"{PRE} --out o --resume", "--resume"),
    ("pre-out-under-file", f"{PRE} --out afile/run", "afile"),
    ("pre-out-foreign-folder", f"{PRE} --out notes", "notes"),
    ("pre-out-checkpoint", f"{PRE} --out model --overwrite", "model"),
    ("pre-out-read-only-fs", f"{PRE} --out rofs/run", "read-only"),
    ("pre-threads-zero", f"{PRE} --out o --threads 0", "--threads"),
    ("pre-precision-fp16-cpu", f"{PRE} --out o --precision fp16 --device cpu", "use --precision bf16 or fp32"),
    ("pre-precision-int8", f"{PRE} --out o --precision int8", "inference only"),
    ("ft-precision-int8", f"{FT} --out o --precision int8", "train in fp32 or bf16 (--precision)"),
    # finetune
    ("ft-train-missing", f"{FT.replace('train.txt', 'nowhere.txt')} --out o", "nowhere.txt"),
    ("ft-model-missing", f"{FT.replace('--from model', '--from nowhere')} --out o", "nowhere"),
    ("ft-conll-to-classifier", f"{FT.replace('train.txt', 'ner.conll')} --out o", "not a classification file"),
    ("ft-classification-to-tagger", f"{FT.replace('classify', 'tag').replace('train.txt', 'reviews.txt')} --out o",
     "--task classify"),
    ("ft-one-label", f"{FT.replace('train.txt', 'one_label.txt')} --out o", "at least two labels"),
    ("ft-not-utf8", f"{FT.replace('train.txt', 'latin1_train.txt')} --out o", "--errors replace"),
    ("ft-max-length-zero", f"{FT} --out o --max-length 0", "--max-length"),
    ("ft-max-length-one", f"{FT} --out o --max-length 1", "--max-length"),
    ("ft-max-length-beyond-model", f"{FT} --out o --max-length 100000", "--max-length"),
    ("ft-max-train-examples", f"{FT} --out o --max-train-examples 0", "--max-train-examples"),
    ("ft-max-valid-examples", f"{FT} --out o --valid dev.txt --max-valid-examples 0", "--max-valid-examples"),
    ("ft-warmup-too-long", f"{FT} --out o --warmup-steps 10", "--warmup-steps"),
    ("ft-lr-range", f"{FT} --out o --lr 5", "lr"),
    ("ft-task-wrong-format", f"{FT.replace('classify', 'seq2seq')} --out o", "train.txt:1"),
    ("ft-out-under-file", f"{FT} --out afile/ft", "afile"),
    ("ft-out-foreign-folder", f"{FT} --out notes", "notes"),
    ("ft-out-tokenizer", f"{FT} --out tok --overwrite", "tok"),
    ("ft-int-weights", f"{FT.replace('--from model', '--from intweights')} --out o", "int64"),
    # evaluate
    ("ev-out-folder", "evaluate --model clf --data dev.txt --out notes", "is a folder"),
    ("ev-out-under-file", "evaluate --model clf --data dev.txt --out afile/m.json", "afile"),
    ("ev-out-foreign-file", "evaluate --model clf --data dev.txt --out notes/mine.txt", "mine.txt"),
    ("ev-data-missing", "evaluate --model clf --data nowhere.txt --out m.json", "nowhere.txt"),
    ("ev-model-missing", "evaluate --model nowhere --data dev.txt --out m.json", "nowhere"),
    ("ev-max-examples", "evaluate --model clf --data dev.txt --out m.json --max-examples 0", "--max-examples"),
    ("ev-wrong-head", "evaluate --model model --data dev.txt --task classify --out m.json", "head"),
    ("ev-batch-size", "evaluate --model clf --data dev.txt --out m.json --batch-size 0", "--batch-size"),
    ("ev-max-length-zero", "evaluate --model clf --data dev.txt --out m.json --max-length 0", "--max-length"),
    ("ev-conll-to-classifier", "evaluate --model clf --data ner.conll --out m.json", "not a classification file"),
    ("ev-unseen-label", "evaluate --model clf --data unseen.txt --out m.json", "'7'"),
    ("ev-not-utf8", "evaluate --model clf --data latin1_train.txt --out m.json", "--errors replace"),
    # generation and the other pipelines
    ("gen-temperature-zero", "generate --sample --temperature 0 --max-new-tokens 2 model the", "--sample"),
    ("gen-max-new-tokens", "generate --max-new-tokens 0 model the", "max_new_tokens"),
    ("gen-no-room-for-prompt", "generate --max-new-tokens 1000 model the", "no room for a prompt"),
    ("gen-top-p", "generate --sample --top-p 2 --max-new-tokens 2 model the", "top_p"),
    ("gen-num-beams", "generate --num-beams 0 --max-new-tokens 2 model the", "num_beams"),
    ("gen-compile-beams", "generate --compile --num-beams 2 --max-new-tokens 2 model the", "drop --compile or --num-beams"),
    ("gen-model-missing", "generate nowhere the", "nowhere"),
    ("gen-config-syntax", "generate badconfig the", "config.json"),
    ("gen-int-weights", "generate --max-new-tokens 2 intweights the", "int64"),
    ("classify-wrong-head", "classify model the film", "head"),
    ("tag-wrong-head", "tag clf the film", "head"),
    ("translate-wrong-head", "translate model the film", "head"),
    ("fill-mask-no-mask", "fill-mask model the film", "mask"),
    ("embed-model-missing", "embed nowhere the film", "nowhere"),
    ("info-missing", "info nowhere-at-all", "nowhere-at-all"),
    ("info-int-weights", "info intweights", "int64"),
    ("convert-missing", "convert nowhere o", "nowhere"),
    ("convert-out-under-file", "convert model afile/hf --to hf", "afile"),
    ("convert-out-foreign", "convert model notes --to hf", "notes"),
    ("convert-out-read-only-fs", "convert model rofs/hf --to hf", "read-only"),
    ("convert-out-disk-full", "convert model full/hf --to hf", "no space left"),
    ("distill-teacher-missing", "distill --teacher nowhere --out o --data shards --max-steps 1 --quiet", "nowhere"),
    ("demo-out-under-file", "demo --out afile/demo --quick --quiet", "afile"),
]
NEEDS_MOUNT = {"rofs": "read-only", "full": "disk-full"}


@pytest.mark.parametrize("case_id, command, expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_case(world, case_id, command, expected):
    root = world["root"]
    for mount, what in NEEDS_MOUNT.items():
        if f" {mount}/" in f" {command}" and mount in world["mount_failures"]:
            pytest.skip(f"cannot mount a {what} tmpfs here: {world['mount_failures'][mount]}")
    before = tree(root)
    status, lines, printed = run_cli(root, shlex.split(command))
    after = tree(root)
    assert status == 2, f"exit {status}, stderr: {lines}"
    assert len(lines) == 1, f"{len(lines)} stderr lines: {lines}"
    assert "Traceback" not in lines[0]
    assert expected in lines[0], lines[0]
    assert printed == "", f"a refused command printed {printed[:80]!r}"
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))[:6]}"


def test_catalogue_is_large_enough():
    assert len(CLI_CASES) + len(API_CASES) >= 80


# ---- the Python API ----------------------------------------------------------------------------------------
def _paths(root: Path):
    return root


API_CASES = [
    ("build-model-dict", lambda r: build_model({"family": "decoder"}), "ModelConfig"),
    ("config-text-dropout", lambda r: ModelConfig(dropout="high").validate(), "dropout"),
    ("config-text-bool", lambda r: ModelConfig(tie_embeddings="no").validate(), "tie_embeddings"),
    ("config-bool-as-int", lambda r: ModelConfig(n_layers=True).validate(), "n_layers"),
    ("config-float-as-int", lambda r: ModelConfig(d_model=64.0).validate(), "d_model"),
    ("config-nan", lambda r: ModelConfig(norm_eps=float("nan")).validate(), "norm_eps"),
    ("config-from-dict-text", lambda r: ModelConfig.from_dict({"vocab_size": "many"}), "vocab_size"),
    ("config-from-dict-id2label", lambda r: ModelConfig.from_dict({"id2label": {"x": "a"}}), "id2label"),
    ("config-from-file-yaml", lambda r: ModelConfig.from_file(r / "bad.yaml"), "not valid YAML"),
    ("config-from-file-json", lambda r: ModelConfig.from_file(r / "bad.json"), "not valid JSON"),
    ("config-from-file-list", lambda r: ModelConfig.from_file(r / "list.yaml"), "mapping"),
    ("settings-text-lr", lambda r: TrainSettings(lr="fast").validate(), "lr"),
    ("settings-bool-steps", lambda r: TrainSettings.from_dict({"max_steps": True}), "max_steps"),
    ("settings-warmup", lambda r: TrainSettings.from_dict({"max_steps": 5, "warmup_steps": 9}), "warmup"),
    ("run-file-syntax", lambda r: read_run_file(r / "run_bad.yaml"), "not valid YAML"),
    ("run-file-missing", lambda r: read_run_file(r / "nowhere.yaml"), "does not exist"),
    ("read-mapping-list", lambda r: read_mapping(r / "list.yaml", "settings"), "mapping"),
    ("tokenizer-missing", lambda r: Tokenizer.load(r / "nowhere"), "tokenizer.json"),
    ("tokenizer-broken", lambda r: Tokenizer.load(r / "badtok"), "tokenizer.json"),
    ("tokenizer-vocab-small", lambda r: train_tokenizer("bpe", 10, [r / "corpus.txt"]), "too small"),
    ("shards-index-syntax", lambda r: TokenShards(r / "shards_badjson"), "not valid JSON"),
    ("shards-index-fields", lambda r: TokenShards(r / "shards_fields"), "damaged"),
    ("checkpoint-int-weights", lambda r: load_checkpoint(r / "intweights"), "int64"),
    ("checkpoint-config-syntax", lambda r: load_checkpoint(r / "badconfig"), "config.json"),
    ("generation-temperature", lambda r: GenerationOptions(do_sample=True, temperature=0.0).validate(),
     "do_sample=False"),
    ("finetune-max-length", lambda r: finetune(r / "o", FinetuneRequest("classify", r / "train.txt",
                                                                        checkpoint=r / "model",
                                                                        data=DataOptions(max_length=1)),
                                               progress=False), "max"),
    ("finetune-examples", lambda r: finetune(r / "o", FinetuneRequest("classify", r / "train.txt",
                                                                      checkpoint=r / "model", max_train_examples=0),
                                             progress=False), "must be >= 1"),
]


@pytest.mark.parametrize("case_id, call, expected", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_case(world, case_id, call, expected):
    root = world["root"]
    before = tree(root)
    with pytest.raises(LmforgeError) as raised:
        call(root)
    message = str(raised.value)
    assert "\n" not in message and expected in message, message
    assert tree(root) == before


# ---- what must work, warn or be honoured -------------------------------------------------------------------
def test_unambiguous_numbers_in_text_are_read_as_numbers(world):
    root = world["root"]
    (root / "ok.yaml").write_text("lr: 3e-4\nmax_steps: '7'\n")
    try:
        settings = TrainSettings.from_dict(read_run_file(root / "ok.yaml"))
        config = ModelConfig.from_dict({"dropout": "0.2", "d_model": "64", "n_heads": 4})
    finally:
        (root / "ok.yaml").unlink()
    assert settings.lr == 3e-4 and settings.max_steps == 7
    assert config.dropout == 0.2 and config.d_model == 64
    assert settings.warmup_steps == 7  # a default warm-up is shortened to the run; a given one is refused


def test_nan_weights_load_with_a_warning_naming_the_tensor(world):
    with pytest.warns(UserWarning, match=r"tensor\(s\) \S+weight hold NaN"):
        load_checkpoint(world["root"] / "nanweights")


def test_hf_config_with_special_ids_outside_the_vocabulary_loads_with_a_warning(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    assert config.bos_token_id == 50256  # GPT-2's default, outside this vocabulary
    reference = transformers.GPT2LMHeadModel(config).eval()
    reference.save_pretrained(tmp_path / "hf")
    from lmforge import load

    with pytest.warns(UserWarning, match="bos_token_id=50256 lies outside the vocabulary"):
        model = load(tmp_path / "hf").eval()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        expected = reference(ids).logits
        got = model(ids).logits
    assert model.config.bos_token_id is None and model.config.eos_token_id is None
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_info_names_the_head_truthfully(world):
    status, _, _ = run_cli(world["root"], ["info", "clf"])
    assert status == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["info", str(world["root"] / "clf")])
        main(["info", str(world["root"] / "model")])
    text = out.getvalue()
    assert "sequence-classification head (no vocabulary output, nothing tied)" in text
    assert "causal-lm head, tied to the embeddings" in text


def test_the_same_failures_through_the_real_script(world):
    """A few cases through `python -m lmforge` in one subprocess per case: exit status 2, one line."""
    root = world["root"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    for command in ("tokenizer train --kind bpe --vocab-size 300 --out afile/x corpus.txt",
                    "pretrain --config bad.yaml --data shards --out o", "evaluate --model clf --data dev.txt --out notes"):
        result = subprocess.run([sys.executable, "-m", "lmforge", *shlex.split(command)], cwd=root, env=env,
                                capture_output=True, text=True)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["tokenizer", "prepare"])
def test_one_huge_line_needs_bounded_memory(world, tmp_path, command):
    """A 6 MB line: before, the tokenizers saw it whole (about 150x its size in working memory: 1.2 GB for
    `tokenizer train` and 2 GB for `prepare` at 8 MB); in pieces the peak stays near the interpreter's."""
    words = [f"{w}{i}" for i in range(50) for w in WORDS]
    line = " ".join(words[(i * 7919) % len(words)] for i in range(1_000_000))
    (tmp_path / "long.txt").write_text(line + "\n", encoding="utf-8")
    args = (["tokenizer", "train", "--kind", "bpe", "--vocab-size", "400"] if command == "tokenizer"
            else ["prepare", "--tokenizer", str(world["root"] / "tok"), "--quiet"])
    probe = ("import resource, sys; from lmforge.cli import main; status = main(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024); sys.exit(status)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", probe, *args, "--out", str(tmp_path / "out"),
                             str(tmp_path / "long.txt")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    peak_mb = int(result.stdout.split()[-1])
    assert peak_mb < 600, f"peak RSS {peak_mb} MB for a 6 MB line"


@pytest.mark.slow
def test_ctrl_c_names_the_kept_step_and_resume_says_where_it_starts(world, tmp_path):
    """A real SIGINT to a real training process, after its first checkpoint, then `--resume`."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    args = [sys.executable, "-m", "lmforge", "pretrain", "--preset", "tiny-gpt2", "--data", str(world["root"] / "shards"),
            "--out", str(out), "--max-steps", "100000", "--batch-size", "2", "--seq-len", "16", "--warmup-steps", "1",
            "--save-every", "3", "--eval-every", "0", "--quiet", "--no-codecarbon"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_default)
    state = out / "checkpoints" / "last" / "trainer_state.json"
    while not state.is_file() and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    saved = json.loads(state.read_text())["step"]
    assert process.returncode == 130, err
    assert err.strip().splitlines() == [err.strip()] and f"the checkpoint of step {saved}" in err and "--resume" in err
    resume = subprocess.Popen([sys.executable, "-m", "lmforge", "pretrain", "--out", str(out), "--resume", "--quiet",
                               "--no-codecarbon"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=ctrl_c_default)
    first = resume.stderr.readline()
    resume.send_signal(signal.SIGINT)
    resume.communicate(timeout=120)
    assert first.startswith(f"resuming from step {saved} "), first
