"""Tiny random-initialised Whisper and LLaMA checkpoints, saved locally and loaded through jaxenc.ckpt.

Nothing is downloaded: the models come from transformers configs, the tokenizers are trained
here with the ``tokenizers`` library on a few sentences.
"""

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from jaxenc.ckpt import load_llama, load_whisper_encoder

SAMPLE_RATE = 16000

CORPUS = [
    "once upon a time there was a little house at the edge of the unfamiliar forest",
    "the quick brown fox jumps over the lazy dog and walks slowly into the kitchen",
    "she remembered the extraordinary summer when everything seemed possible",
]

STORY_WORDS = (
    "once upon a time the extraordinary fox walked slowly into the unfamiliar kitchen and there "
    "was a little lazy dog sleeping by the house she remembered everything"
).split()


def _train(tok: Tokenizer, pre_tokenizer) -> Tokenizer:
    tok.pre_tokenizer = pre_tokenizer
    # A small vocabulary leaves the longer words split into several tokens.
    trainer = trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def _make_tokenizer(kind: str, directory):
    """A BPE tokenizer of one of three designs, saved and reloaded through transformers.

    "sentencepiece": LLaMA-1's tokenizer.json design: normalizers prepend "▁" and turn spaces
    into "▁", no pre-tokenizer at run time (trained split at "▁", as sentencepiece trains).
    "metaspace": the newer Metaspace pre-tokenizer design of LLaMA-family tokenizers.
    "bytelevel": GPT-2's byte-level BPE without a prefix space, where a word opening a text
    tokenises differently from the same word after a space.
    """
    if kind == "sentencepiece":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok = _train(tok, pre_tokenizers.Split("▁", behavior="merged_with_next"))
        tok.pre_tokenizer = None
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    elif kind == "metaspace":
        tok = _train(
            Tokenizer(models.BPE(unk_token="<unk>")),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        )
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    else:
        tok = _train(
            Tokenizer(models.BPE(unk_token="<unk>")), pre_tokenizers.ByteLevel(add_prefix_space=False)
        )
        tok.decoder = decoders.ByteLevel()
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    wrapped.save_pretrained(directory)
    return transformers.AutoTokenizer.from_pretrained(directory)


def write_tiny_whisper(directory):
    """Save a tiny random-init Whisper (seed 0) and its feature extractor; return both."""
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=64,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=32,
        decoder_start_token_id=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    reference = transformers.WhisperModel(config).eval()
    reference.save_pretrained(directory)
    feature_extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    feature_extractor.save_pretrained(directory)
    return reference, feature_extractor


def write_tiny_llama(directory):
    """Save a tiny random-init LLaMA (seed 0) with a sentencepiece-style tokenizer; return both."""
    tokenizer = _make_tokenizer("sentencepiece", directory)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
    )
    reference = transformers.LlamaForCausalLM(config).eval()
    reference.save_pretrained(directory)
    return reference, tokenizer


@pytest.fixture(scope="session")
def whisper_checkpoint(tmp_path_factory):
    """(directory, jaxenc module, torch reference encoder, feature extractor) of a tiny Whisper."""
    directory = tmp_path_factory.mktemp("whisper")
    reference, feature_extractor = write_tiny_whisper(directory)
    module, _ = load_whisper_encoder(directory)
    return directory, module, reference.encoder, feature_extractor


@pytest.fixture(scope="session")
def llama_checkpoint(tmp_path_factory):
    """(directory, jaxenc module, torch reference model, tokenizer) of a tiny LLaMA."""
    directory = tmp_path_factory.mktemp("llama")
    reference, tokenizer = write_tiny_llama(directory)
    module, _ = load_llama(directory)
    return directory, module, reference.model, tokenizer


def _waveform(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    voiced = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 540, 1200), 1))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 2.3 * t))
    wave = 0.2 * voiced * envelope + 0.02 * rng.standard_normal(t.shape)
    wave[(t > 1.0) & (t < 1.3)] = 0.0
    return wave.astype(np.float32)


@pytest.fixture(scope="session")
def waveform():
    """``waveform(seconds, seed=0)``: a speech-like 16 kHz signal (modulated harmonics, noise, a gap)."""
    return _waveform


@pytest.fixture(scope="session")
def make_tokenizer():
    """``make_tokenizer(kind, directory)``, kind "sentencepiece", "metaspace" or "bytelevel"."""
    return _make_tokenizer


@pytest.fixture(scope="session")
def story_words():
    """A short story's words, some of them split into several tokens by the test tokenizers."""
    return list(STORY_WORDS)
