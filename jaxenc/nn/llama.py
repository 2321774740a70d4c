"""The LLaMA decoder stack (LLaMA 1/2/3, SmolLM and other ``model_type="llama"`` models) in NNX.

Module and attribute names follow transformers' ``LlamaModel`` (``embed_tokens``, ``layers.11.mlp
.gate_proj``, ``norm``, ...) so that :mod:`jaxenc.ckpt` maps checkpoint keys one to one; only the
leaf names are flax's (``kernel``, ``bias``, ``scale``, ``embedding``). There is no language-model
head: jaxenc reads hidden states only.

``max_layer`` builds a truncated model: the paper's LLaMA-7B features come from layer 12 of 32,
and building (and loading) only the first 12 layers saves almost two thirds of the memory.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxenc import precision as matmul
from jaxenc.errors import ConfigError
from jaxenc.nn.layers import RMSNorm, apply_rotary, attention, attention_route, rotary_cos_sin

__all__ = ["RopeParameters", "LlamaConfig", "LlamaModel"]

_ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeParameters:
    """Rotary embedding settings; field names are the keys of transformers' ``rope_parameters``."""

    # "default" (plain RoPE), "linear" (positions divided by factor) or "llama3" (LLaMA 3.1+).
    rope_type: str = "default"
    # Base wavelength of the rotary frequencies.
    rope_theta: float = 10000.0
    # Context extension factor ("linear", "llama3"); 1.0 for "default".
    factor: float = 1.0
    # "llama3": wavelengths above original_max_position_embeddings / low_freq_factor are scaled.
    low_freq_factor: float = 1.0
    # "llama3": wavelengths below original_max_position_embeddings / high_freq_factor are kept.
    high_freq_factor: float = 4.0
    # "llama3": the pretraining context length the two thresholds refer to.
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.rope_type not in _ROPE_TYPES:
            raise ConfigError(f"rope_type={self.rope_type!r} is not supported; expected one of {_ROPE_TYPES}")

    def inv_freq(self, head_dim: int) -> np.ndarray:
        """Inverse rotary frequencies, array of shape (head_dim // 2,) float32 (radians/position)."""
        exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
        inv = (1.0 / np.float32(self.rope_theta) ** exponents).astype(np.float32)
        if self.rope_type == "linear":
            return (inv / np.float32(self.factor)).astype(np.float32)
        if self.rope_type == "llama3":
            # Long wavelengths are stretched by `factor`, short ones kept, the band between
            # interpolated smoothly (transformers' _compute_llama3_parameters).
            old = self.original_max_position_embeddings
            low_wavelen, high_wavelen = old / self.low_freq_factor, old / self.high_freq_factor
            wavelen = 2 * math.pi / inv
            scaled = np.where(wavelen > low_wavelen, inv / self.factor, inv)
            smooth = (old / wavelen - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)
            smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
            medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
            return np.where(medium, smoothed, scaled).astype(np.float32)
        return inv


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shape of a LLaMA-family model; field names are those of ``transformers.LlamaConfig``.

    Defaults are LLaMA-7B (v1), the model the paper's semantic features come from.
    """

    # Number of token embeddings.
    vocab_size: int = 32000
    # Width of the residual stream and of every hidden state.
    hidden_size: int = 4096
    # Width of the gated feed-forward hidden layer.
    intermediate_size: int = 11008
    # Number of decoder layers in the checkpoint (see LlamaModel's max_layer to build fewer).
    num_hidden_layers: int = 32
    # Query heads per layer.
    num_attention_heads: int = 32
    # Key/value heads per layer: equal to num_attention_heads for MHA, fewer for GQA.
    num_key_value_heads: int = 32
    # Width of one head (hidden_size // num_attention_heads unless the checkpoint says otherwise).
    head_dim: int = 128
    # Feed-forward activation; LLaMA uses SiLU gating.
    hidden_act: str = "silu"
    # Longest context the model was trained for (informational: positions are not clipped).
    max_position_embeddings: int = 2048
    # Epsilon of every RMSNorm.
    rms_norm_eps: float = 1e-6
    # Rotary embedding type, base and scaling.
    rope_parameters: RopeParameters = RopeParameters()
    # Whether q/k/v/o projections carry biases.
    attention_bias: bool = False
    # Whether gate/up/down projections carry biases.
    mlp_bias: bool = False

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.hidden_act != "silu":
            raise ConfigError(f"hidden_act={self.hidden_act!r} is not supported; expected 'silu'")

    @classmethod
    def from_hf(cls, config) -> LlamaConfig:
        """Build from a ``transformers.LlamaConfig`` (or any object with the same attributes).

        Reads ``rope_parameters`` (transformers >= 5) or, failing that, the older ``rope_theta``
        and ``rope_scaling`` attributes; unknown rope types raise :class:`ConfigError`.
        """
        rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
        rope.setdefault("rope_theta", getattr(config, "rope_theta", RopeParameters.rope_theta))
        rope["rope_type"] = rope.get("rope_type", rope.get("type", "default"))
        rope.setdefault("original_max_position_embeddings", config.max_position_embeddings)
        names = {f.name for f in dataclasses.fields(RopeParameters)}
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.name != "rope_parameters"}
        if values["num_key_value_heads"] is None:
            values["num_key_value_heads"] = config.num_attention_heads
        if values["head_dim"] is None:
            values["head_dim"] = config.hidden_size // config.num_attention_heads
        return cls(**values, rope_parameters=RopeParameters(**{k: v for k, v in rope.items() if k in names}))


class LlamaAttention(nnx.Module):
    """Causal self-attention with rotary positions and grouped key/value heads."""

    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs, route: str = "auto"):
        m, d = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        self.route = route
        kw = dict(use_bias=config.attention_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = nnx.Linear(m, self.num_heads * d, **kw)
        self.k_proj = nnx.Linear(m, self.num_kv_heads * d, **kw)
        self.v_proj = nnx.Linear(m, self.num_kv_heads * d, **kw)
        self.o_proj = nnx.Linear(self.num_heads * d, m, **kw)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, key_mask: jax.Array) -> jax.Array:
        """Map (batch, seq, hidden) to (batch, seq, hidden); ``key_mask`` (batch, seq) is False on padding."""
        b, s, _ = x.shape
        q = self.q_proj(x).reshape(b, s, self.num_heads, self.head_dim)  # [b, s, h, d]
        k = self.k_proj(x).reshape(b, s, self.num_kv_heads, self.head_dim)  # [b, t, k, d]
        v = self.v_proj(x).reshape(b, s, self.num_kv_heads, self.head_dim)  # [b, t, k, d]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = attention(q, k, v, scale=self.head_dim**-0.5, causal=True, key_mask=key_mask, route=self.route)
        return self.o_proj(out)


class LlamaMLP(nnx.Module):
    """SiLU-gated feed-forward block: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        m, f = config.hidden_size, config.intermediate_size
        kw = dict(use_bias=config.mlp_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = nnx.Linear(m, f, **kw)
        self.up_proj = nnx.Linear(m, f, **kw)
        self.down_proj = nnx.Linear(f, m, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Map (batch, seq, hidden) to (batch, seq, hidden)."""
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nnx.Module):
    """Pre-RMSNorm decoder layer: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs, route: str = "auto"):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.self_attn = LlamaAttention(config, rngs=rngs, route=route, **kw)
        self.mlp = LlamaMLP(config, rngs=rngs, **kw)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, **kw)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, **kw)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, key_mask: jax.Array) -> jax.Array:
        """Map (batch, seq, hidden) to (batch, seq, hidden)."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, key_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nnx.Module):
    """LLaMA decoder stack without the language-model head, returning every hidden state.

    Parameters
    ----------
    config : LlamaConfig
        Model shape (of the full checkpoint, even when truncated).
    dtype : jnp.dtype
        Compute dtype (float32 or bfloat16).
    param_dtype : jnp.dtype
        Parameter dtype.
    rngs : nnx.Rngs
        Random initialisation (overwritten when loading a checkpoint with :mod:`jaxenc.ckpt`).
    max_layer : int, optional
        Build and run only the first ``max_layer`` decoder layers (0 .. num_hidden_layers).
        When smaller than ``num_hidden_layers`` the final ``norm`` is not built either.
    precision : str
        Matrix-product precision of the forward pass (:mod:`jaxenc.precision`); ``"auto"``:
        full float32 for a float32 model, the operands' own for a 16-bit one.
    attention : str
        Attention implementation (:data:`jaxenc.nn.layers.ATTENTION_ROUTES`); ``"auto"`` by
        platform.
    """

    def __init__(
        self,
        config: LlamaConfig,
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        max_layer: int | None = None,
        precision: str = matmul.DEFAULTS["extraction"],
        attention: str = "auto",
    ):
        n = config.num_hidden_layers
        if max_layer is None:
            max_layer = n
        if not 0 <= max_layer <= n:
            raise ConfigError(f"max_layer={max_layer} is outside 0..num_hidden_layers={n}")
        self.config = config
        self.max_layer = max_layer
        self.dtype = dtype
        self.precision = matmul.check(precision, "precision", auto=True)
        attention_route(attention, dtype, config.head_dim)  # checks the name
        self.inv_freq = tuple(config.rope_parameters.inv_freq(config.head_dim).tolist())
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.embed_tokens = nnx.Embed(config.vocab_size, config.hidden_size, rngs=rngs, **kw)
        self.layers = nnx.List([LlamaDecoderLayer(config, rngs=rngs, route=attention, **kw) for _ in range(max_layer)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, **kw) if max_layer == n else None

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> tuple[jax.Array, ...]:
        """Run the decoder stack.

        Parameters
        ----------
        input_ids : jax.Array of int
            Token ids, shape (batch, seq).
        attention_mask : jax.Array of {0, 1}, optional
            Shape (batch, seq), 1 on real tokens; padding may be on the right or on the left.
            Positions count real tokens only (``cumsum(mask) - 1``), so a left-padded row gives
            the same hidden states at its real tokens as the unpadded sequence. All ones when
            omitted.

        Returns
        -------
        tuple of jax.Array
            ``max_layer + 1`` arrays of shape (batch, seq, hidden_size) in ``dtype``: entry 0 is
            the token embeddings, entry ``i`` the output of layer ``i``. With the full stack the
            last entry has the final ``norm`` applied, exactly as transformers'
            ``output_hidden_states=True`` reports it; a truncated stack returns layer
            ``max_layer``'s raw output (HF's ``hidden_states[max_layer]``). Values at padded
            positions are finite but meaningless.
        """
        with matmul.scope(self.precision, self.dtype, key="extraction precision"):
            return self._forward(input_ids, attention_mask)

    def _forward(self, input_ids, attention_mask):
        if input_ids.ndim != 2:
            raise ConfigError(f"input_ids has shape {input_ids.shape}, expected (batch, seq)")
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        elif attention_mask.shape != input_ids.shape:
            raise ConfigError(
                f"attention_mask has shape {attention_mask.shape}, expected input_ids' {input_ids.shape}"
            )
        key_mask = attention_mask.astype(bool)  # [b, t]
        positions = jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)  # [b, s]
        cos, sin = rotary_cos_sin(positions, np.asarray(self.inv_freq, np.float32), self.dtype)  # [b, s, d]

        x = self.embed_tokens(input_ids).astype(self.dtype)  # [b, s, m]
        hidden = [x]
        for layer in self.layers:
            x = layer(x, cos, sin, key_mask)
            hidden.append(x)
        if self.norm is not None:
            hidden[-1] = self.norm(x)
        return tuple(hidden)
