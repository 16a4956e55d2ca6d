"""`lmforge fill-mask MODEL [TEXT ...]`: the most likely tokens at each mask token."""

from __future__ import annotations

from .textio import PipelineCommand


def per_mask(result) -> list[list[dict]]:
    """One list of candidates per mask token (the pipeline gives a flat list for a single mask)."""
    return result if result and isinstance(result[0], list) else [result]


def show(text: str, masks: list[list[dict]]) -> None:
    print(text)
    for number, candidates in enumerate(masks, start=1):
        for candidate in candidates:
            label = f"mask {number}  " if len(masks) > 1 else ""
            print(f"  {label}{candidate['score']:.4f}  {candidate['token_str']!r:<14} {candidate['sequence']}")


COMMAND = PipelineCommand(
    "fill-mask", "fill-mask", help="predict masked tokens with a masked-lm model",
    description="For each input holding the mask token (e.g. [MASK] or <mask>), print the --top-k most likely "
                "tokens with their probabilities.", key="predictions", show=show, shape=per_mask, top_k=5)
register = COMMAND.register
