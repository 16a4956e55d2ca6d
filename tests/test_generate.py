"""generate(): cached vs uncached decoding, batches with padding, sampling, streaming, bad options."""

import pytest
import torch

import lmforge
from lmforge.errors import InputError
from lmforge.models import cpu_decoding
from lmforge.infer import GenerationOptions, generate, stream

PRESETS = ["tiny-gpt2", "tiny-bart", "tiny-t5", "tiny-t5-v1_1", "tiny-transformer"]


def lively(name: str, task: str | None = None):
    """A tiny random model whose greedy outputs vary (untied head; a larger init for pre-norm stacks,
    whose residual stream would otherwise barely change)."""
    config = lmforge.presets.get(name)
    std = 0.3 if config.norm_placement == "pre" else 0.1
    config = config.replace(init_std=std, tie_embeddings=False, scale_tied_logits=False)
    return lmforge.build_model(config, task).eval()


def batch_with_padding(model, lengths=(7, 4, 6)):
    """Random prompts of different lengths: left-padded for decoders, right-padded for encoders."""
    left = not model.config.is_encoder_decoder
    width = max(lengths)
    ids = torch.full((len(lengths), width), 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows = []
    for i, n in enumerate(lengths):
        row = torch.randint(5, model.config.vocab_size, (n,))
        rows.append(row)
        span = slice(width - n, width) if left else slice(0, n)
        ids[i, span], mask[i, span] = row, 1
    return ids, mask, rows


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("beams", [1, 3])
def test_cached_and_uncached_decoding_give_the_same_tokens(name, beams):
    model = lively(name)
    ids, mask, _ = batch_with_padding(model)
    cached = generate(model, ids, mask, max_new_tokens=12, num_beams=beams, eos_token_id=[])
    uncached = generate(model, ids, mask, max_new_tokens=12, num_beams=beams, eos_token_id=[], use_cache=False)
    assert cached.shape[1] == (13 if model.config.is_encoder_decoder else ids.shape[1] + 12)
    assert torch.equal(cached, uncached)
    assert len(set(cached[:, -12:].flatten().tolist())) >= 3, "the test model should not be degenerate"


@pytest.mark.parametrize("name", PRESETS)
def test_padded_batch_decodes_each_row_as_if_alone(name):
    model = lively(name)
    ids, mask, rows = batch_with_padding(model)
    batched = generate(model, ids, mask, max_new_tokens=8, eos_token_id=[])
    for i, row in enumerate(rows):
        alone = generate(model, row[None], max_new_tokens=8, eos_token_id=[])
        assert torch.equal(batched[i, -8:], alone[0, -8:])


def test_greedy_is_the_argmax_of_a_full_forward_at_every_step():
    model = lively("tiny-gpt2")
    prompt = torch.randint(5, 500, (1, 5))
    out = generate(model, prompt, max_new_tokens=6, eos_token_id=[])
    with torch.no_grad():
        for t in range(5, 11):
            logits = model(out[:, :t]).logits[:, -1]
            assert int(logits.argmax()) == int(out[0, t])


def test_stop_token_ends_a_row_and_the_rest_is_padding():
    model = lively("tiny-gpt2")
    prompt = torch.randint(5, 500, (2, 5))
    free = generate(model, prompt, max_new_tokens=10, eos_token_id=[])
    stop = int(free[0, 7])  # the third new token of row 0 becomes a stop token
    out = generate(model, prompt, max_new_tokens=10, eos_token_id=stop, pad_token_id=1)
    first = (free[0, 5:] == stop).nonzero()[0, 0].item() + 5
    assert out[0, first] == stop and torch.all(out[0, first + 1:] == 1)
    both_stop = generate(model, prompt, max_new_tokens=10, eos_token_id=[], stop_token_ids=[stop])
    assert torch.equal(both_stop[0, :first + 1], out[0, :first + 1])


def test_generation_ends_when_every_row_has_stopped():
    model = lively("tiny-bart")
    source = torch.randint(5, 500, (1, 6))
    free = generate(model, source, max_new_tokens=10, eos_token_id=[])
    out = generate(model, source, max_new_tokens=10, eos_token_id=int(free[0, 3]))
    assert out.shape[1] <= 4 and out[0, -1] == free[0, 3]


def test_seeded_sampling_is_reproducible_and_differs_from_greedy():
    model = lively("tiny-gpt2")
    prompt = torch.randint(5, 500, (2, 4))
    options = dict(max_new_tokens=15, do_sample=True, temperature=1.5, top_k=50, top_p=0.95, eos_token_id=[])
    a = generate(model, prompt, seed=7, **options)
    b = generate(model, prompt, seed=7, **options)
    c = generate(model, prompt, seed=8, **options)
    greedy = generate(model, prompt, max_new_tokens=15, eos_token_id=[])
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, greedy)


def test_top_k_one_sampling_is_greedy():
    model = lively("tiny-t5")
    source = torch.randint(5, 500, (2, 6))
    sampled = generate(model, source, max_new_tokens=8, do_sample=True, top_k=1, seed=0, eos_token_id=[])
    assert torch.equal(sampled, generate(model, source, max_new_tokens=8, eos_token_id=[]))


def test_repetition_penalty_discourages_repeats():
    model = lively("tiny-gpt2")
    prompt = torch.randint(5, 500, (1, 4))
    plain = generate(model, prompt, max_new_tokens=30, eos_token_id=[])[0, 4:]
    penalised = generate(model, prompt, max_new_tokens=30, eos_token_id=[], repetition_penalty=5.0)[0, 4:]
    assert len(set(penalised.tolist())) > len(set(plain.tolist()))


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy():
    model = lively("tiny-transformer")
    source = torch.randint(5, 500, (1, 6))

    def log_prob(decoded):
        with torch.no_grad():
            logits = model(source, decoder_input_ids=decoded[:, :-1]).logits.log_softmax(-1)
        return logits.gather(-1, decoded[:, 1:, None]).sum().item()

    greedy = generate(model, source, max_new_tokens=6, eos_token_id=[])
    beam = generate(model, source, max_new_tokens=6, num_beams=4, eos_token_id=[])
    assert log_prob(beam) >= log_prob(greedy) - 1e-5


def test_stream_yields_the_same_tokens_as_generate():
    model = lively("tiny-gpt2")
    ids, mask, _ = batch_with_padding(model)
    steps = list(stream(model, ids, mask, max_new_tokens=9, eos_token_id=[]))
    assert len(steps) == 9 and steps[0].shape == (3,)
    full = generate(model, ids, mask, max_new_tokens=9, eos_token_id=[])
    assert torch.equal(torch.stack(steps, dim=1), full[:, ids.shape[1]:])


def test_generate_method_on_the_model_and_training_mode_restored():
    model = lively("tiny-bart").train()
    source = torch.randint(5, 500, (1, 6))
    out = model.generate(source, max_new_tokens=5, eos_token_id=[])
    assert model.training and out.shape == (1, 6) and out[0, 0] == model.decoder_start_id


@pytest.mark.parametrize("options, message", [
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(num_beams=0), "num_beams"),
    (dict(temperature=0.0), "temperature"), (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(early_stopping="sometimes"), "early_stopping"), (dict(beam_width=3), "unknown generation option"),
])
def test_bad_options_are_input_errors(options, message):
    model = lively("tiny-gpt2")
    with pytest.raises(InputError, match=message):
        generate(model, torch.tensor([[5, 6]]), **options)


def test_bad_inputs_are_input_errors():
    gpt = lively("tiny-gpt2")
    with pytest.raises(InputError, match="non-empty"):
        generate(gpt, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(InputError, match="positions"):
        generate(gpt, torch.randint(5, 500, (1, 120)), max_new_tokens=20)
    with pytest.raises(InputError, match="causal-lm .* seq2seq-lm"):
        generate(lmforge.build_model("tiny-bert"), torch.tensor([[5, 6]]))
    with pytest.raises(InputError, match="beam search cannot stream"):
        stream(gpt, torch.tensor([[5, 6]]), num_beams=2)
    assert GenerationOptions.make(top_p=1.0).top_p == 1.0


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-t5", "tiny-bart"])
def test_decoding_layout_of_the_lm_head_gives_the_training_layout_logits(name):
    model = lively(name)
    cache = model.new_cache(batch=1, max_len=4)
    assert cache.output_weight is not None and cache.output_weight.shape == (model.config.d_model,
                                                                              model.config.vocab_size)
    hidden = torch.randn(1, 1, model.config.d_model)
    with torch.no_grad():
        plain = model.lm_logits(hidden)
        fast = model.lm_logits(hidden, cache)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    many = torch.randn(16, 1, model.config.d_model)
    with torch.no_grad():
        for rows in (2, 5, 16):  # a few rows: the packed layout where oneDNN is built in, else the plain matrix
            cache = model.new_cache(batch=rows, max_len=4)
            if cpu_decoding.packing_available():
                assert cache.output_weight is not None and cpu_decoding.is_packed(cache.output_weight)
            fast = model.lm_logits(many[:rows], cache)
            torch.testing.assert_close(fast, model.lm_logits(many[:rows]), rtol=1e-5, atol=1e-5)
            # each row's logits do not depend on how many rows there are (greedy output is batch-independent)
            assert torch.equal(fast, model.lm_logits(many, model.new_cache(batch=16, max_len=4))[:rows])
        assert model.new_cache(batch=17, max_len=4).output_weight is None  # many rows: the ordinary product
    hidden.requires_grad_(True)  # with autograd the head's own parameter is used, so it gets gradients
    model.lm_logits(hidden, cache).sum().backward()
    head_weight = model.embed.weight if model.head.tied else model.head.weight
    assert head_weight.grad is not None and head_weight.grad.abs().sum() > 0


def test_kept_decoding_copy_follows_changes_to_the_head_matrix():
    model = lively("tiny-gpt2")
    first = model.new_cache(batch=1, max_len=4).output_weight
    assert model.new_cache(batch=1, max_len=4).output_weight is first  # kept between generations
    with torch.no_grad():
        model.head.weight.mul_(2.0)  # an in-place update, as an optimizer step makes
    changed = model.new_cache(batch=1, max_len=4).output_weight
    torch.testing.assert_close(changed, 2.0 * first)
    model.double()
    assert model.new_cache(batch=1, max_len=4).output_weight.dtype == torch.float64
    model.load_state_dict(lively("tiny-gpt2").double().state_dict())
    torch.testing.assert_close(model.new_cache(batch=1, max_len=4).output_weight, model.head.weight.t())
