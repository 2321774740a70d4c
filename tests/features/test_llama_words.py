"""LLaMA word features: contexts, word-to-token bookkeeping, and one causal pass per window
against the transformers model run on each word's own context string."""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, trainers

from jaxenc.ckpt import load_llama
from jaxenc.errors import ConfigError, DataError
from jaxenc.features import context_starts, llama_word_features, word_tokens
from jaxenc.features.semantic import WordTokens, _batches, _Windows
from tests._tolerance import llama_layer_atol


def _atol(reference, layer, expected):
    """llama_layer_atol of a layer's word features (contexts of at most 64 tokens; the last layer
    after the final norm, as transformers' hidden states)."""
    config = reference.config
    return llama_layer_atol(config, 64, layer, expected[layer], final_norm=layer == config.num_hidden_layers)


def reference_starts(n_words, lookback1, lookback2):
    """The reference code's loop (tokenization_helpers.py, no empty words): a look-back k grows
    by one per word; the word at which it equals lookback2 still gets it, then it drops."""
    k, starts = 0, []
    for i in range(n_words):
        assert k <= lookback2
        starts.append(i - k)
        if k == lookback2:
            k = lookback1
        k += 1
    return np.array(starts)


@pytest.mark.parametrize("pair", [(4, 8), (256, 512), (0, 3), (5, 6)])
def test_context_starts_follow_the_reference_look_back(pair):
    np.testing.assert_array_equal(context_starts(2000, pair), reference_starts(2000, *pair))


def test_an_int_look_back_is_fixed():
    np.testing.assert_array_equal(context_starts(50, 7), np.maximum(0, np.arange(50) - 7))


def test_paper_windows_start_every_256_words():
    """(256, 512): words 0..512 start at 0, 513..768 at 256, 769..1024 at 512."""
    starts = context_starts(1100, (256, 512))
    assert set(starts[:513]) == {0} and set(starts[513:769]) == {256} and set(starts[769:1025]) == {512}
    lookback = np.arange(1100) - starts
    assert lookback[512] == 512 and lookback[513] == 257 and lookback[600:].min() >= 256


@pytest.mark.parametrize("kind", ["sentencepiece", "metaspace", "bytelevel"])
@pytest.mark.parametrize("context_words", [0, 3, 100, (4, 8), (2, 3)])
def test_assembled_contexts_equal_direct_tokenisation(kind, context_words, make_tokenizer, story_words, tmp_path):
    """Every word's assembled context equals tokenising its context string directly, it is a
    prefix of its window's tokens, and the word's last token sits where its feature is read."""
    tokenizer = make_tokenizer(kind, tmp_path)
    tokens = word_tokens(tokenizer, story_words)
    assert tokens.prefix == (tokenizer.bos_token_id,) and tokens.suffix == ()
    starts = context_starts(len(story_words), context_words)
    windows = _Windows.of(tokens, starts)
    for i, word in enumerate(story_words):
        direct = tokenizer(" ".join(story_words[starts[i] : i + 1]))["input_ids"]
        assert tokens.span(starts[i], i).tolist() == direct
        assert tokens.span_length(starts[i], i) == len(direct)
        assert tokens.last_token(starts[i], i) == len(direct) - 1
        (w,) = np.flatnonzero((windows.first <= i) & (i <= windows.last))
        assert windows.start[w] == starts[i]
        assert tokens.span(windows.start[w], windows.last[w])[: len(direct)].tolist() == direct
        # The last token of the context ends the word: decoding it alone gives the word's tail.
        assert word.endswith(tokenizer.decode(direct[-1:]).strip())


def test_the_test_tokenizers_exercise_multi_token_and_opening_words(make_tokenizer, story_words, tmp_path):
    """Guards the tests here: several words split into several tokens, and for the byte-level
    tokenizer a word opening a text tokenises differently from the same word after a space."""
    meta = word_tokens(make_tokenizer("sentencepiece", tmp_path / "m"), story_words)
    assert np.sum(np.diff(meta.bounds) >= 3) >= 5
    byte = word_tokens(make_tokenizer("bytelevel", tmp_path / "b"), story_words)
    in_text = [byte.flat[byte.bounds[i] : byte.bounds[i + 1]] for i in range(len(story_words))]
    assert any(not np.array_equal(a, b) for a, b in zip(byte.first, in_text, strict=True))


def test_a_tokenizer_merging_across_spaces_is_refused(story_words):
    """A BPE without a pre-tokenizer learns merges across spaces: its contexts cannot be
    assembled word by word, and word_tokens says so."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>"], show_progress=False)
    tok.train_from_iterator([" ".join(story_words)] * 5, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    with pytest.raises(ConfigError, match="story 'merger'.*word boundary"):
        word_tokens(wrapped, story_words, story="merger")


def per_word_reference(reference, tokenizer, words, starts, layers):
    """Each word's context string through the tokenizer and the transformers model, one forward
    per word: the hidden state at its last token. Returns {layer: (n_words, hidden)}."""
    out = {layer: [] for layer in layers}
    for i in range(len(words)):
        ids = tokenizer(" ".join(words[starts[i] : i + 1]), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hidden = reference(ids, output_hidden_states=True).hidden_states
        for layer in layers:
            out[layer].append(hidden[layer][0, -1].numpy())
    return {layer: np.stack(rows) for layer, rows in out.items()}


@pytest.mark.parametrize("kind, n_words", [("sentencepiece", 27), ("bytelevel", 25)])
def test_windows_equal_per_word_forwards_of_transformers(kind, n_words, llama_checkpoint, make_tokenizer,
                                                         story_words, tmp_path):
    """The paper's scheme at (4, 8): windows start at words 0, 4, 8, 12, 16, 20, so every
    window end (word 8 before the first reset and word 9 after it, ..., 24 / 25) and the story's
    end are covered; 27 words end inside a window, 25 at a window end. Multi-token words
    throughout, and with the byte-level tokenizer a window's first word is tokenised alone.
    Batches of 4 windows mix lengths and pad the last batch. Reference: transformers' LlamaModel
    run on every word's own context string; float32, within the forward pass's rounding
    (``llama_layer_atol``, about 1e-5 of each layer's scale; a word read at the wrong token or
    window moves its features by 1e-1 of it)."""
    _, module, reference, _ = llama_checkpoint
    tokenizer = make_tokenizer(kind, tmp_path)
    words = story_words[:n_words]
    layers = (0, 1, 3)
    starts = context_starts(n_words, (4, 8))
    assert list(np.unique(starts)) == [0, 4, 8, 12, 16, 20][: len(np.unique(starts))]
    assert len(np.unique(starts)) == 6 if n_words == 27 else 5
    features = llama_word_features(module, tokenizer, words, layers=layers, context_words=(4, 8),
                                   batch_size=4, pad_multiple=16)
    expected = per_word_reference(reference, tokenizer, words, starts, layers)
    for layer in layers:
        assert features[layer].shape == (n_words, 32)
        np.testing.assert_allclose(features[layer], expected[layer], rtol=0, atol=_atol(reference, layer, expected))


def test_a_fixed_look_back_equals_per_word_forwards_of_transformers(llama_checkpoint, story_words):
    """An int look-back: the first 6 words share one window, every later word has its own.
    Batches of 8 padded to multiples of 16 tokens mix lengths and pad the last batch."""
    _, module, reference, tokenizer = llama_checkpoint
    layers = (0, 2, 3)
    features = llama_word_features(module, tokenizer, story_words, layers=layers, context_words=5,
                                   batch_size=8, pad_multiple=16)
    expected = per_word_reference(reference, tokenizer, story_words, context_starts(len(story_words), 5), layers)
    for layer in layers:
        np.testing.assert_allclose(features[layer], expected[layer], rtol=0, atol=_atol(reference, layer, expected))


def test_the_dot_product_attention_route_gives_the_same_windowed_features(llama_checkpoint, story_words):
    """The GPU/TPU attention route (jax.nn.dot_product_attention, XLA's implementation) through
    the windowed path: right-padded windows, padding rows, causal GQA. Tolerance: the port's
    bound against transformers (``llama_layer_atol``: two float32 implementations of the same
    function, contexts of at most 64 tokens)."""
    directory, module, reference, tokenizer = llama_checkpoint
    xla, _ = load_llama(directory, attention="xla")
    kw = dict(layers=(1, 3), context_words=(4, 8), batch_size=4, pad_multiple=16)
    want = llama_word_features(module, tokenizer, story_words, **kw)
    got = llama_word_features(xla, tokenizer, story_words, **kw)
    for layer in kw["layers"]:
        np.testing.assert_allclose(got[layer], want[layer], rtol=0, atol=_atol(reference, layer, want))


def test_a_long_story_compiles_for_few_shapes():
    """A 3000-word story of 1-3 tokens per word at (256, 512): 11 windows of 184-513 words,
    batched 4 at a time, fall into at most 3 call shapes (rows, tokens, gathered words)."""
    rng = np.random.default_rng(0)
    n = 3000
    bounds = np.concatenate([[0], np.cumsum(rng.integers(1, 4, n))])
    tokens = WordTokens(np.arange(bounds[-1]), bounds, [np.arange(bounds[i + 1] - bounds[i]) for i in range(n)],
                        (1,), ())
    windows = _Windows.of(tokens, context_starts(n, (256, 512)))
    assert len(windows.start) == 11
    shapes = {(rows, seq, k) for _, rows, seq, k in _batches(windows, 4, 64, 1)}
    assert len(shapes) <= 3, shapes
    for ids, _rows, seq, k in _batches(windows, 4, 64, 1):
        longest = windows.n_tokens[ids].max()
        assert longest <= seq <= 1.125 * longest + 64 and seq % 64 == 0
        assert (windows.last - windows.first + 1)[ids].max() <= k


def test_bad_words_layers_and_contexts_raise_naming_the_story(llama_checkpoint):
    _, module, _, tokenizer = llama_checkpoint
    with pytest.raises(DataError, match="story 'beta'.*word 1 is 'two words'"):
        llama_word_features(module, tokenizer, ["one", "two words"], layers=(1,), story="beta")
    with pytest.raises(DataError, match="story 'beta'.*no words"):
        llama_word_features(module, tokenizer, [], layers=(1,), story="beta")
    with pytest.raises(ConfigError, match="story 'beta'.*layers"):
        llama_word_features(module, tokenizer, ["one"], layers=(4,), story="beta")
    for bad in [(8, 4), (4, 4), (-1, 3), (1, 2, 3), -2, 2.5, True]:
        with pytest.raises(ConfigError, match="story 'beta'.*context_words"):
            llama_word_features(module, tokenizer, ["one"], layers=(1,), context_words=bad, story="beta")
