"""The Whisper audio encoder (OpenAI tiny .. large-v3) as a Flax NNX module.

Module and attribute names follow transformers' ``WhisperEncoder`` (``conv1``, ``layers.3.self_attn
.k_proj``, ``layer_norm``, ...) so that :mod:`jaxenc.ckpt` maps checkpoint keys one to one; only
the leaf names are flax's (``kernel``, ``bias``, ``scale``, ``embedding``).

Unlike the transformers model, which insists on 30 s of audio (3000 mel frames), this port takes
any number of frames up to that and uses the first ``n_frames // 2`` position embeddings, so a
16.1 s window can run as 1610 frames (805 positions). :func:`jaxenc.features.whisper_features`
pads each window to 30 s by default (``input_s``), as the feature extractor does.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxenc import precision as matmul
from jaxenc.errors import ConfigError
from jaxenc.nn.layers import attention, attention_route, layer_norm

__all__ = ["WhisperEncoderConfig", "WhisperEncoder"]

# transformers builds every Whisper LayerNorm with torch's default epsilon; no config field sets it.
_LAYER_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class WhisperEncoderConfig:
    """Shape of a Whisper encoder; field names are those of ``transformers.WhisperConfig``.

    Defaults are Whisper large (v1/v2), the encoder the paper's audio features come from.
    """

    # Mel frequency bins of the input log-mel spectrogram (80; 128 for large-v3).
    num_mel_bins: int = 80
    # Width of the residual stream and of every hidden state.
    d_model: int = 1280
    # Number of transformer layers.
    encoder_layers: int = 32
    # Attention heads per layer; d_model must be a multiple.
    encoder_attention_heads: int = 20
    # Width of the feed-forward hidden layer.
    encoder_ffn_dim: int = 5120
    # Number of learned positions: the longest input is 2 * max_source_positions mel frames.
    max_source_positions: int = 1500
    # Feed-forward activation; OpenAI's checkpoints all use the exact (erf) GELU.
    activation_function: str = "gelu"

    def __post_init__(self):
        if self.d_model % self.encoder_attention_heads:
            raise ConfigError(
                f"d_model={self.d_model} is not a multiple of encoder_attention_heads="
                f"{self.encoder_attention_heads}"
            )
        if self.activation_function != "gelu":
            raise ConfigError(
                f"activation_function={self.activation_function!r} is not supported; expected 'gelu'"
            )

    @classmethod
    def from_hf(cls, config) -> WhisperEncoderConfig:
        """Build from a ``transformers.WhisperConfig`` (or any object with the same attributes)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


class WhisperAttention(nnx.Module):
    """Bidirectional multi-head self-attention; ``k_proj`` has no bias, as in OpenAI's model."""

    def __init__(self, config: WhisperEncoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs, route: str = "auto"):
        m, self.num_heads = config.d_model, config.encoder_attention_heads
        self.head_dim = m // self.num_heads
        self.route = route
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = nnx.Linear(m, m, **kw)
        self.k_proj = nnx.Linear(m, m, use_bias=False, **kw)
        self.v_proj = nnx.Linear(m, m, **kw)
        self.out_proj = nnx.Linear(m, m, **kw)

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Map queries (batch, seq, d_model) to (batch, seq, d_model), attending over ``context``
        (batch, t, d_model): the keys and values, ``x`` itself when omitted."""
        context = x if context is None else context
        b, s, _ = x.shape
        t = context.shape[1]
        # Scaling the queries before the product (not the scores after) is Whisper's order.
        q = (self.q_proj(x) * self.head_dim**-0.5).reshape(b, s, self.num_heads, self.head_dim)  # [b, s, h, d]
        k = self.k_proj(context).reshape(b, t, self.num_heads, self.head_dim)  # [b, t, h, d]
        v = self.v_proj(context).reshape(b, t, self.num_heads, self.head_dim)  # [b, t, h, d]
        return self.out_proj(attention(q, k, v, scale=1.0, route=self.route))


class WhisperEncoderLayer(nnx.Module):
    """Pre-LayerNorm transformer layer: x + attn(ln(x)), then x + fc2(gelu(fc1(ln(x))))."""

    def __init__(self, config: WhisperEncoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs, route: str = "auto"):
        m, f = config.d_model, config.encoder_ffn_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = WhisperAttention(config, route=route, **kw)
        self.self_attn_layer_norm = layer_norm(_LAYER_NORM_EPS, m, **kw)
        self.fc1 = nnx.Linear(m, f, **kw)
        self.fc2 = nnx.Linear(f, m, **kw)
        self.final_layer_norm = layer_norm(_LAYER_NORM_EPS, m, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Map (batch, seq, d_model) to (batch, seq, d_model)."""
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(_gelu(self.fc1(self.final_layer_norm(x))))

    def at(self, x: jax.Array, frame: jax.Array) -> jax.Array:
        """This layer's output at one position per row: (batch, seq, d_model), (batch,) -> (batch, d_model).

        Keys and values still come from every position; queries, the output projection and the
        feed-forward run for the one position only.
        """
        rows = jnp.arange(x.shape[0])
        x_at = x[rows, frame][:, None]  # [b, 1, m]
        normed = self.self_attn_layer_norm(x)  # [b, s, m]
        y = x_at + self.self_attn(normed[rows, frame][:, None], normed)  # [b, 1, m]
        return (y + self.fc2(_gelu(self.fc1(self.final_layer_norm(y)))))[:, 0]


class WhisperEncoder(nnx.Module):
    """Whisper's audio encoder, returning every hidden state.

    Parameters
    ----------
    config : WhisperEncoderConfig
        Model shape.
    dtype : jnp.dtype
        Compute dtype (float32 or bfloat16).
    param_dtype : jnp.dtype
        Parameter dtype.
    rngs : nnx.Rngs
        Random initialisation (overwritten when loading a checkpoint with :mod:`jaxenc.ckpt`).
    precision : str
        Matrix-product precision of the forward pass (:mod:`jaxenc.precision`); ``"auto"``:
        full float32 for a float32 model, the operands' own for a 16-bit one.
    attention : str
        Attention implementation (:data:`jaxenc.nn.layers.ATTENTION_ROUTES`); ``"auto"`` by
        platform.
    """

    def __init__(
        self, config: WhisperEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs,
        precision: str = matmul.DEFAULTS["extraction"], attention: str = "auto",
    ):
        self.config = config
        self.dtype = dtype
        self.precision = matmul.check(precision, "precision", auto=True)
        attention_route(attention, dtype, config.d_model // config.encoder_attention_heads)  # checks the name
        m = config.d_model
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = nnx.Conv(config.num_mel_bins, m, kernel_size=(3,), padding=((1, 1),), **kw)
        self.conv2 = nnx.Conv(m, m, kernel_size=(3,), strides=(2,), padding=((1, 1),), **kw)
        self.embed_positions = nnx.Embed(config.max_source_positions, m, **kw)
        self.layers = nnx.List([WhisperEncoderLayer(config, route=attention, **kw)
                                for _ in range(config.encoder_layers)])
        self.layer_norm = layer_norm(_LAYER_NORM_EPS, m, **kw)

    def __call__(self, input_features: jax.Array) -> tuple[jax.Array, ...]:
        """Encode log-mel spectrograms.

        Parameters
        ----------
        input_features : jax.Array
            Shape (batch, num_mel_bins, n_frames), the layout of ``WhisperFeatureExtractor``;
            ``n_frames`` even and at most ``2 * max_source_positions`` (10 ms frames).

        Returns
        -------
        tuple of jax.Array
            ``encoder_layers + 1`` arrays of shape (batch, n_frames // 2, d_model) in ``dtype``:
            entry 0 is the input of the first layer (convolutions plus positions), entry ``i``
            the output of layer ``i``, except that the last entry has the final ``layer_norm``
            applied, exactly as transformers' ``output_hidden_states=True`` reports them.
        """
        with matmul.scope(self.precision, self.dtype, key="extraction precision"):
            x = self._embed(input_features)
            hidden = [x]
            for layer in self.layers:
                x = layer(x)
                hidden.append(x)
            hidden[-1] = self.layer_norm(x)
            return tuple(hidden)

    def frames_at(self, input_features: jax.Array, frame: jax.Array, layers: tuple[int, ...]) -> tuple[jax.Array, ...]:
        """Hidden states at one encoder frame per input, computing only what they need.

        Equal (to float rounding) to ``self(input_features)[layer][arange(batch), frame]`` for
        each requested layer, but layers above the highest requested one are not run, and that
        one runs for the query at ``frame`` only (its keys and values still cover every
        position): for the last layer of a 6-layer encoder over 30 s inputs, about 14% less work.

        Parameters
        ----------
        input_features : jax.Array
            Shape (batch, num_mel_bins, n_frames), as for ``__call__``.
        frame : jax.Array of int
            Shape (batch,): the encoder frame of each input.
        layers : tuple of int
            Hidden states wanted, 0 .. encoder_layers (the last with the final ``layer_norm``).

        Returns
        -------
        tuple of jax.Array
            One array of shape (batch, d_model) in ``dtype`` per requested layer, in order.
        """
        n_layers = self.config.encoder_layers
        if not layers or any(not 0 <= layer <= n_layers for layer in layers):
            raise ConfigError(f"layers={layers}, expected a non-empty subset of 0..{n_layers}")
        with matmul.scope(self.precision, self.dtype, key="extraction precision"):
            return self._frames_at(input_features, frame, layers)

    def _frames_at(self, input_features, frame, layers):
        n_layers = self.config.encoder_layers
        top = max(layers)
        rows = jnp.arange(input_features.shape[0])
        x = self._embed(input_features)
        found = {0: x[rows, frame]}
        for i, layer in enumerate(self.layers[: top - 1], start=1):
            x = layer(x)
            found[i] = x[rows, frame]
        if top > 0:
            found[top] = self.layers[top - 1].at(x, frame)
        if top == n_layers:
            found[top] = self.layer_norm(found[top])
        return tuple(found[layer] for layer in layers)

    def _embed(self, input_features: jax.Array) -> jax.Array:
        """Convolutions and positions: (batch, num_mel_bins, n_frames) -> (batch, n_frames // 2, d_model)."""
        n_mels, n_frames = input_features.shape[1:]
        if n_mels != self.config.num_mel_bins:
            raise ConfigError(f"input_features has {n_mels} mel bins, expected {self.config.num_mel_bins}")
        if n_frames % 2 or n_frames > 2 * self.config.max_source_positions:
            raise ConfigError(
                f"input_features has {n_frames} frames, expected an even number of at most "
                f"{2 * self.config.max_source_positions}"
            )
        x = jnp.swapaxes(input_features, 1, 2).astype(self.dtype)  # [b, frames, mels]: flax is NWC
        x = _gelu(self.conv1(x))  # [b, frames, m]
        x = _gelu(self.conv2(x))  # [b, frames // 2, m]
        return x + self.embed_positions.embedding[: x.shape[1]].astype(self.dtype)  # [b, s, m]
