"""`lmforge finetune --lora-r` for every task and family, the adapter folder it writes, `--adapter` on the
inference commands and evaluate, `convert --merge-adapter`, and the mistakes (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from finetune_helpers import bpe_tokenizer, labelled_files, sentiment_lines, write_lines
from safetensors.torch import load_file

import lmforge
from lmforge.cli import main
from lmforge.checkpoint.adapter import save_adapter
from lmforge.models.lora import lora_layers, set_merged, trainable_parameters

QUICK = ["--max-steps", "8", "--batch-size", "8", "--lr", "1e-2", "--warmup-steps", "1", "--eval-every", "4",
         "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    files = labelled_files(root)
    bpe = bpe_tokenizer(root / "bpe")
    for name, preset, task in (("bert", "tiny-bert", "masked-lm"), ("gpt", "tiny-gpt2", "causal-lm"),
                               ("bart", "tiny-bart", "seq2seq-lm")):
        tokenizer = files["tokenizer"] if name == "bert" else bpe
        config = lmforge.presets.get(preset).replace(vocab_size=tokenizer.vocab_size)
        model = lmforge.build_model(config, task)
        model.tokenizer = tokenizer
        files[name] = model.save(root / name)
    texts = [line.split(" ", 1)[1] for line in sentiment_lines(60, seed=5)]
    files["text"] = write_lines(root / "text.txt", texts)
    files["pairs"] = write_lines(root / "pairs.jsonl", [json.dumps({"source": t, "target": t}) for t in texts])
    return files


def finetune(files, out, base: str, task: str, train: str, *lora: str) -> int:
    return main(["finetune", "--from", str(files[base]), "--task", task, "--train", str(files[train]),
                 "--valid", str(files[train]), "--out", str(out), *QUICK, *lora])


@pytest.mark.parametrize("base, task, train", [("bert", "classify", "train"), ("gpt", "tag", "tag_train"),
                                               ("gpt", "clm", "text"), ("bart", "seq2seq", "pairs"),
                                               ("gpt", "classify", "train")])
def test_every_task_and_family_trains_an_adapter(files, tmp_path, base, task, train):
    assert finetune(files, tmp_path / "run", base, task, train, "--lora-r", "4", "--lora-targets", "all-linear") == 0
    adapter = tmp_path / "run" / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == ["README.md", "adapter_config.json",
                                                         "adapter_model.safetensors", "lmforge_adapter.json"]
    assert not (tmp_path / "run" / "model").exists()
    config = json.loads((adapter / "adapter_config.json").read_text())
    meta = json.loads((adapter / "lmforge_adapter.json").read_text())
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert all(k.startswith("base_model.model.") for k in tensors)
    assert meta["trainable_parameters"] <= sum(t.numel() for t in tensors.values())  # GPT-2: q|k|v block-diagonal
    assert "trainable parameters" in (adapter / "README.md").read_text()
    base_model = lmforge.load(files[base])
    assert meta["trainable_parameters"] < 0.5 * base_model.num_parameters()
    model = lmforge.load(adapter).eval()  # the adapter folder names its base
    assert lora_layers(model) and model.task == meta["task"]
    assert trainable_parameters(model) == meta["trainable_parameters"]  # the same pairs come back
    run = json.loads((tmp_path / "run" / "finetune.json").read_text())
    assert run["lora"]["r"] == 4 and run["trainable_parameters"] == meta["trainable_parameters"]


def test_classifier_adapter_through_commands_and_merge(files, tmp_path, capsys):
    assert finetune(files, tmp_path / "run", "bert", "classify", "train", "--lora-r", "8", "--lora-alpha", "16",
                    "--lora-dropout", "0.1", "--lora-targets", "q,v,up", "--rslora") == 0
    adapter = tmp_path / "run" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["use_rslora"] and config["lora_dropout"] == 0.1
    assert all(m.endswith(("query", "value", "intermediate.dense")) for m in config["target_modules"])
    assert config["modules_to_save"] == ["classifier"]
    capsys.readouterr()
    texts = ["the film was great", "a dull and awful story"]
    assert main(["classify", "--json", "--adapter", str(adapter), str(files["bert"]), *texts]) == 0
    with_adapter = [json.loads(line)["labels"][0] for line in capsys.readouterr().out.splitlines()]
    assert main(["classify", "--json", str(files["bert"]), texts[0], "--adapter", str(adapter), texts[1]]) == 0
    assert [json.loads(line)["labels"][0] for line in capsys.readouterr().out.splitlines()] == with_adapter
    assert main(["convert", str(files["bert"]), str(tmp_path / "merged"), "--merge-adapter", str(adapter)]) == 0
    merged = lmforge.load(tmp_path / "merged")
    assert not lora_layers(merged) and merged.task == "sequence-classification"
    capsys.readouterr()
    assert main(["classify", "--json", str(tmp_path / "merged"), *texts]) == 0
    plain = [json.loads(line)["labels"][0] for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in plain] == [r["label"] for r in with_adapter]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(plain, with_adapter))
    assert main(["evaluate", "--model", str(files["bert"]), "--adapter", str(adapter), "--data", str(files["valid"]),
                 "--out", str(tmp_path / "m.json")]) == 0
    scores = json.loads((tmp_path / "m.json").read_text())
    assert scores["accuracy"] == json.loads((tmp_path / "run" / "finetune.json").read_text())["metrics"]["accuracy"]
    assert main(["convert", str(files["bert"]), str(tmp_path / "hf"), "--merge-adapter", str(adapter),
                 "--to", "hf"]) == 0
    capsys.readouterr()
    assert main(["convert", str(adapter), str(tmp_path / "hf2"), "--to", "hf"]) == 2  # the adapter folder alone
    assert "holds a LoRA adapter, which a Hugging Face model folder cannot hold; add --merge-adapter" in \
        capsys.readouterr().err and not (tmp_path / "hf2").exists()
    assert main(["convert", str(adapter), str(tmp_path / "hf2"), "--to", "hf", "--merge-adapter"]) == 0
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        expected = lmforge.load(files["bert"], adapter=adapter).eval()(ids).logits
        assert (lmforge.load(tmp_path / "hf").eval()(ids).logits - expected).abs().max() < 1e-5
        assert (lmforge.load(tmp_path / "hf2").eval()(ids).logits - expected).abs().max() < 1e-5
    assert lmforge.pipeline("text-classification", files["bert"], adapter=adapter)(texts[0])["label"] == \
        with_adapter[0]["label"]


def error_of(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_lora_mistakes_are_one_line_and_write_nothing(files, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["finetune", "--from", str(files["bert"]), "--task", "classify", "--train", str(files["train"]),
            "--out", str(out), *QUICK]
    error = error_of(capsys, base + ["--lora-r", "4", "--lora-targets", "q,query"])
    assert "'query' matches no linear layer" in error and "named q, k, v, o, up, down, dense (or use" in error
    assert error_of(capsys, base + ["--lora-r", "0"]).endswith("pass --lora-r 8 (or 4, 16)")
    assert "needs --lora-r" in error_of(capsys, base + ["--lora-alpha", "16"])
    assert "LoRA adapts pretrained weights" in error_of(capsys, base + ["--lora-r", "4", "--from-scratch"])
    assert not out.exists()

    assert finetune(files, tmp_path / "bert_run", "bert", "classify", "train", "--lora-r", "4") == 0
    adapter = tmp_path / "bert_run" / "adapter"
    error = error_of(capsys, ["classify", "--adapter", str(adapter), str(files["gpt"]), "hello"])
    assert "was made for another base model" in error and "family" in error
    wider = lmforge.build_model(lmforge.presets.get("tiny-bert").replace(vocab_size=files["tokenizer"].vocab_size,
                                                                         d_model=48, n_heads=4), "masked-lm")
    wider.tokenizer = files["tokenizer"]
    wider.save(tmp_path / "wider")
    error = error_of(capsys, ["classify", "--adapter", str(adapter), str(tmp_path / "wider"), "hello"])
    assert "its d_model is 64, the base's is 48" in error

    dst = tmp_path / "merged"
    assert "has no adapter_config.json" in error_of(capsys, ["convert", str(files["bert"]), str(dst),
                                                             "--merge-adapter", str(files["bert"])])
    assert "does not exist" in error_of(capsys, ["convert", str(files["bert"]), str(dst), "--merge-adapter",
                                                 str(tmp_path / "nowhere")])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    assert "has no adapter_config.json" in error_of(capsys, ["convert", str(files["bert"]), str(dst),
                                                             "--merge-adapter", str(broken)])
    assert not dst.exists()
    error = error_of(capsys, ["convert", str(files["bert"]), str(dst), "--merge-adapter"])  # no DIR, none held
    assert "holds no LoRA adapter to merge; name the adapter folder: --merge-adapter DIR" in error
    assert not dst.exists()


def test_a_model_no_hugging_face_format_expresses_keeps_lmforge_names(tmp_path):
    from lmforge.checkpoint.adapter import apply_adapter, save_adapter
    from lmforge.models.lora import LoraSettings, add_lora

    model = lmforge.build_model("tiny-transformer")  # sinusoidal positions: no Hugging Face type fits
    model.save(tmp_path / "base")
    add_lora(model, LoraSettings(r=2, targets=("k", "cross_attn.v", "mlp")))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".B"):
                param.normal_()
    save_adapter(model, tmp_path / "adapter", base=str(tmp_path / "base"))
    keys = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.encoder.blocks.0.self_attn.k.lora_A.weight" in keys
    assert "base_model.model.decoder.blocks.0.cross_attn.v.lora_B.weight" in keys
    assert not any(".self_attn.v." in k for k in keys)  # "k" adapts self- and cross-attention keys, v only cross
    ids = torch.randint(4, 100, (2, 7))
    again = apply_adapter(lmforge.load(tmp_path / "base"), tmp_path / "adapter").eval()
    with torch.no_grad():
        expected = model.eval()(ids, decoder_input_ids=ids).logits
        assert (again(ids, decoder_input_ids=ids).logits - expected).abs().max() < 1e-5


def test_an_adapter_on_other_weights_of_the_same_shape_warns(files, tmp_path):
    assert finetune(files, tmp_path / "run", "gpt", "classify", "train", "--lora-r", "4") == 0
    adapter = tmp_path / "run" / "adapter"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own base, in fp32 or bf16, merged or not: no warning
        lmforge.load(files["gpt"], adapter=adapter)
        lmforge.load(files["gpt"], adapter=adapter, dtype="bf16")
        adapted = lmforge.load(files["gpt"], adapter=adapter)
        set_merged(adapted, True)
        save_adapter(adapted, tmp_path / "again", base=str(files["gpt"]))
        lmforge.load(files["gpt"], adapter=tmp_path / "again")
    base = lmforge.load(files["gpt"])
    torch.manual_seed(1)
    other = lmforge.build_model(base.config, base.task)  # the same architecture, other weights
    other.tokenizer = base.tokenizer
    other.save(tmp_path / "other")
    with pytest.warns(UserWarning, match="trained on other base weights"):
        lmforge.load(tmp_path / "other", adapter=adapter)
