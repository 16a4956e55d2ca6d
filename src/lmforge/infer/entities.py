"""Token-classification output -> entities: B-/I- tags of words grouped into character spans."""

from __future__ import annotations

from tokenizers import Encoding


def word_predictions(encoding: Encoding, labels: list[int], scores: list[float]) -> list[tuple[int, int, int, float]]:
    """(start, end, label, score) per word, in order. A word takes the prediction of its first
    sub-token; its span covers all of its sub-tokens. Special tokens are skipped."""
    words: dict[int, list] = {}
    for position, word in enumerate(encoding.word_ids):
        if word is None or encoding.special_tokens_mask[position]:
            continue
        start, end = encoding.offsets[position]
        if word not in words:
            words[word] = [start, end, labels[position], scores[position]]
        else:
            words[word][1] = max(words[word][1], end)
    return [tuple(words[w]) for w in sorted(words)]


def split_tag(tag: str) -> tuple[str, str | None]:
    """"B-PER" -> ("B", "PER"); "I-PER" -> ("I", "PER"); "O" -> ("O", None); a bare "PER" counts as inside."""
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIbi":
        return tag[0].upper(), tag[2:]
    return "I", tag


def group_entities(text: str, words: list[tuple[int, int, int, float]], id2label: dict[int, str]) -> list[dict]:
    """Merge consecutive words into entities: B- starts one, I- of the same type continues it, anything
    else ends it. Each entity: entity_group, score (mean over its words), word (the text span), start, end."""
    entities: list[dict] = []
    current: dict | None = None
    for start, end, label, score in words:
        prefix, kind = split_tag(id2label[label])
        if kind is None:
            current = None
            continue
        if prefix == "B" or current is None or current["entity_group"] != kind:
            current = {"entity_group": kind, "scores": [], "start": start, "end": end}
            entities.append(current)
        current["end"] = end
        current["scores"].append(score)
    return [_finish(text, e) for e in entities]


def _finish(text: str, entity: dict) -> dict:
    start, end = entity["start"], entity["end"]
    while start < end and text[start].isspace():  # byte-level BPE offsets may include the leading space
        start += 1
    scores = entity["scores"]
    return {"entity_group": entity["entity_group"], "score": sum(scores) / len(scores),
            "word": text[start:end], "start": start, "end": end}
