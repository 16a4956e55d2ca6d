"""Chat templates rendered like transformers' `apply_chat_template` (the oracle) on templates written here
(ChatML-style, Llama-3-style, one with namespaces, loop controls, tojson and raise_exception), through the
text-generation pipeline and `lmforge chat`; bad templates and models are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer as Backend, models, pre_tokenizers, decoders, processors, trainers

import lmforge
from lmforge.checkpoint.hf import export_hf, load_hf_tokenizer
from lmforge.cli import main
from lmforge.errors import CheckpointError, InputError
from lmforge.infer.chat import chat_ids, render_chat

transformers = pytest.importorskip("transformers")

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|im_start|>", "<|im_end|>", "<pad>"]
CHATML = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou answer briefly.<|im_end|>\\n' }}"
          "{% endif %}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
          "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
STRICT = """{%- set ns = namespace(turn=0, system='') -%}
{% for m in messages %}
    {% if m.role == 'system' %}{% set ns.system = m.content %}{% continue %}{% endif %}
    {% if (m.role == 'user') != (ns.turn % 2 == 0) %}{{ raise_exception('roles must alternate user/assistant') }}{% endif %}
    {% set ns.turn = ns.turn + 1 %}
[{{ m.role | upper }}{% if ns.system and ns.turn == 1 %} with {{ ns.system | tojson }}{% endif %}] {{ m.content }}
{% endfor %}
{% if add_generation_prompt %}[ASSISTANT]{% endif %}"""
CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}],
    [{"role": "system", "content": "Be terse, \"exact\" & <polite>."}, {"role": "user", "content": "  What is 2+2? "},
     {"role": "assistant", "content": "4."}, {"role": "user", "content": "And 3+3? é ü"}],
]


def tokenizer_folder(folder, template=None, template_file=None):
    """A small byte-level BPE tokenizer.json whose post-processor adds <|begin_of_text|> (like Llama 3's),
    the special tokens above, and tokenizer_config.json with the chat template (or chat_template.jinja)."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    text = ["hello there what is and the answer be terse exact polite assistant user system"] * 50
    backend.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = backend.token_to_id("<|begin_of_text|>")
    backend.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                           special_tokens=[("<|begin_of_text|>", bos)])
    folder.mkdir(parents=True, exist_ok=True)
    backend.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
              "eos_token": "<|eot_id|>", "pad_token": "<pad>"}
    if template is not None:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if template_file is not None:
        (folder / "chat_template.jinja").write_text(template_file)
    return folder


@pytest.mark.parametrize("template", [CHATML, LLAMA3, STRICT], ids=["chatml", "llama3", "namespaces"])
@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["user", "system-and-turns"])
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_rendering_equals_apply_chat_template(tmp_path, template, conversation, generation_prompt):
    folder = tokenizer_folder(tmp_path / "tok", template)
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    ours = load_hf_tokenizer(folder)
    expected = reference.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt)
    assert render_chat(ours, conversation, generation_prompt) == expected
    ids = reference.apply_chat_template(conversation, tokenize=True, add_generation_prompt=generation_prompt)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert chat_ids(ours, conversation, generation_prompt) == list(ids)
    bos = ours.token_to_id("<|begin_of_text|>")
    assert chat_ids(ours, conversation).count(bos) == (1 if template == LLAMA3 else 0)  # never added twice


def test_chat_template_jinja_file_wins_and_survives_saving(tmp_path):
    folder = tokenizer_folder(tmp_path / "tok", template="{{ 'old' }}", template_file=LLAMA3)
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    ours = load_hf_tokenizer(folder)
    assert render_chat(ours, CONVERSATIONS[1]) == reference.apply_chat_template(CONVERSATIONS[1], tokenize=False,
                                                                                add_generation_prompt=True)
    model = chat_model(tmp_path, LLAMA3)
    reloaded = lmforge.load(model.save(tmp_path / "ours"))
    assert reloaded.tokenizer.chat_template == LLAMA3
    export_hf(reloaded, tmp_path / "hf")
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").chat_template == LLAMA3


def chat_model(tmp_path, template):
    """A tiny random Llama with the test tokenizer, stopping on <|eot_id|> and <|end_of_text|>."""
    tokenizer = load_hf_tokenizer(tokenizer_folder(tmp_path / "tok-model", template))
    config = lmforge.presets.get("tiny-llama").replace(
        vocab_size=tokenizer.vocab_size, eos_token_id=[tokenizer.token_to_id("<|eot_id|>"),
                                                        tokenizer.token_to_id("<|end_of_text|>")],
        bos_token_id=tokenizer.token_to_id("<|begin_of_text|>"), pad_token_id=tokenizer.token_to_id("<pad>"))
    torch.manual_seed(0)
    model = lmforge.build_model(config)
    model.tokenizer = tokenizer
    return model


def test_pipeline_answers_conversations(tmp_path):
    model = chat_model(tmp_path, CHATML)
    chat = lmforge.pipeline("text-generation", model)
    answer = chat(CONVERSATIONS[1], max_new_tokens=6)
    assert answer["generated_text"][:-1] == CONVERSATIONS[1]
    reply = answer["generated_text"][-1]
    assert reply["role"] == "assistant"
    ids = torch.tensor([chat_ids(model.tokenizer, CONVERSATIONS[1])])
    new = model.generate(ids, max_new_tokens=6)[0, ids.shape[1]:].tolist()
    stops = set(model.config.eos_ids)
    new = new[:next((i for i, t in enumerate(new) if t in stops), len(new))]
    assert reply["content"] == model.tokenizer.decode(new)
    both = chat(CONVERSATIONS, max_new_tokens=6)
    assert len(both) == 2 and both[1] == answer
    assert "".join(chat.stream_chat(CONVERSATIONS[1], max_new_tokens=6)) == reply["content"]


def test_chat_command_streams_keeps_history_and_resets(tmp_path):
    folder = chat_model(tmp_path, CHATML).save(tmp_path / "model")
    script = "hello there\nwhat is the answer\n/reset\nhello there\n/exit\nnever read\n"
    run = subprocess.run([sys.executable, "-m", "lmforge", "chat", str(folder), "--max-new-tokens", "5"],
                         input=script, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")
    assert lines[2] == "(conversation reset)"
    model = lmforge.load(folder)
    chat = lmforge.pipeline("text-generation", model)
    first = chat([{"role": "user", "content": "hello there"}], max_new_tokens=5)["generated_text"]
    second = chat(first + [{"role": "user", "content": "what is the answer"}], max_new_tokens=5)["generated_text"]
    assert lines[0] == first[-1]["content"] and lines[1] == second[-1]["content"] and lines[3] == lines[0]


def test_bad_templates_and_models_are_one_line_errors(tmp_path, capsys):
    tokenizer = load_hf_tokenizer(tokenizer_folder(tmp_path / "tok", STRICT))
    with pytest.raises(InputError, match="refused this conversation: roles must alternate user/assistant"):
        render_chat(tokenizer, [{"role": "assistant", "content": "hi"}])
    with pytest.raises(InputError, match="unknown variable.*'user_name' is undefined"):
        render_chat(tokenizer, CONVERSATIONS[0], template="Hi {{ user_name }}")
    with pytest.raises(CheckpointError, match="not valid Jinja"):
        render_chat(tokenizer, CONVERSATIONS[0], template="{% for m in messages %}")
    with pytest.raises(InputError, match="needs a 'role'"):
        render_chat(tokenizer, [{"content": "no role"}])

    no_template = chat_model(tmp_path, None).save(tmp_path / "plain")
    assert main(["chat", str(no_template)]) == 2
    assert "has no chat template" in capsys.readouterr().err
    classifier = chat_model(tmp_path, CHATML)
    classifier = lmforge.build_model(classifier.config, "sequence-classification")
    classifier.tokenizer = load_hf_tokenizer(tmp_path / "tok-model")
    assert main(["chat", str(classifier.save(tmp_path / "cls"))]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a model with a causal-lm head" in err and len(err.splitlines()) == 1
    (tmp_path / "bad.jinja").write_text("{{ raise_exception('no') ")
    assert main(["chat", str(no_template), "--template", str(tmp_path / "bad.jinja")]) == 2
    assert "not valid Jinja" in capsys.readouterr().err
