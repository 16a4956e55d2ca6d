"""Proof run: Multi30k English->German end to end with a small encoder-decoder trained from scratch.

    python examples/translate_multi30k.py [--budget-min 8] [--out runs/multi30k] [--threads 1]

A T5-style Unigram tokenizer (8,000 tokens, shared by both languages, appends </s>) is trained on the
training sentences; a 3+3-layer, 256-wide T5-like model learns from random weights under a wall-time
budget; BLEU/chrF (sacreBLEU, greedy decoding) on 300 validation sentences select the best checkpoint,
which is re-scored on the 2016 Flickr test set. A short CPU run: the BLEU is low, and reported as is.
"""

from __future__ import annotations

from pathlib import Path

from proof_arms import SHARED, arm_parser, need, print_table, run_arm, set_threads

DATA = SHARED / "translation"


def small_t5(tokenizer):
    import lmforge
    from lmforge.train.pretraining import fit_config_to_tokenizer

    config = lmforge.presets.get("tiny-t5").replace(d_model=256, n_heads=4, n_layers=3, d_ff=1024, dropout=0.1,
                                                    name="multi30k-t5-small")
    model = lmforge.build_model(fit_config_to_tokenizer(config, tokenizer, vocab_from_data=True))
    model.tokenizer = tokenizer
    return model


def main() -> None:
    args = arm_parser(__doc__, budget_min=8.0, max_steps=3000, out="runs/multi30k", arms=False).parse_args()
    split = {name: [DATA / f"multi30k.{name}.{lang}.txt" for lang in ("en", "de")]
             for name in ("train", "val", "test_2016_flickr")}
    need(*[f for files in split.values() for f in files])
    set_threads(args.threads)
    from lmforge.tokenizer import train_tokenizer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer("unigram", 8000, split["train"], sentinels=0)
    valid = []
    for path in split["val"]:  # 300 validation pairs keep the periodic greedy decoding short
        lines = path.read_text(encoding="utf-8").splitlines()[:300]
        valid.append(out / f"val300.{path.name.split('.')[-2]}.txt")
        valid[-1].write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = {"max_steps": args.max_steps, "batch_size": 64, "lr": 1e-3, "warmup_steps": 200, "eval_every": 500,
                "log_every": 1, "seed": 0}
    row = run_arm("scratch", "seq2seq", split["train"], valid, out, args.budget_min * 60, settings, "bleu",
                  score_data=split["test_2016_flickr"], checkpoint=small_t5(tokenizer))
    print_table([row], "bleu", ("chrf",))


if __name__ == "__main__":
    main()
