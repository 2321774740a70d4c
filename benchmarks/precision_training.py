"""What reduced matmul precision and bfloat16 compute do to the networks' planted scores.

A CPU computes float32 products whatever precision is asked for, so the reduced precisions of
accelerators are emulated here: every dense layer's product (forward and both backward
products) gets its operands rounded to TF32 (10 mantissa bits) or bfloat16 (7 bits) first,
round to nearest even, and accumulates in float32, which is what a GPU's tensor cores do with
``precision="high"`` / ``"bf16"``. The bfloat16 compute of ``TrainConfig.compute_dtype`` runs
as it is. The score is the planted twin of tests/train/test_planted.py (seed 0): MLP and
MLLinear trained over its learning-rate grid, mean test r over the interaction and over the
linear voxels. The yardstick is the change a different initialisation seed makes at full
precision.

    python benchmarks/precision_training.py            # about 4 minutes on 2 cores
    python benchmarks/precision_training.py --fast     # MLP only

Writes benchmarks/results/precision_training.json.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import parse_args, write_results
from flax import nnx
from jax import lax

from jaxenc.metrics import pearson_r
from jaxenc.train import fit_encoders

_spec = importlib.util.spec_from_file_location(
    "test_planted", Path(__file__).resolve().parents[1] / "tests" / "train" / "test_planted.py")
planted = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(planted)

_MANTISSA_BITS = {"tf32": 10, "bf16": 7}


def _round(x, bits: int):
    """Round float32 ``x`` to ``bits`` mantissa bits, to nearest even (a tensor core's input)."""
    drop = 23 - bits
    i = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    i = i + ((1 << (drop - 1)) - 1) + ((i >> drop) & 1)
    return lax.bitcast_convert_type(i & ~jnp.uint32((1 << drop) - 1), jnp.float32)


@functools.cache
def rounding_dot_general(bits: int):
    """``lax.dot_general`` whose forward and backward products see operands rounded to ``bits``."""
    plain = lax.dot_general

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
    def dot(a, b, dims):
        return plain(_round(a, bits), _round(b, bits), dims)

    def fwd(a, b, dims):
        ra, rb = _round(a, bits), _round(b, bits)
        return plain(ra, rb, dims), (ra, rb)

    def bwd(dims, res, g):
        _, vjp = jax.vjp(lambda x, y: plain(x, y, dims), *res)
        return vjp(_round(g, bits))

    dot.defvjp(fwd, bwd)

    def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
        dims = tuple(tuple(tuple(axes) for axes in pair) for pair in dimension_numbers)  # hashable
        return dot(lhs, rhs, dims)

    return dot_general


def rounding(make_model, bits: int):
    """``make_model`` whose dense layers multiply through :func:`rounding_dot_general`."""

    def make(*args, **kwargs):
        model = make_model(*args, **kwargs)
        for _, module in nnx.iter_graph(model):
            if isinstance(module, nnx.Linear):
                module.dot_general = rounding_dot_general(bits)  # flax binds it at construction
        return model

    return make


def run(twin, variant: str, models: dict, seed_offset: int = 0) -> dict:
    """Mean test r per model and voxel class for one variant."""
    cfg = planted.train_config(0)
    cfg = dataclasses.replace(cfg, seed=cfg.seed + seed_offset)
    if variant == "bf16_compute":
        cfg = dataclasses.replace(cfg, compute_dtype="bfloat16")
    out = {}
    for name, make in models.items():
        if variant in _MANTISSA_BITS:
            make = rounding(make, _MANTISSA_BITS[variant])
        start = time.perf_counter()
        fit = fit_encoders(make, {planted.SUBJECT: twin["data"]}, cfg, grid=planted.GRID, progress=False)
        r = np.asarray(pearson_r(twin["y_test"], fit.predict({planted.SUBJECT: twin["x_test"]})[planted.SUBJECT]))
        out[name] = {"interaction": float(r[twin["interaction"]].mean()),
                     "linear": float(r[twin["linear"]].mean()), "seconds": time.perf_counter() - start}
        print(variant, seed_offset, name, out[name], flush=True)
    return out


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv)
    with tempfile.TemporaryDirectory() as root:
        twin = planted.planted_twin(Path(root), 0)
    models = {k: v for k, v in planted.encoder_makers(twin["modalities"]).items()
              if k in (("mlp",) if args.fast else ("mlp", "mllinear"))}
    variants = {"highest": run(twin, "highest", models), "highest_seed1": run(twin, "highest", models, 1),
                "tf32_emulated": run(twin, "tf32", models), "bf16_emulated": run(twin, "bf16", models),
                "bf16_compute": run(twin, "bf16_compute", models)}
    deltas = {v: {m: {c: variants[v][m][c] - variants["highest"][m][c] for c in ("interaction", "linear")}
                  for m in models} for v in variants if v != "highest"}
    ratios = {f"{v}_max_abs_delta_r": max(abs(x) for m in d.values() for x in m.values()) for v, d in deltas.items()}
    write_results("precision_training", {"variants": variants, "deltas_from_highest": deltas}, ratios=ratios,
                  out=args.out)


if __name__ == "__main__":
    sys.exit(main())
