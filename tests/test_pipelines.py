"""Pipelines on tiny checkpoints saved with their own trained tokenizers, loaded back from disk."""

import warnings

import pytest
import torch

import lmforge
from lmforge.errors import InputError
from lmforge.infer import generate
from lmforge.infer.entities import group_entities, split_tag
from lmforge.infer.text import TruncationWarning
from lmforge.tokenizer import train_tokenizer

SENTENCES = [
    "John Smith lives in New York .", "Mary Jones works in Paris .", "the cat sat on the mat .",
    "Peter Brown moved to London last year .", "a good film with a great cast .", "a dull and boring film .",
    "Anna Lee visited Berlin and Rome .", "the dog sat on the rug .",
] * 4
TAGS = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}
PEOPLE, PLACES = {"John", "Mary", "Peter", "Anna"}, {"New", "Paris", "London", "Berlin", "Rome"}


@pytest.fixture(scope="module")
def wordpiece():
    return train_tokenizer("wordpiece", 200, iter(SENTENCES), min_frequency=1)


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer("bpe", 400, iter(SENTENCES), min_frequency=1)


def encoder_model(tokenizer, task, **changes):
    config = lmforge.presets.get("tiny-bert").replace(
        vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id, mask_token_id=tokenizer.mask_id,
        max_positions=32, **changes)
    model = lmforge.build_model(config, task)
    model.tokenizer = tokenizer
    return model


def saved(model, tmp_path, name="model"):
    return model.save(tmp_path / name)


def word_tags(sentence: str) -> list[int]:
    tags, previous = [], "O"
    for word in sentence.split():
        if word in PEOPLE or (previous == "B-PER" and word[0].isupper()):
            tag = "B-PER" if word in PEOPLE else "I-PER"
        elif word in PLACES or (previous == "B-LOC" and word == "York"):
            tag = "B-LOC" if word in PLACES else "I-LOC"
        else:
            tag = "O"
        tags.append(TAGS[tag])
        previous = tag
    return tags


def fit(model, batches, steps):
    """A few Adam steps; enough for a tiny model to memorise a handful of sentences."""
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(steps):
        ids, mask, labels = batches[step % len(batches)]
        loss = model(ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


# ---- token classification -----------------------------------------------------------------------------
def test_split_tag_and_grouping_rules():
    assert split_tag("B-PER") == ("B", "PER") and split_tag("I-LOC") == ("I", "LOC") and split_tag("O") == ("O", None)
    assert split_tag("MISC") == ("I", "MISC")
    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    text = "Ann Lee met Bo in Rio"
    words = [(0, 3, 1, 0.9), (4, 7, 2, 0.7), (8, 11, 0, 0.99), (12, 14, 1, 0.8), (15, 17, 0, 0.9), (18, 21, 4, 0.6)]
    entities = group_entities(text, words, labels)
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in entities] == [
        ("PER", "Ann Lee", 0, 7), ("PER", "Bo", 12, 14), ("LOC", "Rio", 18, 21)]
    assert entities[0]["score"] == pytest.approx(0.8)
    back_to_back = group_entities("A B", [(0, 1, 1, 1.0), (2, 3, 1, 1.0)], labels)  # B- then B-: two entities
    assert [e["word"] for e in back_to_back] == ["A", "B"]


def test_token_classification_groups_trained_tags_into_character_spans(wordpiece, tmp_path):
    model = encoder_model(wordpiece, "token-classification", num_labels=5, id2label={v: k for k, v in TAGS.items()},
                          dropout=0.0, attention_dropout=0.0)
    encodings = wordpiece.backend.encode_batch(SENTENCES[:8])
    width = max(len(e.ids) for e in encodings)
    ids = torch.full((8, width), wordpiece.pad_id)
    mask = torch.zeros(8, width, dtype=torch.long)
    labels = torch.full((8, width), -100)
    for row, (sentence, encoding) in enumerate(zip(SENTENCES, encodings)):
        tags, n = word_tags(sentence), len(encoding.ids)
        ids[row, :n], mask[row, :n] = torch.tensor(encoding.ids), 1
        labels[row, :n] = torch.tensor([-100 if w is None else tags[w] for w in encoding.word_ids])
    fit(model, [(ids, mask, labels)], steps=40)
    tagger = lmforge.pipeline("ner", model=saved(model, tmp_path))
    text = "John Smith lives in New York ."
    entities = tagger(text)
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in entities] == [
        ("PER", "John Smith", 0, 10), ("LOC", "New York", 20, 28)]
    assert all(0.5 < e["score"] <= 1.0 for e in entities)
    batch = tagger([text, "Mary Jones works in Paris ."], )
    assert [e["word"] for e in batch[1]] == ["Mary Jones", "Paris"]
    # a padded batch multiplies other shapes: the same spans, scores to float rounding (AVX512 BLAS differs at 1e-7)
    assert [{k: v for k, v in e.items() if k != "score"} for e in batch[0]] == \
        [{k: v for k, v in e.items() if k != "score"} for e in entities]
    assert [e["score"] for e in batch[0]] == pytest.approx([e["score"] for e in entities], abs=1e-5)


# ---- fill-mask --------------------------------------------------------------------------------------------
def test_fill_mask_matches_the_models_probabilities_and_learns_a_sentence(wordpiece, tmp_path):
    model = encoder_model(wordpiece, "masked-lm", dropout=0.0, attention_dropout=0.0)
    ids = torch.tensor([wordpiece.backend.encode("the cat sat on the mat .").ids])
    sat = wordpiece.token_to_id("sat")
    masked = ids.masked_fill(ids == sat, wordpiece.mask_id)
    labels = torch.where(ids == sat, ids, torch.full_like(ids, -100))
    fit(model, [(masked, None, labels)], steps=25)
    fill = lmforge.pipeline("fill-mask", model=saved(model, tmp_path))
    results = fill("the cat [MASK] on the mat .", top_k=3)
    assert results[0]["token"] == sat and results[0]["token_str"] == "sat"
    assert results[0]["sequence"] == wordpiece.decode(ids[0].tolist()) == "the cat sat on the mat."
    with torch.no_grad():
        expected = model(masked).logits[0, 3].softmax(-1)
    assert [r["score"] for r in results] == pytest.approx(expected.topk(3).values.tolist(), abs=1e-5)
    two = fill("the [MASK] sat on the [MASK] .", top_k=2)
    assert len(two) == 2 and all(len(candidates) == 2 for candidates in two)
    with pytest.raises(InputError, match=r"no \[MASK\] token"):
        fill("the cat sat")


# ---- text classification ------------------------------------------------------------------------------------
def test_text_classification_scores_are_the_models_softmax(wordpiece, tmp_path):
    model = encoder_model(wordpiece, "sequence-classification", id2label={0: "negative", 1: "positive"})
    classify = lmforge.pipeline("text-classification", model=saved(model, tmp_path))
    texts = ["a good film with a great cast .", "a dull and boring film ."]
    one = classify(texts[0])
    both = classify(texts, top_k=None)
    model.eval()
    with torch.no_grad():
        probs = model(torch.tensor([wordpiece.backend.encode(texts[0]).ids])).logits.softmax(-1)[0]
    assert one["score"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert one["label"] == ("positive" if int(probs.argmax()) == 1 else "negative")
    assert [r["label"] for r in both[0]][0] == one["label"] and sum(r["score"] for r in both[1]) == pytest.approx(1.0)


# ---- feature extraction -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["embedding", "masked-lm"])
def test_feature_extraction_is_normalised_and_padding_invariant(wordpiece, tmp_path, task):
    model = encoder_model(wordpiece, task)
    embed = lmforge.pipeline("feature-extraction", model=saved(model, tmp_path))
    texts = ["the cat sat on the mat .", "a good film ."]
    vectors = torch.tensor(embed(texts))
    alone = torch.tensor(embed(texts[1]))
    assert vectors.shape == (2, 64)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(vectors[1], alone, atol=1e-5)
    assert torch.allclose(embed.embed(texts), vectors, atol=1e-6)


# ---- generation ----------------------------------------------------------------------------------------------------
def decoder_model(tokenizer):
    config = lmforge.presets.get("tiny-gpt2").replace(vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_id,
                                                      eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
                                                      max_positions=40, init_std=0.3, tie_embeddings=False)
    model = lmforge.build_model(config)
    model.tokenizer = tokenizer
    return model


def test_text_generation_continues_the_prompt_and_streams_the_same_text(bpe, tmp_path):
    model = decoder_model(bpe)
    generator = lmforge.pipeline("text-generation", model=saved(model, tmp_path))
    prompt = "the cat sat"
    result = generator(prompt, max_new_tokens=8)
    ids = torch.tensor([bpe.encode(prompt)])
    expected = generate(model, ids, max_new_tokens=8, pad_token_id=bpe.pad_id)[0, ids.shape[1]:].tolist()
    stop = next((i for i, t in enumerate(expected) if t == bpe.eos_id), len(expected))
    assert result["generated_text"] == bpe.decode(bpe.encode(prompt) + expected[:stop])
    assert prompt + "".join(generator.stream(prompt, max_new_tokens=8)) == result["generated_text"]
    batch = generator([prompt, "Mary Jones works in Paris ."], max_new_tokens=8)
    assert batch[0] == result, "a left-padded batch must give each prompt's own continuation"


def test_too_long_prompts_warn_and_truncate_or_fail(bpe, tmp_path):
    path = saved(decoder_model(bpe), tmp_path)
    long_text = " ".join(SENTENCES[:6])
    with pytest.warns(TruncationWarning, match="accepts at most 32"):
        lmforge.pipeline("text-generation", model=path)(long_text, max_new_tokens=8)
    strict = lmforge.pipeline("text-generation", model=path, truncation=False)
    with pytest.raises(InputError, match="at most 32.*--no-truncate"):
        strict(long_text, max_new_tokens=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strict("the cat sat", max_new_tokens=8)  # short inputs pass silently


def test_translation_decodes_what_generate_produces(bpe, tmp_path):
    config = lmforge.presets.get("tiny-bart").replace(
        vocab_size=bpe.vocab_size, pad_token_id=bpe.pad_id, bos_token_id=bpe.bos_id, eos_token_id=bpe.eos_id,
        decoder_start_token_id=bpe.eos_id, mask_token_id=None, init_std=0.1, tie_embeddings=False)
    model = lmforge.build_model(config)
    model.tokenizer = bpe
    translate = lmforge.pipeline("translation", model=saved(model, tmp_path), options=None)
    out = translate(["the cat sat on the mat .", "a good film ."], max_new_tokens=6, num_beams=2)
    ids = torch.tensor([bpe.encode("a good film .")])
    tokens = generate(model, ids, max_new_tokens=6, num_beams=2, pad_token_id=bpe.pad_id)[0, 1:].tolist()
    stop = next((i for i, t in enumerate(tokens) if t == bpe.eos_id), len(tokens))
    assert out[1] == {"translation_text": bpe.decode(tokens[:stop]).strip()}
    summary = lmforge.pipeline("summarization", model=model)("a good film .", max_new_tokens=6, num_beams=2)
    assert summary == {"summary_text": out[1]["translation_text"]}


# ---- bad input ------------------------------------------------------------------------------------------------------
def test_pipeline_errors_name_the_problem(wordpiece, bpe, tmp_path):
    mlm = saved(encoder_model(wordpiece, "masked-lm"), tmp_path)
    with pytest.raises(InputError, match="needs a model with a causal-lm head.*masked-lm head; it can serve: "
                                         "fill-mask, feature-extraction"):
        lmforge.pipeline("text-generation", model=mlm)
    with pytest.raises(InputError, match="unknown pipeline task"):
        lmforge.pipeline("poetry", model=mlm)
    fill = lmforge.pipeline("fill-mask", model=mlm)
    with pytest.raises(InputError, match="input 2 is empty"):
        fill(["the [MASK] sat", "  "])
    with pytest.raises(InputError, match="no inputs"):
        fill([])
    bare = lmforge.build_model("tiny-bert")
    with pytest.raises(InputError, match="no tokenizer"):
        lmforge.pipeline("fill-mask", model=bare)
    with pytest.raises(InputError, match="top_p"):
        lmforge.pipeline("text-generation", model=decoder_model(bpe))("the cat", top_p=0)
