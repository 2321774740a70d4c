"""The embedded default checkpoints: valid Hugging Face folders, loaded by jaxenc and by transformers.

Small sizes keep the tests fast; the writer code is the same at the demo's sizes.
"""

import hashlib
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from transformers.models.whisper.modeling_whisper import sinusoids

from jaxenc.ckpt import load_llama, load_whisper_encoder
from jaxenc.errors import ConfigError
from jaxenc.features import LogMelFrontend, defaults, llama_word_features
from tests._tolerance import U32, llama_layer_atol, llama_state_atols, whisper_state_atols

WHISPER_SIZES = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                     max_source_positions=50)
LLAMA_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2)
TRANSCRIPTS = [
    "once upon a time there was a little house at the edge of the unfamiliar forest",
    "the quick brown fox jumps over the lazy dog",
    "she remembered the extraordinary summer when everything seemed possible",
]
TRAINING_WORDS = sorted({w for text in TRANSCRIPTS for w in text.split()})


def file_digests(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return defaults.write_default_whisper(tmp_path_factory.mktemp("default") / "whisper", seed=3, **WHISPER_SIZES)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return defaults.write_default_llama(
        tmp_path_factory.mktemp("default") / "llama", TRANSCRIPTS, seed=3, **LLAMA_SIZES
    )


def test_whisper_hidden_states_match_transformers(whisper_dir):
    model, config = load_whisper_encoder(whisper_dir)
    assert (config.d_model, config.encoder_layers, config.num_mel_bins) == (32, 2, 80)
    reference = transformers.WhisperModel.from_pretrained(whisper_dir, dtype=torch.float32).encoder.eval()
    x = np.random.default_rng(0).standard_normal((2, 80, 100)).astype(np.float32)
    with torch.inference_mode():
        expected = reference(torch.from_numpy(x), output_hidden_states=True).hidden_states
    got = nnx.jit(lambda m, v: m(v))(model, jnp.asarray(x))
    assert len(got) == len(expected) == 3
    # Float32 parity within the forward pass's rounding (tests/_tolerance.py), about 1e-5 of
    # each state's scale; a wrong weight, position or GELU moves the states by 1e-3 of it.
    expected = [e.numpy() for e in expected]
    for g, e, atol in zip(got, expected, whisper_state_atols(config, 50, expected), strict=True):
        np.testing.assert_allclose(np.asarray(g), e, rtol=0, atol=atol)


def test_whisper_weights_follow_the_documented_init(whisper_dir):
    from safetensors.numpy import load_file

    tensors = load_file(whisper_dir / "model.safetensors")
    assert all(name.startswith("encoder.") for name in tensors)
    # Whisper's fixed sinusoidal position table, as transformers builds it (its angles are
    # float32 products, ours float64: they part by up to ~1e-6 at large positions).
    # sin and cos of angles up to 49 rad, rounded by u * 49 in float32: that, plus the functions'
    # own rounding (2 u). A table off by one position or frequency differs by 1e-2 or more.
    np.testing.assert_allclose(tensors["encoder.embed_positions.weight"], sinusoids(50, 32).numpy(),
                               atol=U32 * 49 + 2 * U32)
    for name, fan_in in [("encoder.conv1.weight", 80 * 3), ("encoder.layers.0.fc1.weight", 32),
                         ("encoder.layers.1.fc2.weight", 64)]:
        assert abs(tensors[name].std() * np.sqrt(fan_in) - 1) < 0.1, name
    assert not tensors["encoder.layers.0.fc1.bias"].any()
    np.testing.assert_array_equal(tensors["encoder.layer_norm.weight"], 1.0)


def test_whisper_front_end_is_whispers(whisper_dir):
    frontend = LogMelFrontend.from_pretrained(whisper_dir)
    reference = transformers.WhisperFeatureExtractor.from_pretrained(whisper_dir)
    assert (frontend.feature_size, frontend.sampling_rate, frontend.hop_length) == (80, 16000, 160)
    np.testing.assert_allclose(frontend.mel_filters, reference.mel_filters, rtol=1e-6, atol=1e-9)


def test_llama_hidden_states_match_transformers(llama_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama_dir)
    model, config = load_llama(llama_dir)
    assert config.vocab_size == len(tokenizer)
    reference = transformers.LlamaModel.from_pretrained(llama_dir, dtype=torch.float32).eval()
    ids = np.asarray([tokenizer(TRANSCRIPTS[0])["input_ids"]], np.int32)
    mask = np.ones_like(ids)
    with torch.inference_mode():
        expected = reference(
            input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
            output_hidden_states=True,
        ).hidden_states
    got = model(jnp.asarray(ids), jnp.asarray(mask))
    assert len(got) == len(expected) == 3
    expected = [e.numpy() for e in expected]
    for g, e, atol in zip(got, expected, llama_state_atols(config, ids.shape[1], expected), strict=True):
        np.testing.assert_allclose(np.asarray(g), e, rtol=0, atol=atol)


def test_llama_word_features_match_transformers_at_each_word(llama_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama_dir)
    model, config = load_llama(llama_dir)
    reference = transformers.LlamaModel.from_pretrained(llama_dir, dtype=torch.float32).eval()
    words = "the little fox walked into the unfamiliar kitchen".split()  # "walked", "kitchen" unseen
    features = llama_word_features(model, tokenizer, words, layers=(0, 2), context_words=3, batch_size=4)
    for i in range(len(words)):
        ids = tokenizer(" ".join(words[max(0, i - 3) : i + 1]), return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            states = reference(input_ids=ids, output_hidden_states=True).hidden_states
        for layer in (0, 2):
            expected = states[layer][0, -1].numpy()
            atol = llama_layer_atol(config, ids.shape[1], layer, expected, final_norm=layer == 2)
            np.testing.assert_allclose(features[layer][i], expected, rtol=0, atol=atol)


def test_llama_weights_follow_the_documented_init(llama_dir):
    from safetensors.numpy import load_file

    tensors = load_file(llama_dir / "model.safetensors")
    assert abs(tensors["embed_tokens.weight"].std() - 1) < 0.05
    for name, fan_in in [("layers.0.self_attn.q_proj.weight", 32), ("layers.1.mlp.down_proj.weight", 64)]:
        assert abs(tensors[name].std() * np.sqrt(fan_in) - 1) < 0.15, name
    np.testing.assert_array_equal(tensors["norm.weight"], 1.0)


def test_every_training_word_is_one_token(llama_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama_dir)
    alone = tokenizer(TRAINING_WORDS, add_special_tokens=False)["input_ids"]
    assert all(len(ids) == 1 for ids in alone)
    assert len({ids[0] for ids in alone}) == len(TRAINING_WORDS)
    text = " ".join(TRAINING_WORDS)
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == len(TRAINING_WORDS) + 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_unseen_words_still_tokenize(llama_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama_dir)
    # "houses": the known word plus a character; "7", a character never seen, maps to <unk>.
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("houses 7", add_special_tokens=False)["input_ids"])
    assert tokens == ["\u2581house", "s", "\u2581", "<unk>"]
    assert tokenizer.decode(tokenizer("the houses")["input_ids"], skip_special_tokens=True) == "the houses"


def test_same_parameters_give_identical_bytes(tmp_path, whisper_dir, llama_dir):
    again_w = defaults.write_default_whisper(tmp_path / "w", seed=3, **WHISPER_SIZES)
    # Order and repetition of the words do not matter.
    again_l = defaults.write_default_llama(tmp_path / "l", TRANSCRIPTS[::-1] + TRANSCRIPTS[:1], seed=3, **LLAMA_SIZES)
    assert file_digests(again_w) == file_digests(whisper_dir)
    assert file_digests(again_l) == file_digests(llama_dir)
    marker = json.loads((again_l / "jaxenc_default.json").read_text())
    assert marker["seed"] == 3 and marker["sizes"]["hidden_size"] == 32 and "random" in marker["note"].lower()


def test_complete_folder_is_reused_and_changes_rewrite(tmp_path):
    path = tmp_path / "w"
    defaults.write_default_whisper(path, **WHISPER_SIZES)
    weights = path / "model.safetensors"
    first = (weights.stat().st_ino, weights.stat().st_mtime_ns)
    defaults.write_default_whisper(path, **WHISPER_SIZES)
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) == first
    defaults.write_default_whisper(path, **{**WHISPER_SIZES, "d_model": 64})
    assert load_whisper_encoder(path)[1].d_model == 64
    defaults.write_default_whisper(path, seed=1, **{**WHISPER_SIZES, "d_model": 64})
    assert json.loads((path / "jaxenc_default.json").read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_changed_words_rewrite_the_tokenizer(tmp_path):
    path = tmp_path / "l"
    defaults.write_default_llama(path, ["alpha beta"], **LLAMA_SIZES)
    defaults.write_default_llama(path, ["alpha beta gamma"], **LLAMA_SIZES)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    assert len(tokenizer("gamma", add_special_tokens=False)["input_ids"]) == 1


def test_incomplete_folder_is_rewritten(tmp_path):
    path = defaults.write_default_whisper(tmp_path / "w", **WHISPER_SIZES)
    (path / "model.safetensors").unlink()
    defaults.write_default_whisper(path, **WHISPER_SIZES)
    load_whisper_encoder(path)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.numpy

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        defaults.write_default_whisper(tmp_path / "w", **WHISPER_SIZES)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "sizes, match",
    [
        ({"d_model": 30, "encoder_attention_heads": 4}, "multiple of the heads"),
        ({"encoder_layers": 0}, "positive integer"),
        ({"n_layers": 2}, "unknown Whisper sizes"),
    ],
)
def test_bad_whisper_sizes_raise(tmp_path, sizes, match):
    with pytest.raises(ConfigError, match=match) as error:
        defaults.write_default_whisper(tmp_path / "w", **{**WHISPER_SIZES, **sizes})
    assert str(tmp_path / "w") in str(error.value)


@pytest.mark.parametrize(
    "words, sizes, match",
    [
        (["a b"], {"num_key_value_heads": 3}, "key/value heads"),
        (["a b"], {"hidden_size": 2.5}, "positive integer"),
        ([], {}, "no words"),
        ("a b", {}, "one string"),
    ],
)
def test_bad_llama_arguments_raise(tmp_path, words, sizes, match):
    with pytest.raises(ConfigError, match=match) as error:
        defaults.write_default_llama(tmp_path / "l", words, **{**LLAMA_SIZES, **sizes})
    assert str(tmp_path / "l") in str(error.value)


def test_foreign_folder_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="jaxenc_default.json"):
        defaults.write_default_whisper(tmp_path, **WHISPER_SIZES)
    assert (tmp_path / "notes.txt").read_text() == "mine"
