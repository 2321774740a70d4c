"""LLaMA word features: word-to-token bookkeeping and features vs one context at a time."""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, trainers

from jaxenc.errors import ConfigError, DataError
from jaxenc.features import llama_word_features, word_tokens


@pytest.mark.parametrize("kind", ["sentencepiece", "metaspace", "bytelevel"])
@pytest.mark.parametrize("context_words", [0, 3, 100])
def test_assembled_contexts_equal_direct_tokenisation(
    kind, context_words, make_tokenizer, story_words, tmp_path
):
    """Every word's assembled context equals tokenising its context string directly, and the
    word's last token sits where the features are read."""
    tokenizer = make_tokenizer(kind, tmp_path)
    tokens = word_tokens(tokenizer, story_words)
    assert tokens.prefix == (tokenizer.bos_token_id,) and tokens.suffix == ()
    for i, word in enumerate(story_words):
        text = " ".join(story_words[max(0, i - context_words) : i + 1])
        direct = tokenizer(text)["input_ids"]
        assembled = tokens.context(i, context_words)
        assert assembled.tolist() == direct
        assert tokens.context_length(i, context_words) == len(direct)
        # The last token of the context ends the word: decoding it alone gives the word's tail.
        assert word.endswith(tokenizer.decode(direct[-1:]).strip())


def test_the_test_tokenizers_exercise_multi_token_and_opening_words(make_tokenizer, story_words, tmp_path):
    """Guards the test above: several words split into several tokens, and for the byte-level
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


def test_features_equal_the_transformers_model_on_each_context(llama_checkpoint, story_words):
    """Reference: each word's context string through the tokenizer and the transformers model,
    the hidden state at its last token. Batches of 8 padded to multiples of 16 tokens mix
    lengths and pad the last batch. Tolerance 1e-4: float32 in two frameworks."""
    _, module, reference, tokenizer = llama_checkpoint
    layers = (0, 2, 3)
    context_words = 5
    features = llama_word_features(
        module,
        tokenizer,
        story_words,
        layers=layers,
        context_words=context_words,
        batch_size=8,
        pad_multiple=16,
    )
    for layer in layers:
        assert features[layer].shape == (len(story_words), 32)
    for i in range(len(story_words)):
        text = " ".join(story_words[max(0, i - context_words) : i + 1])
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hidden = reference(ids, output_hidden_states=True).hidden_states
        for layer in layers:
            np.testing.assert_allclose(features[layer][i], hidden[layer][0, -1].numpy(), atol=1e-4, rtol=1e-4)


def test_bad_words_and_layers_raise_naming_the_story(llama_checkpoint):
    _, module, _, tokenizer = llama_checkpoint
    with pytest.raises(DataError, match="story 'beta'.*word 1 is 'two words'"):
        llama_word_features(module, tokenizer, ["one", "two words"], layers=(1,), story="beta")
    with pytest.raises(DataError, match="story 'beta'.*no words"):
        llama_word_features(module, tokenizer, [], layers=(1,), story="beta")
    with pytest.raises(ConfigError, match="story 'beta'.*layers"):
        llama_word_features(module, tokenizer, ["one"], layers=(4,), story="beta")
