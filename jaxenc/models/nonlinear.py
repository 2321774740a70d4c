"""Nonlinear multimodal encoders: the MLP family of "Mind the Gap" and its controls.

Every model maps delayed stimulus features to response targets, one TR per row::

    model(x, train=False, mask=None)    # x: [batch, n_features] -> [batch, n_outputs]

where ``n_outputs`` is the number of PCA components of the responses (inverse-projected to
voxels for evaluation) or the number of voxels. The controls isolate why the MLP wins:

- :class:`MLLinear` has the MLP's shape but no activation: a reduced-rank linear model.
- :class:`DIMLP` gives each modality its own hidden layer and fuses them linearly, so it can
  be nonlinear within a modality but not across modalities.
- :class:`DeepMLP` and :class:`DelayGRU` add depth or recurrence, which overfit at the size of
  one subject's data.

Modalities are column ranges of the feature matrix. After :func:`jaxenc.align.make_delayed`
each modality occupies one range per delay block; :func:`delayed_columns` computes them.

All models take ``train`` (dropout on, BatchNorm from the batch and updating its running
statistics) and ``mask`` (rows of a partial minibatch that must not enter BatchNorm
statistics), so the trainer can call any of them the same way.

All take ``dtype``, the compute dtype (``TrainConfig.compute_dtype``): with bfloat16 the dense
products, activations and dropout run in bfloat16 while the parameters stay float32 (each
layer casts them at the call, so gradients and AdamW updates reach float32 master weights)
and BatchNorm computes its statistics in float32; outputs come back in ``dtype``.

Dense layers start as PyTorch's ``nn.Linear`` does (the paper's framework): kernel and bias
uniform in ``+-1/sqrt(fan_in)``. Flax's default (LeCun normal kernel, zero bias) starts the
kernel sqrt(3) times larger, which before BatchNorm divides the effective step size by 3 and
measurably slows the first epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxenc.errors import ConfigError

__all__ = ["MLLinear", "MLP", "DIMLP", "DeepMLP", "DelayGRU", "DelayTransformer", "delayed_columns", "torch_linear"]

# BatchNorm running-average decay. 0.9 is PyTorch's momentum=0.1, the paper's framework.
_BN_MOMENTUM = 0.9


def delay_block_width(n_features: int, n_delays: int) -> int:
    """Columns of one delay block of a delayed feature matrix (the sequence models' token width).

    Raises
    ------
    ConfigError
        If the ``n_features`` columns do not split into ``n_delays`` equal blocks.
    """
    if n_delays < 1 or n_features % n_delays:
        raise ConfigError(f"{n_features} delayed features do not split into {n_delays} equal delay blocks")
    return n_features // n_delays


def delayed_columns(start: int, stop: int, n_block_features: int, n_delays: int) -> tuple:
    """Column ranges of one modality in a delayed feature matrix.

    :func:`jaxenc.align.make_delayed` stacks ``n_delays`` copies of an undelayed matrix of
    ``n_block_features`` columns side by side, so a modality held in columns
    ``[start, stop)`` of the undelayed matrix appears once in every block.

    Parameters
    ----------
    start, stop : int
        The modality's columns ``[start, stop)`` in the undelayed feature matrix.
    n_block_features : int
        Columns of the undelayed matrix (all modalities together).
    n_delays : int
        Number of delay blocks.

    Returns
    -------
    tuple of (int, int)
        ``n_delays`` pairs ``(start, stop)`` in the delayed matrix, in block order.

    Examples
    --------
    Audio in columns 0-3 and semantics in 4-9 of a 10-column matrix, delayed twice:

    >>> delayed_columns(0, 4, 10, 2)
    ((0, 4), (10, 14))
    """
    if not 0 <= start < stop <= n_block_features or n_delays < 1:
        raise ConfigError(
            f"modality columns [{start}, {stop}) must lie inside the {n_block_features} "
            f"columns of a delay block, with at least one delay (found {n_delays})"
        )
    return tuple((start + d * n_block_features, stop + d * n_block_features) for d in range(n_delays))


def torch_linear(n_in: int, n_out: int, *, use_bias: bool = True, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Linear:
    """A dense layer initialised like PyTorch's ``nn.Linear``.

    Kernel and bias are uniform in ``[-1/sqrt(n_in), 1/sqrt(n_in)]`` (``kaiming_uniform`` with
    ``a = sqrt(5)``: variance ``1 / (3 n_in)``).

    Parameters
    ----------
    n_in, n_out : int
        Input and output sizes (``n_in`` is the fan-in).
    use_bias : bool
        Whether the layer has a bias.
    rngs : nnx.Rngs
        Stream ``params``.
    dtype : jnp.dtype
        Compute dtype; the parameters are float32 whatever it is.

    Returns
    -------
    nnx.Linear
    """
    bound = 1.0 / math.sqrt(n_in)

    def uniform(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(n_in, n_out, use_bias=use_bias, kernel_init=uniform, bias_init=uniform, dtype=dtype,
                      param_dtype=jnp.float32, rngs=rngs)


def _as_ranges(columns) -> tuple[tuple[int, int], ...]:
    """Normalise a modality given as ``(start, stop)``, a slice, or a sequence of either."""
    if isinstance(columns, slice):
        columns = [columns]
    elif len(columns) == 2 and all(isinstance(c, int) for c in columns):
        columns = [tuple(columns)]
    out = []
    for c in columns:
        start, stop = (c.start, c.stop) if isinstance(c, slice) else c
        if start is None or stop is None or not 0 <= start < stop:
            raise ConfigError(f"a modality's columns must be explicit ranges [start, stop), found {c!r}")
        out.append((int(start), int(stop)))
    return tuple(out)


def _take(x, ranges):
    # [batch, n_features] -> [batch, sum of range widths]
    return jnp.concatenate([x[:, a:b] for a, b in ranges], axis=-1)


class _HiddenBlock(nnx.Module):
    """Linear -> BatchNorm -> activation -> Dropout, the hidden layer shared by the MLPs."""

    def __init__(self, n_in, n_out, *, activation, dropout, batch_norm, rngs, dtype=jnp.float32):
        # No bias before BatchNorm: the normalisation removes it, so its gradient is rounding
        # noise that Adam would turn into steps of the full learning rate.
        self.linear = torch_linear(n_in, n_out, use_bias=not batch_norm, rngs=rngs, dtype=dtype)
        # flax computes the statistics in float32 whatever the compute dtype.
        self.norm = nnx.BatchNorm(n_out, momentum=_BN_MOMENTUM, dtype=dtype, rngs=rngs) if batch_norm else None
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.activation = activation

    def __call__(self, x, *, train, mask):
        # Named scopes label the compiled operations in profiles (benchmarks/train.py).
        with jax.named_scope("dense"):
            h = self.linear(x)
        if self.norm is not None:
            with jax.named_scope("batch_norm"):
                h = self.norm(h, use_running_average=not train, mask=None if mask is None else mask[:, None])
        with jax.named_scope("dropout"):
            return self.dropout(self.activation(h), deterministic=not train)


class MLLinear(nnx.Module):
    """Reduced-rank linear encoder: Linear -> ``hidden`` units -> Linear, no activation.

    The output is ``x @ W1 @ W2 + (b1 @ W2 + b2)``, a linear map of rank at most ``hidden``:
    the MLP with its nonlinearity, normalisation and dropout removed.

    Parameters
    ----------
    n_features : int
        Columns of the input.
    n_outputs : int
        Targets (PCA components or voxels).
    hidden : int
        Width of the bottleneck (256 in the paper).
    rngs : nnx.Rngs
        Parameter initialisation.
    dtype : jnp.dtype
        Compute dtype (parameters are float32).
    """

    def __init__(self, n_features: int, n_outputs: int, *, hidden: int = 256, rngs: nnx.Rngs, dtype=jnp.float32):
        self.encode = torch_linear(n_features, hidden, rngs=rngs, dtype=dtype)
        self.decode = torch_linear(hidden, n_outputs, rngs=rngs, dtype=dtype)

    def __call__(self, x, *, train: bool = False, mask=None):
        """Map ``x`` of shape (batch, n_features) to (batch, n_outputs); ``train`` and ``mask`` are unused."""
        return self.decode(self.encode(x))


class MLP(nnx.Module):
    """One hidden layer: Linear -> BatchNorm -> tanh -> Dropout -> Linear.

    Parameters
    ----------
    n_features : int
        Columns of the input.
    n_outputs : int
        Targets (PCA components or voxels).
    hidden : int
        Hidden units (256 in the paper).
    dropout : float
        Dropout rate on the hidden layer during training (the paper tunes 0.1-0.3).
    activation : callable
        Elementwise nonlinearity; ``tanh`` as in the paper.
    batch_norm : bool
        Normalise the hidden pre-activations over the minibatch.
    rngs : nnx.Rngs
        Streams ``params`` (initialisation) and ``dropout``.
    dtype : jnp.dtype
        Compute dtype (parameters are float32).
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        *,
        hidden: int = 256,
        dropout: float = 0.2,
        activation: Callable = jnp.tanh,
        batch_norm: bool = True,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
    ):
        self.hidden = _HiddenBlock(
            n_features, hidden, activation=activation, dropout=dropout, batch_norm=batch_norm, rngs=rngs, dtype=dtype
        )
        self.readout = torch_linear(hidden, n_outputs, rngs=rngs, dtype=dtype)

    def __call__(self, x, *, train: bool = False, mask=None):
        """Map ``x`` of shape (batch, n_features) to (batch, n_outputs).

        ``mask`` (batch,) bool marks the real rows of a padded minibatch: only they enter the
        BatchNorm statistics when ``train`` is true.
        """
        return self.readout(self.hidden(x, train=train, mask=mask))


class DIMLP(nnx.Module):
    """Dual-input MLP: a tanh hidden layer per modality, then one linear fusion layer.

    Nonlinear within each modality, additive across them: any gain of :class:`MLP` over this
    model is the contribution of cross-modal interactions.

    Parameters
    ----------
    modalities : sequence
        One entry per modality: the columns it occupies, as ``(start, stop)``, a slice, or a
        sequence of either (see :func:`delayed_columns` for delayed features).
    n_outputs : int
        Targets (PCA components or voxels).
    hidden : int or sequence of int
        Hidden units per modality (one value for all, or one per modality).
    dropout : float
        Dropout rate on the hidden layers during training.
    activation : callable
        Elementwise nonlinearity.
    batch_norm : bool
        Normalise each hidden layer over the minibatch.
    rngs : nnx.Rngs
        Streams ``params`` and ``dropout``.
    dtype : jnp.dtype
        Compute dtype (parameters are float32).
    """

    def __init__(
        self,
        modalities: Sequence,
        n_outputs: int,
        *,
        hidden: int | Sequence[int] = 256,
        dropout: float = 0.2,
        activation: Callable = jnp.tanh,
        batch_norm: bool = True,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
    ):
        ranges = tuple(_as_ranges(m) for m in modalities)
        if len(ranges) < 2:
            raise ConfigError(f"DIMLP needs at least two modalities, found {len(ranges)}")
        widths = [hidden] * len(ranges) if isinstance(hidden, int) else list(hidden)
        if len(widths) != len(ranges):
            raise ConfigError(f"{len(widths)} hidden sizes for {len(ranges)} modalities")
        self.ranges = ranges
        self.branches = nnx.List(
            [
                _HiddenBlock(
                    sum(b - a for a, b in r), w, activation=activation, dropout=dropout,
                    batch_norm=batch_norm, rngs=rngs, dtype=dtype,
                )
                for r, w in zip(ranges, widths, strict=True)
            ]
        )
        self.fusion = torch_linear(sum(widths), n_outputs, rngs=rngs, dtype=dtype)

    def __call__(self, x, *, train: bool = False, mask=None):
        """Map ``x`` of shape (batch, n_features) to (batch, n_outputs); ``mask`` as in :class:`MLP`."""
        hs = [branch(_take(x, r), train=train, mask=mask) for r, branch in zip(self.ranges, self.branches, strict=True)]
        # [batch, sum(hidden)]: the modalities meet only in this linear layer.
        return self.fusion(jnp.concatenate(hs, axis=-1))


class DeepMLP(nnx.Module):
    """``depth`` hidden layers of Linear -> BatchNorm -> tanh -> Dropout, then a linear readout.

    ``depth=1`` is :class:`MLP`. Used for the depth ablation: deeper networks overfit at the
    size of one subject's data.

    Parameters
    ----------
    n_features, n_outputs : int
        Input columns and targets.
    depth : int
        Number of hidden layers (at least 1).
    hidden : int
        Units per hidden layer.
    dropout : float
        Dropout rate on every hidden layer during training.
    activation : callable
        Elementwise nonlinearity.
    batch_norm : bool
        Normalise each hidden layer over the minibatch.
    rngs : nnx.Rngs
        Streams ``params`` and ``dropout``.
    dtype : jnp.dtype
        Compute dtype (parameters are float32).
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        *,
        depth: int = 3,
        hidden: int = 256,
        dropout: float = 0.2,
        activation: Callable = jnp.tanh,
        batch_norm: bool = True,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
    ):
        if depth < 1:
            raise ConfigError(f"DeepMLP depth must be at least 1, found {depth}")
        sizes = [n_features] + [hidden] * depth
        self.layers = nnx.List(
            [
                _HiddenBlock(a, b, activation=activation, dropout=dropout, batch_norm=batch_norm, rngs=rngs,
                             dtype=dtype)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.readout = torch_linear(hidden, n_outputs, rngs=rngs, dtype=dtype)

    def __call__(self, x, *, train: bool = False, mask=None):
        """Map ``x`` of shape (batch, n_features) to (batch, n_outputs); ``mask`` as in :class:`MLP`."""
        for layer in self.layers:
            x = layer(x, train=train, mask=mask)
        return self.readout(x)


class DelayGRU(nnx.Module):
    """A GRU over the window of delayed TRs, oldest first, read out from its last state.

    The input row of TR ``t`` built by :func:`jaxenc.align.make_delayed` with delays
    ``(1, ..., n_delays)`` holds the stimulus at ``t-1, ..., t-n_delays``: this model reads
    that window as a causal sequence instead of one flat vector, which keeps the per-TR
    minibatch training of the other models.

    Parameters
    ----------
    n_features : int
        Columns of the delayed input, ``n_delays * n_block_features``.
    n_outputs : int
        Targets (PCA components or voxels).
    n_delays : int
        Delay blocks in the input, ordered from the most recent to the oldest.
    hidden : int
        GRU state size.
    dropout : float
        Dropout rate on the final state during training.
    rngs : nnx.Rngs
        Streams ``params`` and ``dropout``.
    dtype : jnp.dtype
        Compute dtype (parameters are float32).
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        *,
        n_delays: int = 4,
        hidden: int = 256,
        dropout: float = 0.2,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
    ):
        self.n_delays = n_delays
        self.cell = nnx.GRUCell(delay_block_width(n_features, n_delays), hidden, dtype=dtype,
                                param_dtype=jnp.float32, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.readout = torch_linear(hidden, n_outputs, rngs=rngs, dtype=dtype)
        self.hidden_size = hidden
        self.dtype = dtype

    def __call__(self, x, *, train: bool = False, mask=None):
        """Map ``x`` of shape (batch, n_features) to (batch, n_outputs); ``mask`` is unused."""
        # [batch, n_delays * f] -> [batch, n_delays, f], block 0 is the most recent TR.
        seq = x.reshape(x.shape[0], self.n_delays, -1)
        h = jnp.zeros((x.shape[0], self.hidden_size), self.dtype)
        for d in reversed(range(self.n_delays)):
            h, _ = self.cell(h, seq[:, d])
        return self.readout(self.dropout(h, deterministic=not train))


# LayerNorm epsilon of the transformer (PyTorch's default).
_LN_EPSILON = 1e-5


def _layer_norm(width: int, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # flax computes the statistics in float32 whatever the compute dtype; parameters float32.
    return nnx.LayerNorm(width, epsilon=_LN_EPSILON, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class _TransformerBlock(nnx.Module):
    """Pre-norm self-attention and feed-forward, each a residual branch with dropout."""

    def __init__(self, hidden: int, heads: int, dropout: float, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.heads = heads
        self.norm1 = _layer_norm(hidden, dtype, rngs)
        self.query = torch_linear(hidden, hidden, rngs=rngs, dtype=dtype)
        # No key bias: it adds the same q . b to every logit of a query, which the softmax
        # removes, so its gradient is rounding noise that Adam would turn into steps of the
        # full learning rate (as Whisper's k_proj).
        self.key = torch_linear(hidden, hidden, use_bias=False, rngs=rngs, dtype=dtype)
        self.value = torch_linear(hidden, hidden, rngs=rngs, dtype=dtype)
        self.out = torch_linear(hidden, hidden, rngs=rngs, dtype=dtype)
        self.norm2 = _layer_norm(hidden, dtype, rngs)
        self.up = torch_linear(hidden, 2 * hidden, rngs=rngs, dtype=dtype)
        self.down = torch_linear(2 * hidden, hidden, rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, h, *, train: bool):
        batch, n_tokens, hidden = h.shape
        with jax.named_scope("attention"):
            x = self.norm1(h)
            # [batch, token, hidden] -> [batch, head, token, head_dim]
            q, k, v = (
                projection(x).reshape(batch, n_tokens, self.heads, -1).transpose(0, 2, 1, 3)
                for projection in (self.query, self.key, self.value)
            )
            # The softmax in float32 whatever the compute dtype.
            logits = (q @ k.transpose(0, 1, 3, 2)).astype(jnp.float32) / math.sqrt(q.shape[-1])
            weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
            attended = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, n_tokens, hidden)
            h = h + self.dropout(self.out(attended), deterministic=not train)
        with jax.named_scope("feed_forward"):
            return h + self.dropout(self.down(jax.nn.gelu(self.up(self.norm2(h)), approximate=False)),
                                    deterministic=not train)


class DelayTransformer(nnx.Module):
    """A small transformer encoder over the window of delayed TRs, read out from its mean token.

    Each delay block (the stimulus at one of ``t-1, ..., t-n_delays``) is one token: a linear
    embedding of its features plus a learned position embedding per delay, then ``depth``
    pre-norm blocks of multi-head self-attention and a GELU feed-forward layer (twice as wide),
    each added back to its input, a final LayerNorm, the mean over the tokens, dropout and a
    linear readout. Attention is not masked: every token is a past stimulus, so any of them may
    look at any other. Like :class:`DelayGRU` it keeps the per-TR minibatch training of the
    other models.

    Parameters
    ----------
    n_features : int
        Columns of the delayed input, ``n_delays * n_block_features``.
    n_outputs : int
        Targets (PCA components or voxels).
    n_delays : int
        Delay blocks in the input, ordered from the most recent to the oldest.
    hidden : int
        Width of the tokens (``d_model``), a multiple of ``heads``.
    heads : int
        Attention heads.
    depth : int
        Transformer blocks.
    dropout : float
        Dropout rate on each block's residual branches and before the readout during training.
    rngs : nnx.Rngs
        Streams ``params`` and ``dropout``.
    dtype : jnp.dtype
        Compute dtype (parameters are float32; the softmax and LayerNorm statistics run in
        float32).
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        *,
        n_delays: int = 4,
        hidden: int = 256,
        heads: int = 4,
        depth: int = 1,
        dropout: float = 0.2,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
    ):
        width = delay_block_width(n_features, n_delays)
        if heads < 1 or hidden % heads:
            raise ConfigError(f"hidden ({hidden}) must be a positive multiple of heads ({heads})")
        if depth < 1:
            raise ConfigError(f"DelayTransformer depth must be at least 1, found {depth}")
        self.n_delays, self.heads = n_delays, heads
        self.dtype = dtype
        self.embed = torch_linear(width, hidden, rngs=rngs, dtype=dtype)
        # [n_delays, hidden]: token i is delay n_delays - i (oldest first), as in DelayGRU.
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (n_delays, hidden), jnp.float32))
        self.blocks = nnx.List([_TransformerBlock(hidden, heads, dropout, rngs=rngs, dtype=dtype)
                                for _ in range(depth)])
        self.norm = _layer_norm(hidden, dtype, rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.readout = torch_linear(hidden, n_outputs, rngs=rngs, dtype=dtype)

    def __call__(self, x, *, train: bool = False, mask=None):
        """Map ``x`` of shape (batch, n_features) to (batch, n_outputs); ``mask`` is unused."""
        # [batch, n_delays * f] -> [batch, n_delays, f], reversed so that token 0 is the oldest TR.
        tokens = x.reshape(x.shape[0], self.n_delays, -1)[:, ::-1]
        h = self.embed(tokens) + self.position[...].astype(self.dtype)  # [batch, token, hidden]
        for block in self.blocks:
            h = block(h, train=train)
        pooled = self.norm(h).mean(axis=1)  # [batch, hidden]
        return self.readout(self.dropout(pooled, deterministic=not train))
