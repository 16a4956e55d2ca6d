"""`lmforge embed MODEL [TEXT ...]`: mean-pooled, normalised sentence embeddings."""

from __future__ import annotations

from .textio import PipelineCommand


def show(text: str, vector: list[float]) -> None:
    print(" ".join(f"{x:.6f}" for x in vector), flush=True)


COMMAND = PipelineCommand(
    "embed", "feature-extraction", help="sentence embeddings (mean-pooled, L2-normalised)",
    description="Print one embedding per input: space-separated numbers, or JSON Lines with --json.",
    key="embedding", show=show, batch_size=32)
register = COMMAND.register
