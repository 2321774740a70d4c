"""LLaMA hidden states for every word of a story, each word seen after its preceding words.

Contexts
--------
Word ``i`` is fed as the text ``" ".join(words[s_i : i + 1])``, tokenised with the tokenizer's
own special tokens (BOS for LLaMA), and its feature is the hidden state at the last token of
word ``i``. The first context word ``s_i`` (:func:`context_starts`) follows one of two schemes:

- ``context_words = (lookback1, lookback2)``, the paper's and its reference code's
  (Antonello et al. 2023, ``ridge_utils/tokenization_helpers.py``): a look-back ``k``, counted
  in words, starts at 0 and grows by one per word; the word at which it reaches ``lookback2``
  is still fed with all ``lookback2`` preceding words, then ``k`` drops to ``lookback1`` and
  grows again. With ``D = lookback2 - lookback1``, words ``0 .. lookback2`` start at word 0 and
  every later word ``i`` at ``D * ceil((i - lookback2) / D)``: (256, 512) gives words 0..512
  the start 0, words 513..768 the start 256, words 769..1024 the start 512, and so on, so
  every word sees 256 to 512 preceding words (fewer in a story's first 256 words).
- ``context_words = n`` (an int): every word after its ``n`` preceding words (fewer at the
  start of the story), so a word's feature does not depend on its position.

Windows: one causal pass for many words
---------------------------------------
The words whose contexts start at the same word form a window, ``words[s : last + 1]``: each
of their contexts is a prefix of it, and in a causal model the hidden state at a token does not
depend on later tokens, so one forward pass over the window gives every one of them. Under
(256, 512) a story of ``n`` words takes about ``n / 256`` passes of up to 513 words instead of
``n`` passes; under an int look-back ``n`` the first ``n + 1`` words share one window and every
later word has its own.

Windows are batched in order of length, ``batch_size`` at a time (the last batch of a story
shrinks to a power of two), and right-padded to a bucketed length: a multiple of
``pad_multiple`` tokens at most an eighth above the longest window of the batch (steps of
1, 2, .., 16, then 18, 20, .., 32, 36, 40, ... times ``pad_multiple``). So a whole dataset
compiles for a few shapes only.

Word-to-token bookkeeping
-------------------------
Rather than tokenising one context string per window, the story is tokenised once: the whole
text ``" ".join(words)`` is tokenised with character offsets, which assign every token to the
word it lies in (a token may include the space before its word; a token reaching further back
spans two words and is refused). A word that opens a context has no space before it, which for
some tokenizers (GPT-2's byte-level BPE) changes its tokens, so every word is also tokenised
alone once. A context is then the special prefix, the opening word's stand-alone tokens, the
in-text tokens of the following words and the special suffix. This equals tokenising the
context string directly for every tokenizer that never merges across a space (LLaMA's
sentencepiece BPE, GPT-2's byte-level BPE, WordPiece); contexts of a few windows of every story
are checked against direct tokenisation, and a mismatch raises.

Differences from the reference code
-----------------------------------
The reference skips an empty word or the word ``'s``: it repeats the previous word's feature
yet counts the word in the look-back. jaxenc's word lists hold no empty words (the TextGrid
reader drops them; they are refused here), so the look-back counts agree; ``'s`` is fed like
any other word (skipping it in the reference also moves every later context one word back,
which jaxenc does not copy). For byte-level BPE models (OPT) the reference opens a context with
the first word's in-text tokens, space included; jaxenc with its stand-alone tokens, as the
context string tokenises; for LLaMA's sentencepiece tokenizer the two are the same.
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
from jaxenc.nn.sharding import data_parallel

__all__ = ["WordTokens", "word_tokens", "context_starts", "check_context_words", "llama_word_features"]

# Windows per story whose contexts are checked against direct tokenisation (evenly spaced, the
# first and last included).
_N_CHECKED = 8


@dataclasses.dataclass(frozen=True)
class WordTokens:
    """Token ids of a story's words, from which every context is assembled.

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

    def span(self, start: int, stop: int) -> np.ndarray:
        """Token ids of the text ``" ".join(words[start : stop + 1])`` with the special tokens.

        Returns
        -------
        ndarray of shape (n,), int32
            Word ``stop``'s last token is at index ``n - len(suffix) - 1``.
        """
        return np.concatenate(
            [
                np.asarray(self.prefix, np.int32),
                self.first[start],
                self.flat[self.bounds[start + 1] : self.bounds[stop + 1]],
                np.asarray(self.suffix, np.int32),
            ]
        ).astype(np.int32)

    def last_token(self, start, stop) -> np.ndarray:
        """Index of word ``stop``'s last token in :meth:`span` ``(start, stop)``; vectorised."""
        first_lengths = np.array([len(t) for t in self.first])
        start, stop = np.asarray(start), np.asarray(stop)
        inner = first_lengths[start] + self.bounds[stop + 1] - self.bounds[start + 1]
        return len(self.prefix) + inner - 1

    def span_length(self, start, stop) -> np.ndarray:
        """Number of tokens of :meth:`span` ``(start, stop)``; vectorised."""
        return self.last_token(start, stop) + 1 + len(self.suffix)


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


def check_context_words(context_words, story=None, *, name: str = "context_words", path=None):
    """Validate a context setting; returns an int or a pair of ints.

    Parameters
    ----------
    context_words : int or (int, int)
        A fixed look-back ``n >= 0``, or ``(lookback1, lookback2)`` with
        ``0 <= lookback1 < lookback2`` for the grow-and-reset scheme.
    story : str, optional
        Story named in errors.
    name : str
        The setting named in errors (e.g. ``"semantic.context_words"``).
    path : str, optional
        File named in errors (a config file).

    Raises
    ------
    ConfigError
        Anything else.
    """
    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if is_int(context_words) and context_words >= 0:
        return int(context_words)
    if (isinstance(context_words, (tuple, list)) and len(context_words) == 2
            and all(is_int(x) for x in context_words) and 0 <= context_words[0] < context_words[1]):
        return int(context_words[0]), int(context_words[1])
    raise ConfigError(
        f"{name}={context_words!r}, expected a look-back n >= 0 or a pair [lookback1, lookback2] "
        "with 0 <= lookback1 < lookback2 (the paper's [256, 512])",
        story=story,
        path=path,
    )


def context_starts(n_words: int, context_words) -> np.ndarray:
    """First word of every word's context (see the module docstring).

    Parameters
    ----------
    n_words : int
    context_words : int or (int, int)
        A fixed look-back, or ``(lookback1, lookback2)`` for the grow-and-reset scheme.

    Returns
    -------
    ndarray of shape (n_words,), int64
        ``starts[i]``: word ``i`` is fed as ``words[starts[i] : i + 1]``; non-decreasing.
    """
    context_words = check_context_words(context_words)
    i = np.arange(n_words, dtype=np.int64)
    if isinstance(context_words, int):
        return np.maximum(0, i - context_words)
    lookback1, lookback2 = context_words
    step = lookback2 - lookback1
    return np.maximum(0, -(-(i - lookback2) // step)) * step


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


@dataclasses.dataclass(frozen=True)
class _Windows:
    """The windows of a story: window ``w`` is ``words[start[w] : last[w] + 1]`` and gives the
    features of words ``first[w] .. last[w]``. Arrays of shape (n_windows,), int64."""

    start: np.ndarray
    first: np.ndarray
    last: np.ndarray
    n_tokens: np.ndarray

    @classmethod
    def of(cls, tokens: WordTokens, starts: np.ndarray) -> _Windows:
        first = np.flatnonzero(np.r_[True, starts[1:] != starts[:-1]])
        last = np.r_[first[1:] - 1, len(starts) - 1]
        return cls(starts[first], first, last, tokens.span_length(starts[first], last))


def _check_against_direct(tokenizer, tokens: WordTokens, words, windows: _Windows, story) -> None:
    """The first and last word of a few windows: their context tokens as assembled equal the
    tokenizer's on the context string (the last word's context is the whole window)."""
    checked = np.unique(np.linspace(0, len(windows.start) - 1, _N_CHECKED).round().astype(int))
    for w in checked:
        start = int(windows.start[w])
        for i in sorted({int(windows.first[w]), int(windows.last[w])}):
            direct = np.asarray(tokenizer(" ".join(words[start : i + 1]))["input_ids"], np.int32)
            if not np.array_equal(direct, tokens.span(start, i)):
                raise ConfigError(
                    f"the context of word {i} (words {start}..{i}) tokenised directly differs from "
                    "the story's tokens assembled word by word; expected a tokenizer whose tokens "
                    "never depend on the neighbouring words",
                    story=story,
                )


def _bucket(n: int, multiple: int) -> int:
    """Smallest ``multiple * u >= n`` with ``u`` in 1..16, 18, 20, .., 32, 36, 40, .., 64, 72, ...

    Steps are at most an eighth of the value, so padding adds at most 12.5% and the lengths of
    a whole dataset fall into a few buckets.
    """
    units = -(-int(n) // multiple)
    if units <= 16:
        return units * multiple
    step = 1 << (units.bit_length() - 4)
    return -(-units // step) * step * multiple


def _batches(windows: _Windows, batch_size: int, pad_multiple: int, n_shards: int):
    """Yield (window ids, rows, tokens, words) per call: windows in order of length, the call's
    batch rows (a power of two for the last batch, a multiple of ``n_shards``), padded tokens
    per row and gathered words per row."""
    batch_size = -(-batch_size // n_shards) * n_shards
    order = np.argsort(windows.n_tokens, kind="stable")
    n_words = windows.last - windows.first + 1
    for lo in range(0, len(order), batch_size):
        ids = order[lo : lo + batch_size]
        rows = min(batch_size, 1 << (len(ids) - 1).bit_length())
        rows = -(-rows // n_shards) * n_shards
        yield ids, rows, _bucket(windows.n_tokens[ids].max(), pad_multiple), _bucket(n_words[ids].max(), 1)


@nnx.jit(static_argnames="layers")
def _hidden_at(module, input_ids, attention_mask, index, layers):
    hidden = module(input_ids, attention_mask)
    # [b, k, m] each: the hidden state at every gathered word's last token.
    return tuple(jnp.take_along_axis(hidden[layer], index[:, :, None], axis=1).astype(jnp.float32)
                 for layer in layers)


def llama_word_features(
    module,
    tokenizer,
    words: Sequence[str],
    *,
    layers: Sequence[int],
    context_words=(256, 512),
    batch_size: int = 16,
    pad_multiple: int = 64,
    dtype=np.float32,
    story: str | None = None,
    progress: bool = False,
    mesh=None,
    axis: str = "data",
) -> dict[int, np.ndarray]:
    """Hidden states of a causal language model at the last token of every word in context.

    See the module docstring for the contexts, the windows and the tokenisation.

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
    context_words : (int, int) or int, default (256, 512)
        ``(lookback1, lookback2)``: the paper's grow-and-reset look-back; an int ``n``: every
        word after its ``n`` preceding words.
    batch_size : int, default 16
        Windows per compiled call (rounded up to a multiple of the mesh axis).
    pad_multiple : int, default 64
        Windows are right-padded (masked) to a bucketed multiple of this many tokens.
    dtype : numpy dtype, default float32
        Dtype of the returned features.
    story : str, optional
        Story named in errors.
    progress : bool, default False
        Show a tqdm bar over batches.
    mesh : jax.sharding.Mesh, optional
        Split every batch of windows along ``axis`` of this mesh (data parallel, one host).
        Parameters not yet on the mesh are placed there (replicated, or FSDP-sharded when they
        do not fit one device; see :mod:`jaxenc.nn.sharding`).
    axis : str, default "data"
        Mesh axis of the batch.

    Returns
    -------
    dict of int to ndarray of shape (n_words, hidden_size)
        One array per requested layer, rows in word order.

    Raises
    ------
    DataError
        No words, or a word that is empty or holds whitespace.
    ConfigError
        Layers outside the model, a bad context setting, a tokenizer whose tokens cross words,
        or assembled contexts that differ from direct tokenisation.
    """
    words = _check_words(words, story)
    layers = tuple(int(layer) for layer in layers)
    if not layers or any(not 0 <= layer <= module.max_layer for layer in layers):
        raise ConfigError(
            f"layers={layers}, expected a non-empty subset of 0..{module.max_layer} (the model's max_layer)",
            story=story,
        )
    context_words = check_context_words(context_words, story)
    if batch_size < 1 or pad_multiple < 1:
        raise ConfigError(
            f"expected batch_size >= 1 and pad_multiple >= 1, got {batch_size}, {pad_multiple}", story=story
        )
    tokens = word_tokens(tokenizer, words, story=story)
    starts = context_starts(len(words), context_words)
    windows = _Windows.of(tokens, starts)
    _check_against_direct(tokenizer, tokens, words, windows, story)

    n_shards, place = data_parallel(module, mesh, axis)
    offsets = tokens.last_token(starts, np.arange(len(words)))  # each word's index in its window
    features = {layer: np.empty((len(words), module.config.hidden_size), dtype) for layer in layers}

    def collect(word_ids, outputs):
        valid = word_ids >= 0
        for layer, out in zip(layers, jax.device_get(outputs), strict=True):
            features[layer][word_ids[valid]] = out[valid]

    pending = []
    batches = list(_batches(windows, batch_size, pad_multiple, n_shards))
    for ids, rows, seq, k in tqdm(batches, desc=f"llama {story or ''}".strip(), disable=not progress, leave=False):
        input_ids = np.zeros((rows, seq), np.int32)
        mask = np.zeros((rows, seq), np.int32)
        index = np.zeros((rows, k), np.int32)
        word_ids = np.full((rows, k), -1, np.int64)
        for r, w in enumerate(ids):
            span = tokens.span(int(windows.start[w]), int(windows.last[w]))
            input_ids[r, : len(span)] = span
            mask[r, : len(span)] = 1
            gathered = np.arange(windows.first[w], windows.last[w] + 1)
            index[r, : len(gathered)] = offsets[gathered]
            word_ids[r, : len(gathered)] = gathered
        # Rows past the last window hold one padding token, unmasked so that its attention has a
        # key; their outputs are never collected.
        mask[len(ids) :, 0] = 1
        outputs = _hidden_at(module, place(input_ids), place(mask), place(index), layers)
        pending.append((word_ids, outputs))
        # Asynchronous dispatch overlaps building the next batch with this one; at most two
        # batches wait, so inputs never pile up in device memory.
        if len(pending) > 2:
            collect(*pending.pop(0))
    for item in pending:
        collect(*item)
    return features
