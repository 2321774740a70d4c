"""LLaMA hidden states for every word of a story, each word seen after its preceding words.

Word-to-token bookkeeping
-------------------------
Word ``i`` is fed as the text ``" ".join(words[max(0, i - context_words) : i + 1])``, tokenised
with the tokenizer's own special tokens (BOS for LLaMA), and its feature is the hidden state at
the last token of word ``i``. Rather than tokenising one context string per word, the story is
tokenised once: the whole text ``" ".join(words)`` is tokenised with character offsets, which
assign every token to the word it lies in (a token may include the space before its word; a
token reaching further back spans two words and is refused). A word that opens a context has
no space before it, which for some tokenizers (GPT-2's byte-level BPE) changes its tokens, so
every word is also tokenised alone once. A context is then the special prefix, the opening
word's stand-alone tokens, the in-text tokens of the following words and the special suffix.
This equals tokenising the context string directly for every tokenizer that never merges across
a space (LLaMA's sentencepiece BPE, GPT-2's byte-level BPE, WordPiece); a few contexts of every
story are checked against direct tokenisation, and a mismatch raises.

The scaling-laws reference code (Antonello et al. 2023) lets the context grow from 256 to 512
words and then drops back to 256; here every word gets the same ``context_words`` preceding
words (fewer at the start of the story), so a word's feature does not depend on its position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jaxenc.errors import ConfigError, DataError

__all__ = ["WordTokens", "word_tokens", "llama_word_features"]

# Contexts checked against direct tokenisation per story (evenly spaced, first and last included).
_N_CHECKED = 8


@dataclasses.dataclass(frozen=True)
class WordTokens:
    """Token ids of a story's words, from which every word's context is assembled.

    Attributes
    ----------
    flat : ndarray of shape (n_tokens,), int32
        In-text tokens of the whole story (``" ".join(words)``), no special tokens.
    bounds : ndarray of shape (n_words + 1,), int64
        Word ``i`` owns ``flat[bounds[i]:bounds[i + 1]]``.
    first : list of ndarray of int32
        ``first[i]``: the tokens of word ``i`` when it opens a text.
    prefix, suffix : tuple of int
        Special tokens the tokenizer puts before and after a text (e.g. BOS and nothing).
    """

    flat: np.ndarray
    bounds: np.ndarray
    first: list
    prefix: tuple
    suffix: tuple

    def context(self, i: int, context_words: int) -> np.ndarray:
        """Token ids of word ``i`` after its ``context_words`` preceding words, with specials.

        Returns
        -------
        ndarray of shape (n,), int32
            Word ``i``'s last token is at index ``n - len(suffix) - 1``.
        """
        s = max(0, i - context_words)
        return np.concatenate(
            [
                np.asarray(self.prefix, np.int32),
                self.first[s],
                self.flat[self.bounds[s + 1] : self.bounds[i + 1]],
                np.asarray(self.suffix, np.int32),
            ]
        ).astype(np.int32)

    def context_length(self, i: int, context_words: int) -> int:
        """Number of tokens of :meth:`context` ``(i, context_words)``."""
        s = max(0, i - context_words)
        inner = len(self.first[s]) + int(self.bounds[i + 1] - self.bounds[s + 1])
        return len(self.prefix) + inner + len(self.suffix)


def _check_words(words: Sequence[str], story) -> list[str]:
    words = list(words)
    if not words:
        raise DataError("no words, expected at least one", story=story)
    for i, word in enumerate(words):
        if not isinstance(word, str) or not word or word != "".join(word.split()):
            raise DataError(
                f"word {i} is {word!r}, expected a non-empty string without whitespace", story=story
            )
    return words


def _special_tokens(tokenizer, word: str) -> tuple[tuple, tuple]:
    """The special tokens the tokenizer adds around a text, found by tokenising one word both ways."""
    bare = list(tokenizer(word, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(word)["input_ids"])
    for k in range(len(full) - len(bare) + 1):
        if full[k : k + len(bare)] == bare:
            return tuple(full[:k]), tuple(full[k + len(bare) :])
    raise ConfigError(f"the tokenizer's special tokens wrap {word!r} in a way that changes its tokens")


def word_tokens(tokenizer, words: Sequence[str], *, story: str | None = None) -> WordTokens:
    """Tokenise a story once and assign every token to its word.

    Parameters
    ----------
    tokenizer : transformers fast tokenizer
        Must return offsets (``return_offsets_mapping``), as every tokenizers-backed one does.
    words : sequence of str
        The story's words in order, without whitespace.
    story : str, optional
        Story named in errors.

    Returns
    -------
    WordTokens

    Raises
    ------
    DataError
        No words, or an empty word or one holding whitespace.
    ConfigError
        A slow tokenizer, a token spanning two words, or a word that gets no token.
    """
    words = _check_words(words, story)
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("expected a fast (tokenizers-backed) tokenizer that returns offsets", story=story)
    lengths = np.array([len(w) for w in words])
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])  # character offset of each word
    ends = starts + lengths
    encoded = tokenizer(" ".join(words), add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(encoded["input_ids"], np.int32)
    offsets = np.asarray(encoded["offset_mapping"], np.int64).reshape(-1, 2)
    # A token belongs to the word holding its last character; a token ending on the space
    # before a word (a lone "▁") belongs to that following word.
    last_char = np.maximum(offsets[:, 1] - 1, offsets[:, 0])
    owner = np.searchsorted(starts, last_char, side="right") - 1
    owner = owner + (last_char >= ends[owner])
    crossing = offsets[:, 0] < starts[np.minimum(owner, len(words) - 1)] - 1
    if np.any(owner >= len(words)) or np.any(crossing) or np.any(np.diff(owner) < 0):
        bad = int(np.argmax(crossing | (owner >= len(words))))
        raise ConfigError(
            f"token {bad} ({tokenizer.convert_ids_to_tokens(int(ids[bad]))!r}) spans a word boundary; "
            "expected a tokenizer that never merges across spaces",
            story=story,
        )
    bounds = np.searchsorted(owner, np.arange(len(words) + 1), side="left")
    empty = np.flatnonzero(np.diff(bounds) == 0)
    if len(empty):
        raise ConfigError(f"word {int(empty[0])} ({words[empty[0]]!r}) has no token", story=story)
    unique = sorted(set(words))
    alone = tokenizer(unique, add_special_tokens=False)["input_ids"]
    by_word = {w: np.asarray(t, np.int32) for w, t in zip(unique, alone, strict=True)}
    prefix, suffix = _special_tokens(tokenizer, words[0])
    return WordTokens(ids, bounds, [by_word[w] for w in words], prefix, suffix)


def _check_against_direct(tokenizer, tokens: WordTokens, words, context_words, story) -> None:
    checked = np.unique(np.linspace(0, len(words) - 1, _N_CHECKED).round().astype(int))
    for i in checked:
        text = " ".join(words[max(0, i - context_words) : i + 1])
        direct = np.asarray(tokenizer(text)["input_ids"], np.int32)
        if not np.array_equal(direct, tokens.context(i, context_words)):
            raise ConfigError(
                f"the context of word {i} tokenised directly differs from the story's tokens "
                "assembled word by word; expected a tokenizer whose tokens never depend on the "
                "neighbouring words",
                story=story,
            )


@nnx.jit(static_argnames="layers")
def _hidden_at(module, input_ids, attention_mask, index, layers):
    hidden = module(input_ids, attention_mask)
    rows = jnp.arange(input_ids.shape[0])
    return tuple(hidden[layer][rows, index].astype(jnp.float32) for layer in layers)  # [b, m] each


def llama_word_features(
    module,
    tokenizer,
    words: Sequence[str],
    *,
    layers: Sequence[int],
    context_words: int = 256,
    batch_size: int = 16,
    pad_multiple: int = 64,
    dtype=np.float32,
    story: str | None = None,
    progress: bool = False,
) -> dict[int, np.ndarray]:
    """Hidden states of a causal language model at the last token of every word in context.

    See the module docstring for how contexts are built and tokenised.

    Parameters
    ----------
    module : jaxenc.nn.LlamaModel
        The model (possibly built with ``max_layer``); its compute dtype is the one it was
        loaded with.
    tokenizer : transformers fast tokenizer
        The model's tokenizer; its special tokens (BOS) are added as its config says.
    words : sequence of str
        The story's words in order (lowercase, no punctuation, no whitespace).
    layers : sequence of int
        Hidden states to return: 0 is the token embeddings, ``i`` the output of layer ``i``
        (up to ``module.max_layer``).
    context_words : int, default 256
        Preceding words fed before each word (fewer at the start of the story).
    batch_size : int, default 16
        Contexts per compiled call; the last batch is padded to this size.
    pad_multiple : int, default 64
        Contexts are right-padded (masked) to a multiple of this many tokens; contexts are
        batched in order of length, so a story compiles for a few lengths only.
    dtype : numpy dtype, default float32
        Dtype of the returned features.
    story : str, optional
        Story named in errors.
    progress : bool, default False
        Show a tqdm bar over batches.

    Returns
    -------
    dict of int to ndarray of shape (n_words, hidden_size)
        One array per requested layer, rows in word order.

    Raises
    ------
    DataError
        No words, or a word that is empty or holds whitespace.
    ConfigError
        Layers outside the model, a negative context, a tokenizer whose tokens cross words, or
        assembled contexts that differ from direct tokenisation.
    """
    words = _check_words(words, story)
    layers = tuple(int(layer) for layer in layers)
    if not layers or any(not 0 <= layer <= module.max_layer for layer in layers):
        raise ConfigError(
            f"layers={layers}, expected a non-empty subset of 0..{module.max_layer} (the model's max_layer)",
            story=story,
        )
    if context_words < 0 or batch_size < 1 or pad_multiple < 1:
        raise ConfigError(
            f"expected context_words >= 0, batch_size >= 1 and pad_multiple >= 1, got "
            f"{context_words}, {batch_size}, {pad_multiple}",
            story=story,
        )
    tokens = word_tokens(tokenizer, words, story=story)
    _check_against_direct(tokenizer, tokens, words, context_words, story)

    n_words = len(words)
    lengths = np.array([tokens.context_length(i, context_words) for i in range(n_words)])
    order = np.argsort(lengths, kind="stable")
    features = {layer: np.empty((n_words, module.config.hidden_size), dtype) for layer in layers}

    def collect(lo, outputs):
        n = min(batch_size, n_words - lo)
        for layer, out in zip(layers, jax.device_get(outputs), strict=True):
            features[layer][order[lo : lo + n]] = out[:n]

    pending = []
    batches = range(0, n_words, batch_size)
    for lo in tqdm(batches, desc=f"llama {story or ''}".strip(), disable=not progress, leave=False):
        # Pad the last batch by repeating its final context so every call has the same shape.
        rows = order[np.minimum(np.arange(lo, lo + batch_size), n_words - 1)]
        seq = -(-int(lengths[rows].max()) // pad_multiple) * pad_multiple
        ids = np.zeros((batch_size, seq), np.int32)
        mask = np.zeros((batch_size, seq), np.int32)
        for r, i in enumerate(rows):
            ids[r, : lengths[i]] = tokens.context(int(i), context_words)
            mask[r, : lengths[i]] = 1
        index = jnp.asarray(lengths[rows] - len(tokens.suffix) - 1, jnp.int32)
        pending.append((lo, _hidden_at(module, jnp.asarray(ids), jnp.asarray(mask), index, layers)))
        # Asynchronous dispatch overlaps building the next batch with this one; at most two
        # batches wait, so inputs never pile up in device memory.
        if len(pending) > 2:
            collect(*pending.pop(0))
    for item in pending:
        collect(*item)
    return features
