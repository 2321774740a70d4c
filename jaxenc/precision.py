"""Matrix-product precision of jaxenc's compiled programs: one vocabulary for every stage.

Under JAX's defaults an accelerator does not multiply float32 matrices in float32: an
H100/H200 rounds the inputs to TF32 (10 mantissa bits) and a TPU to bfloat16 (7 bits), one
pass. XLA:CPU ignores all of it and always computes float32, so nothing run on a CPU shows the
difference. jaxenc therefore states the precision of each stage (extraction, training, ridge,
PCA) as a setting and applies it itself, at trace time, around every compiled program of that
stage (:func:`scope`); importing jaxenc changes no global JAX state. The precision becomes part
of the traced program (the ``precision`` or ``algorithm`` attribute of every ``dot_general``
and convolution), so JAX's jit caches, which key on the default precision in force at the call
and on the modules' static attributes, never hand a program traced at one setting to a call
at another.

The settings (:data:`PRECISIONS`), for float32 operands; bfloat16 or float16 operands are
multiplied at their own precision by every setting:

``"highest"``
    Full float32 products (inputs unrounded, float32 accumulation): the numbers a CPU and the
    reference implementations (transformers in fp32, scikit-learn, himalaya) give. Cost: a GPU
    runs them on its CUDA cores, not its tensor cores (H100 SXM: about 67 TFLOP/s against
    about 495 for TF32 and 990 for bfloat16, dense); a TPU in six bfloat16 passes (about 1/6
    of its bfloat16 rate).
``"high"`` (alias ``"tf32"``)
    GPU: TF32 tensor cores (inputs rounded to 10 mantissa bits, relative error up to
    2^-11 = 4.9e-4 per input). TPU: three bfloat16 passes (about 16 mantissa bits, 1/3 of the
    bfloat16 rate). A CPU computes float32.
``"default"``
    The backend's fastest float32 product: TF32 on a GPU, one bfloat16 pass on a TPU
    (relative error up to 2^-8 = 3.9e-3 per input), float32 on a CPU. What JAX does when
    nothing is set.
``"bf16"``
    Inputs rounded to bfloat16, products accumulated in float32, on GPUs and TPUs alike
    (``jax.lax.DotAlgorithmPreset.BF16_BF16_F32``): the bfloat16 tensor-core rate. Convolutions,
    which take no algorithm, run at ``"default"``. Refused on a CPU, whose XLA would silently
    compute float32 instead, and for ridge, whose float64 decompositions it would round too.
``"auto"`` (extraction only)
    ``"highest"`` for a model computing in float32, ``"default"`` for one computing in
    bfloat16 or float16 (a 16-bit checkpoint's), whose operands are already 16-bit.

The defaults (:data:`DEFAULTS`) reproduce the paper's numbers: ridge and PCA at ``"highest"``
(their penalties and components are read off small eigenvalues, and the suite checks them
against scikit-learn and himalaya at float32 tolerance); extraction ``"auto"`` (a float32
checkpoint is run as the reference runs it, a 16-bit one at its own precision); training
``"highest"`` (see :data:`DEFAULTS` for the measurement behind it).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from jaxenc.errors import ConfigError

__all__ = ["PRECISIONS", "ALIASES", "DEFAULTS", "check", "resolve", "scope", "platform"]

# Each setting and what JAX's ``default_matmul_precision`` calls it.
PRECISIONS = {
    "highest": "highest",
    "high": "high",
    "default": "default",
    "bf16": "BF16_BF16_F32",
}
# Other names accepted for a setting.
ALIASES = {"tf32": "high"}
# Backends on which a setting is refused, and why (platform names of ``platform()``).
_UNAVAILABLE = {
    ("bf16", "cpu"): "XLA:CPU has no bfloat16 products and would compute float32",
}
# Stages that refuse a setting, and why. JAX applies a default precision to products of every
# dtype, and ridge's float64 decompositions would have their operands rounded to bfloat16.
_REFUSED = {
    ("ridge", "bf16"): "ridge's float64 decompositions would have their operands rounded to bfloat16",
}
# The default of each stage. Training: "highest". With every training product's operands
# rounded to TF32 or bfloat16 (emulated on CPU, benchmarks/precision_training.py) the planted
# twin's MLP scored r 0.730 and 0.731 on its interaction voxels against 0.747 at full float32,
# less of a change than a new initialisation seed makes (0.023), so any setting reproduces the
# paper's numbers; "highest" is kept because at the paper's width a step is bandwidth-bound on
# an H100 (about 9 FLOP per byte, below the 20 at which its float32 CUDA cores would limit),
# so TF32 would buy little there, and it keeps a GPU's training equal to the CPU's and to a
# float32 torch loop. The option for speed is TrainConfig.compute_dtype = "bfloat16".
DEFAULTS = {"extraction": "auto", "training": "highest", "ridge": "highest", "pca": "highest"}


def platform() -> str:
    """The platform the programs being traced now will run on: ``"cpu"``, ``"gpu"`` or ``"tpu"``.

    The one place jaxenc asks (precision checks, the attention route): JAX's default backend,
    where every jaxenc program places its arrays (CUDA and ROCm are both ``"gpu"``).
    """
    name = jax.default_backend()
    return "gpu" if name in ("cuda", "rocm", "gpu") else name


def check(setting: str, key: str = "precision", *, auto: bool = False, on: str | None = None,
          stage: str | None = None) -> str:
    """The canonical name of a precision setting, or a one-line :class:`ConfigError`.

    Parameters
    ----------
    setting : str
        One of :data:`PRECISIONS`, an alias (:data:`ALIASES`) or, with ``auto``, ``"auto"``.
    key : str
        The setting's name in messages (``"train.precision"``).
    auto : bool
        Whether ``"auto"`` is allowed (extraction).
    on : str, optional
        Also refuse a setting the given platform does not have (``"cpu"``, ``"gpu"``, ``"tpu"``).
    stage : str, optional
        Also refuse a setting the stage (a key of :data:`DEFAULTS`) cannot use.

    Returns
    -------
    str
        The canonical name (aliases resolved; ``"auto"`` kept).
    """
    name = ALIASES.get(setting, setting) if isinstance(setting, str) else setting
    if not (name in PRECISIONS or (auto and name == "auto")):
        valid = [*PRECISIONS, *ALIASES] + (["auto"] if auto else [])
        raise ConfigError(f"{key} must be one of {valid}, got {setting!r}")
    if (stage, name) in _REFUSED:
        raise ConfigError(f"{key} = {setting!r} is not supported: {_REFUSED[stage, name]}")
    if on is not None and (name, on) in _UNAVAILABLE:
        raise ConfigError(f"{key} = {setting!r} is not available on {on}: {_UNAVAILABLE[name, on]}; "
                          f"use 'highest' there")
    return name


def resolve(setting: str, dtype=jnp.float32, key: str = "precision") -> str:
    """The setting a program computing in ``dtype`` runs at (``"auto"`` decided by the dtype).

    Checks ``setting`` against the current :func:`platform`.
    """
    name = check(setting, key, auto=True, on=platform())
    if name == "auto":
        return "highest" if jnp.dtype(dtype) == jnp.float32 else "default"
    return name


@contextlib.contextmanager
def scope(setting: str, dtype=jnp.float32, key: str = "precision"):
    """Trace the products inside the context at ``setting`` (see :func:`resolve`).

    Wraps the call of a compiled function (JAX's jit cache keys on it) or code traced inside
    one (the precision is then recorded in the traced program). Products given an explicit
    ``precision`` keep it.
    """
    with jax.default_matmul_precision(PRECISIONS[resolve(setting, dtype, key)]):
        yield
