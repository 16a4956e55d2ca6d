"""The inference commands: texts from arguments or stdin, JSON Lines, streaming, one-line errors."""

import io
import json

import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.infer import generate
from lmforge.tokenizer import train_tokenizer

SENTENCES = ["the cat sat on the mat .", "a good film with a great cast .", "John Smith lives in New York ."] * 4


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny checkpoints with tokenizers: a causal LM, an MLM, a classifier, a tagger, a seq2seq model."""
    root = tmp_path_factory.mktemp("ckpt")
    wordpiece = train_tokenizer("wordpiece", 150, iter(SENTENCES), min_frequency=1)
    bpe = train_tokenizer("bpe", 350, iter(SENTENCES), min_frequency=1)
    torch.manual_seed(0)

    def encoder(task, **changes):
        config = lmforge.presets.get("tiny-bert").replace(vocab_size=wordpiece.vocab_size, max_positions=16,
                                                          pad_token_id=wordpiece.pad_id, mask_token_id=wordpiece.mask_id,
                                                          **changes)
        return lmforge.build_model(config, task), wordpiece

    gpt = lmforge.build_model(lmforge.presets.get("tiny-gpt2").replace(
        vocab_size=bpe.vocab_size, bos_token_id=bpe.bos_id, eos_token_id=bpe.eos_id, pad_token_id=bpe.pad_id,
        init_std=0.3, tie_embeddings=False))
    bart = lmforge.build_model(lmforge.presets.get("tiny-bart").replace(
        vocab_size=bpe.vocab_size, pad_token_id=bpe.pad_id, bos_token_id=bpe.bos_id, eos_token_id=bpe.eos_id,
        decoder_start_token_id=bpe.eos_id, mask_token_id=None, init_std=0.1, tie_embeddings=False))
    models = {
        "gpt": (gpt, bpe), "bart": (bart, bpe), "mlm": encoder("masked-lm"),
        "classifier": encoder("sequence-classification", id2label={0: "neg", 1: "pos"}),
        "tagger": encoder("token-classification", num_labels=3, id2label={0: "O", 1: "B-PER", 2: "I-PER"}),
    }
    paths = {}
    for name, (model, tokenizer) in models.items():
        model.tokenizer = tokenizer
        paths[name] = str(model.save(root / name))
    return paths, models


def run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_streams_the_same_text_as_the_library(checkpoints, capsys):
    paths, models = checkpoints
    code, out, err = run(["generate", paths["gpt"], "the cat sat", "--max-new-tokens", "6"], capsys)
    expected = lmforge.pipeline("text-generation", model=paths["gpt"])("the cat sat", max_new_tokens=6)
    assert code == 0 and err == "" and out == expected["generated_text"] + "\n"


@pytest.mark.slow  # compiles a decoding step: 10-60 s on a busy 2-core CPU
def test_generate_compile_streams_the_same_text_as_eager(checkpoints, capsys):
    paths, _ = checkpoints
    eager = run(["generate", paths["gpt"], "the cat sat", "--max-new-tokens", "6"], capsys)
    compiled = run(["generate", paths["gpt"], "the cat sat", "--max-new-tokens", "6", "--compile"], capsys)
    assert compiled == eager and eager[0] == 0 and eager[2] == ""


def test_generate_reads_stdin_and_writes_json_lines(checkpoints, capsys, monkeypatch):
    paths, models = checkpoints
    code, out, _ = run(["generate", paths["gpt"], "--json", "--max-new-tokens", "5", "--num-beams", "2"], capsys,
                       stdin="the cat sat\n\na good film\n", monkeypatch=monkeypatch)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["input"] for r in records] == ["the cat sat", "a good film"]
    model, bpe = models["gpt"]
    ids = torch.tensor([bpe.encode("a good film")])
    new = generate(model, ids, max_new_tokens=5, num_beams=2)[0, ids.shape[1]:].tolist()
    new = new[:new.index(bpe.eos_id)] if bpe.eos_id in new else new
    assert records[1]["generated_text"] == bpe.decode(bpe.encode("a good film") + new)


def test_seeded_sampling_from_the_cli_is_reproducible(checkpoints, capsys):
    paths, _ = checkpoints
    argv = ["generate", paths["gpt"], "the cat", "--sample", "--top-p", "0.9", "--seed", "3", "--no-stream"]
    assert run(argv, capsys)[1] == run(argv, capsys)[1]


def test_translate_summarize_fill_classify_tag_embed(checkpoints, capsys):
    paths, _ = checkpoints
    text = "the cat sat on the mat ."
    for command in ("translate", "summarize"):
        code, out, _ = run([command, paths["bart"], text, "--max-new-tokens", "5", "--json"], capsys)
        key = "translation_text" if command == "translate" else "summary_text"
        expected = lmforge.pipeline(command.replace("translate", "translation").replace("summarize", "summarization"),
                                    model=paths["bart"])(text, max_new_tokens=5)
        assert code == 0 and json.loads(out)[key] == expected[key]
    code, out, _ = run(["fill-mask", paths["mlm"], "the [MASK] sat on the mat .", "--top-k", "3", "--json"], capsys)
    predictions = json.loads(out)["predictions"][0]
    assert code == 0 and len(predictions) == 3 and predictions[0]["score"] >= predictions[2]["score"]
    code, out, _ = run(["classify", paths["classifier"], text, "a good film ."], capsys)
    assert code == 0 and len(out.splitlines()) == 2 and out.split("\t")[0] in ("neg", "pos")
    code, out, _ = run(["tag", paths["tagger"], "John Smith lives in New York .", "--json"], capsys)
    assert code == 0 and isinstance(json.loads(out)["entities"], list)
    code, out, _ = run(["embed", paths["mlm"], text, "a good film ."], capsys)
    vectors = torch.tensor([[float(x) for x in line.split()] for line in out.splitlines()])
    assert code == 0 and vectors.shape == (2, 64)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-4)


def test_errors_are_one_line_and_exit_2(checkpoints, capsys, monkeypatch):
    paths, _ = checkpoints
    code, _, err = run(["generate", paths["mlm"], "the cat"], capsys)
    assert code == 2 and err.count("\n") == 1 and "masked-lm head; it can serve: fill-mask" in err
    code, _, err = run(["generate", paths["gpt"], "the cat", "--top-p", "1.5"], capsys)
    assert code == 2 and "top_p must be in (0, 1]" in err
    code, _, err = run(["generate", paths["gpt"], "the cat", "--num-beams", "0"], capsys)
    assert code == 2 and "num_beams" in err
    code, _, err = run(["classify", paths["classifier"]], capsys, stdin="\n  \n", monkeypatch=monkeypatch)
    assert code == 2 and "no input text" in err
    code, _, err = run(["fill-mask", paths["mlm"], ""], capsys)
    assert code == 2 and "input 1 is empty" in err
    long_text = " ".join(SENTENCES)
    code, out, err = run(["embed", paths["mlm"], long_text], capsys)
    assert code == 0 and err.startswith("lmforge embed: warning: input 1 has") and "truncated to 16" in err
    code, out, err = run(["embed", paths["mlm"], long_text, "--no-truncate"], capsys)
    assert code == 2 and out == "" and "at most 16" in err
