"""`lmforge classify MODEL [TEXT ...]`: label and probability of each text."""

from __future__ import annotations

from .textio import PipelineCommand


def as_list(result) -> list[dict]:
    return result if isinstance(result, list) else [result]


def show(text: str, ranked: list[dict]) -> None:
    labels = "  ".join(f"{r['label']}\t{r['score']:.4f}" for r in ranked)
    print(f"{labels}\t{text}", flush=True)


COMMAND = PipelineCommand(
    "classify", "text-classification", help="label texts with a sequence-classification model",
    description="Print the predicted label and its probability for each input (--top-k for the k best labels).",
    key="labels", show=show, shape=as_list, top_k=1)
register = COMMAND.register
