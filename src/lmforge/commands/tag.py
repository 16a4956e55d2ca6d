"""`lmforge tag MODEL [TEXT ...]`: named entities (B-/I- tags grouped into character spans)."""

from __future__ import annotations

from .textio import PipelineCommand


def show(text: str, entities: list[dict]) -> None:
    print(text)
    for e in entities:
        print(f"  {e['entity_group']:<12} {e['word']!r} [{e['start']}:{e['end']}] {e['score']:.4f}")


COMMAND = PipelineCommand(
    "tag", "token-classification", help="find entities with a token-classification model",
    description="Print the entities of each input: type, text, character span and mean probability.",
    key="entities", show=show)
register = COMMAND.register
