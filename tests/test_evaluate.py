"""Evaluation: each task's metrics agree with an independent computation (pipelines, generate, seqeval,
sacrebleu); the CLI prints and writes JSON; exports of fine-tuned models predict the same in transformers;
converted Hugging Face seq2seq models fine-tune like native ones; bad input exits 2 with one line."""

from __future__ import annotations

import json
import math

import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.eval.evaluate import evaluate
from lmforge.finetune import FinetuneRequest, finetune
from lmforge.tokenizer import train_tokenizer
from finetune_helpers import labelled_files, sentiment_lines, tagged_sentences, vocabulary_text, write_lines

QUICK = {"max_steps": 30, "batch_size": 16, "lr": 3e-3, "warmup_steps": 3, "eval_every": 15, "log_every": 10}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return labelled_files(tmp_path_factory.mktemp("evaluate"), tag_train=64, tag_valid=24)


@pytest.fixture(scope="module")
def classifier(data):
    """A tiny BERT classifier fine-tuned from scratch for a few steps (not perfect: errors are allowed)."""
    return finetune(data["root"] / "cls", FinetuneRequest("classify", data["train"], data["valid"],
                                                          preset="tiny-bert", from_scratch=True,
                                                          tokenizer=data["tok"],
                                                          settings={**QUICK, "max_steps": 8}),
                    progress=False).model_path


def test_classification_metrics_match_the_pipeline(data, classifier):
    metrics = evaluate(classifier, data["valid"], batch_size=7)
    lines = data["valid"].read_text().splitlines()
    gold = [line.split(" ", 1)[0] for line in lines]
    predicted = [r["label"] for r in lmforge.pipeline("text-classification", classifier)([l.split(" ", 1)[1] for l in lines])]
    assert metrics["task"] == "classify" and metrics["examples"] == len(lines)
    assert metrics["accuracy"] == pytest.approx(sum(p == g for p, g in zip(predicted, gold)) / len(gold))
    f1s = []
    for label in ("0", "1"):
        tp = sum(p == g == label for p, g in zip(predicted, gold))
        precision = tp / max(1, predicted.count(label))
        recall = tp / gold.count(label)
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
        assert metrics["per_class"][label]["f1"] == pytest.approx(f1s[-1])
    assert metrics["macro_f1"] == pytest.approx(sum(f1s) / 2)


def test_entity_metrics_match_seqeval_on_word_predictions(data, tmp_path):
    from seqeval.metrics import f1_score

    model_path = finetune(tmp_path / "run", FinetuneRequest("tag", data["tag_train"], None, preset="tiny-bert",
                                                            from_scratch=True, tokenizer=data["tok"],
                                                            settings={**QUICK, "max_steps": 10}),
                          progress=False).model_path
    metrics = evaluate(model_path, data["tag_valid"])
    model = lmforge.load(model_path).eval()
    sentences = tagged_sentences(24, seed=4)
    gold, predicted = [], []
    for sentence in sentences:  # one sentence at a time, no padding: an independent path
        encoding = model.tokenizer.backend.encode([w for w, _ in sentence], is_pretokenized=True)
        with torch.no_grad():
            tags = model(torch.tensor([encoding.ids])).logits[0].argmax(-1).tolist()
        firsts = {}
        for position, word in enumerate(encoding.word_ids):
            if word is not None:
                firsts.setdefault(word, position)
        predicted.append([model.config.id2label[tags[firsts[i]]] for i in range(len(sentence))])
        gold.append([t for _, t in sentence])
    assert metrics["sentences"] == len(sentences)
    assert metrics["f1"] == pytest.approx(f1_score(gold, predicted))


def test_language_model_perplexity_is_the_exponent_of_the_mean_loss(tmp_path):
    tokenizer = train_tokenizer("bpe", 300, iter(vocabulary_text()), min_frequency=1)
    model = lmforge.build_model(lmforge.presets.get("tiny-gpt2").replace(vocab_size=tokenizer.vocab_size)).eval()
    model.tokenizer = tokenizer
    text = write_lines(tmp_path / "text.txt", [l.split(" ", 1)[1] for l in sentiment_lines(80, seed=7)])
    from lmforge.finetune.tasks import DataOptions, read_task_data

    options = DataOptions(block_size=16)
    metrics = evaluate(model, text, data_options=options)
    blocks = torch.tensor([e["input_ids"] for e in read_task_data("clm", text, tokenizer, options=options).examples])
    with torch.no_grad():
        expected = model(blocks, labels=blocks).loss.item()  # every block has the same length: one mean
    assert metrics["task"] == "clm" and metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert metrics["tokens"] == blocks.shape[0] * (blocks.shape[1] - 1)


def _unigram(folder):
    """A T5-style tokenizer (<pad>=0, </s>=1, <unk>=2, appends </s>) saved in `folder`."""
    tokenizer = train_tokenizer("unigram", 150, iter(vocabulary_text() * 3), sentinels=0)
    tokenizer.save(folder)
    return tokenizer


def _random_hf_t5(folder, tokenizer):
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                   num_heads=4, dropout_rate=0.0, pad_token_id=tokenizer.pad_id,
                                   eos_token_id=tokenizer.eos_id, decoder_start_token_id=tokenizer.pad_id)
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save(folder)
    return folder


def test_a_converted_hf_t5_fine_tunes_and_its_bleu_matches_sacrebleu(tmp_path):
    import sacrebleu

    tokenizer = _unigram(tmp_path / "tok")
    hf = _random_hf_t5(tmp_path / "hf", tokenizer)
    sources = [l.split(" ", 1)[1] for l in sentiment_lines(64, seed=8)]
    src = write_lines(tmp_path / "src.txt", sources)
    tgt = write_lines(tmp_path / "tgt.txt", sources)  # learn to copy
    result = finetune(tmp_path / "run", FinetuneRequest("seq2seq", [src, tgt], [src, tgt], checkpoint=hf,
                                                        settings={**QUICK, "max_steps": 40, "eval_every": 20,
                                                                  "lr": 1e-2},
                                                        max_new_tokens=12), progress=False)
    assert "newly initialised" not in result.starting_point  # every weight came from the HF checkpoint
    losses = [json.loads(l)["loss"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert losses[-1] < 0.75 * losses[0]
    metrics = evaluate(result.model_path, [src, tgt], max_new_tokens=12)
    model = lmforge.load(result.model_path)
    hypotheses = [r["generated_text"] for r in
                  lmforge.pipeline("text2text", model, options=None)(sources, max_new_tokens=12)]
    references = [tokenizer.decode(tokenizer.encode(s)) for s in sources]
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score, abs=1e-6)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score, abs=1e-6)
    assert metrics["bleu"] > 0.0


def test_an_exported_fine_tuned_classifier_predicts_the_same_in_transformers(data, classifier, tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmforge.checkpoint.hf import export_hf

    model = lmforge.load(classifier).eval()
    export_hf(model, tmp_path / "hf")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert theirs.config.id2label == {0: "0", 1: "1"}
    texts = [l.split(" ", 1)[1] for l in data["valid"].read_text().splitlines()]
    batch = [model.tokenizer.backend.encode(t) for t in texts]
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(e.ids) for e in batch], batch_first=True,
                                          padding_value=model.tokenizer.pad_id)
    mask = (torch.arange(ids.shape[1])[None] < torch.tensor([len(e.ids) for e in batch])[:, None]).long()
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        expected = theirs(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(ours.argmax(-1), expected.argmax(-1))
    assert (ours - expected).abs().max().item() < 1e-4


def test_the_cli_fine_tunes_evaluates_and_writes_json(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["finetune", "--preset", "tiny-bert", "--from-scratch", "--tokenizer", str(data["tok"]),
                 "--task", "classify", "--train", str(data["train"]), "--valid", str(data["valid"]),
                 "--out", str(out), "--max-steps", "4", "--eval-every", "2", "--quiet"]) == 0
    assert "fine-tuned 4 steps" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(data["valid"]),
                 "--out", str(tmp_path / "m.json")]) == 0
    written = json.loads((tmp_path / "m.json").read_text())
    assert json.loads(capsys.readouterr().out.split("\nmetrics written")[0])["accuracy"] == written["accuracy"]
    assert set(written["per_class"]) == {"0", "1"}


@pytest.mark.parametrize("case", ["unseen label", "empty file", "missing column", "classify on bart",
                                  "no tokenizer", "wrong task"])
def test_bad_input_exits_2_with_one_line(case, data, classifier, tmp_path, capsys):
    csv = tmp_path / "train.csv"
    csv.write_text("sentence,label\ngood film,1\nbad film,0\n")
    bart = lmforge.build_model("tiny-bart")
    bart.tokenizer = lmforge.Tokenizer.load(data["tok"])
    common = ["--out", str(tmp_path / "run"), "--max-steps", "2", "--quiet"]
    scratch = ["--preset", "tiny-bert", "--from-scratch", "--tokenizer", str(data["tok"])]
    argv, message = {
        "unseen label": (["finetune", *scratch, "--task", "classify", "--train", str(data["train"]), "--valid",
                          str(write_lines(tmp_path / "v.txt", ["7 a film"])), *common], "label '7' was not in the training"),
        "empty file": (["finetune", *scratch, "--task", "classify", "--train",
                        str(write_lines(tmp_path / "e.txt", [])), *common], "holds no examples"),
        "missing column": (["finetune", *scratch, "--task", "classify", "--train", str(csv), *common],
                           "no 'text' column"),
        "classify on bart": (["finetune", "--from", str(bart.save(tmp_path / "bart")), "--task", "classify",
                              "--train", str(data["train"]), *common], "use --task seq2seq"),
        "no tokenizer": (["evaluate", "--model", str(lmforge.build_model("tiny-bert", "sequence-classification")
                                                      .save(tmp_path / "bare")), "--data", str(data["valid"])],
                         "has no tokenizer"),
        "wrong task": (["evaluate", "--model", str(classifier), "--data", str(data["tag_valid"]), "--task", "tag"],
                       "evaluate it with --task classify"),
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "model").exists()


def test_default_metrics_files_of_one_model_in_two_weight_formats_do_not_collide(data, classifier, tmp_path,
                                                                                monkeypatch, capsys):
    """Evaluating one model in fp32 and in int8 (the quality cost of int8) writes two files by default; an alias
    names the file as its format does; a model with an adapter gets its own file too."""
    from lmforge.commands.evaluate import default_metrics_path

    monkeypatch.chdir(tmp_path)
    for dtype in (None, "int8"):
        assert main(["evaluate", "--model", str(classifier), "--data", str(data["valid"]),
                     *(["--dtype", dtype] if dtype else [])]) == 0
    written = {path.name: json.loads(path.read_text()) for path in tmp_path.glob("metrics-*.json")}
    stem = default_metrics_path(str(classifier), str(data["valid"])).stem
    assert set(written) == {f"{stem}.json", f"{stem}-int8.json"}
    assert all("accuracy" in metrics for metrics in written.values())
    assert default_metrics_path("runs/a/final", "d/valid.txt", dtype="bfloat16").name == "metrics-a-final-valid-bf16.json"
    assert default_metrics_path("m", "v.txt", adapter="runs/lora/adapter").name == "metrics-m-lora-adapter-v.json"
    capsys.readouterr()
