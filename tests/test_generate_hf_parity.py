"""Greedy and beam search are token-for-token identical to Hugging Face `generate` on converted
random gpt2, bart and t5 models (several prompts, batches with padding). transformers is the oracle."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
hf_loader = pytest.importorskip("lmforge.checkpoint.hf", reason="the Hugging Face converter is not available")
if not hasattr(hf_loader, "load_hf"):
    pytest.skip("lmforge.checkpoint.hf.load_hf does not exist yet", allow_module_level=True)

import lmforge  # noqa: E402
from lmforge.infer import generate  # noqa: E402

pytestmark = pytest.mark.slow  # 42 cases x 2 libraries; about 2 minutes on 2 busy cores
VOCAB = 99


def hf_gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=98, eos_token_id=3,
        pad_token_id=0, initializer_range=0.2))


def hf_bart():
    return transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=VOCAB, max_position_embeddings=64, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None,
        init_std=0.2))


def hf_t5():
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, initializer_factor=3.0))


BUILDERS = {"gpt2": hf_gpt2, "bart": hf_bart, "t5": hf_t5}


@pytest.fixture(scope="module", params=list(BUILDERS))
def pair(request, tmp_path_factory):
    """(Hugging Face model, the same weights converted by lmforge.load)."""
    torch.manual_seed(0)
    hf = BUILDERS[request.param]().eval()
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return hf, lmforge.load(folder).eval()


def prompts(hf, seed: int):
    """A batch of 4 prompts of lengths 6, 3, 5, 1: left-padded for gpt2, right-padded for encoders."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [6, 3, 5, 1]
    pad = hf.config.pad_token_id
    ids = torch.full((4, 6), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        span = slice(0, n) if hf.config.is_encoder_decoder else slice(6 - n, 6)
        ids[i, span] = torch.randint(4, VOCAB - 1, (n,), generator=generator)
        mask[i, span] = 1
    return ids, mask


def until_stop(ids: torch.Tensor, start: int, stop: int) -> list[list[int]]:
    """Each row up to and including its first stop token after `start` (what was generated; the filler
    after it differs on purpose: Hugging Face fills finished beams with the EOS when pad_token_id is 0)."""
    rows = []
    for row in ids.tolist():
        end = next((i + 1 for i in range(start, len(row)) if row[i] == stop), len(row))
        rows.append(row[:end])
    return rows


def frequent_token(hf, ids, mask) -> int:
    """A token that greedy decoding produces often: used as EOS so that sequences end at different steps."""
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    start = 1 if hf.config.is_encoder_decoder else ids.shape[1]
    return int(out[:, start:].flatten().mode().values)


CASES = [
    dict(num_beams=1),
    dict(num_beams=4),
    dict(num_beams=3, length_penalty=2.0),
    dict(num_beams=3, length_penalty=-1.0, early_stopping=True),
    dict(num_beams=2, early_stopping="never"),
    dict(num_beams=1, repetition_penalty=1.5),
    dict(num_beams=3, repetition_penalty=1.3),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("eos", ["model", "frequent"])
def test_same_tokens_as_hugging_face(pair, case, eos):
    hf, ours = pair
    ids, mask = prompts(hf, seed=CASES.index(case))  # different prompts for every case
    stop = hf.config.eos_token_id if eos == "model" else frequent_token(hf, ids, mask)
    options = dict(max_new_tokens=16, eos_token_id=stop, **case)
    expected = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, **options)
    got = generate(ours, ids, mask, **options)
    start = 1 if hf.config.is_encoder_decoder else ids.shape[1]
    assert got.shape == expected.shape
    assert until_stop(got, start, stop) == until_stop(expected, start, stop)
