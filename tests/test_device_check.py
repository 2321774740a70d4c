"""benchmarks/device_check.py's dry run (every step at tiny shapes on CPU, so the GPU check
cannot rot) and the FLOP counts of benchmarks/roofline.py against XLA's own."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_check  # noqa: E402
import roofline  # noqa: E402
from common import matmul_peak_gflops  # noqa: E402


def test_dry_run_runs_every_step_and_writes_its_results(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--dry-run",
                          "--results", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "device_check.json").read_text())
    assert summary["dry_run"] and set(summary["steps"]) == set(device_check.STEPS)
    assert all(s["ok"] for s in summary["steps"].values()), summary
    for name, step in device_check.STEPS.items():
        if step.pytest is None:
            doc = json.loads((tmp_path / f"device_{name}.json").read_text())
            assert doc["machine"]["jax_backend"] == "cpu" and doc["ratios"], name
            assert all(np.isfinite(v) for v in doc["ratios"].values()), (name, doc["ratios"])
        else:  # the dry run's tiny tests ran and passed; the device run's targets exist
            suite = ET.parse(tmp_path / f"{name}.xml").getroot().find("testsuite")
            assert int(suite.get("tests")) == len(step.dry_pytest) and int(suite.get("failures")) == 0
            assert int(suite.get("errors")) == 0 and int(suite.get("skipped")) == 0
            assert all((ROOT / t).exists() for t in step.pytest if not t.startswith("-"))
    train = json.loads((tmp_path / "device_train.json").read_text())
    assert set(train["cases"]["current"]["methods"]) == {"fold_parallel", "loop_same_step", "plain_optax_loop",
                                                          "torch_loop"}
    # The same compiled step, one model after another: the same numbers (float32 rounding).
    assert train["checks"]["current/mean_r_loop_same_step"]["max_abs_diff"] < 1e-5
    ridge = json.loads((tmp_path / "device_ridge.json").read_text())
    # float32 solves against a float64 refit with the same alphas on a well-conditioned
    # 400 x 40 problem: relative differences of float32 rounding (~1e-7) times a small condition.
    assert ridge["jaxenc_vs_float64"]["max_rel"] < 1e-4
    assert ridge["jaxenc_vs_himalaya"]["max_rel"] < 1e-4
    env = json.loads((tmp_path / "device_environment.json").read_text())
    assert set(env["matmul_peak_gflops"]) == {"float32", "tf32", "bfloat16"}


def _xla_flops(fn, *args) -> float:
    cost = fn.lower(*args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def test_encoder_flop_counts_match_xla():
    """The analytic counts against XLA's count of the same compiled forward (matmuls and
    attention products; XLA also counts the elementwise work, a few % at these widths)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxenc.nn import LlamaConfig, LlamaModel, WhisperEncoder, WhisperEncoderConfig

    wcfg = WhisperEncoderConfig(d_model=256, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=1024,
                                max_source_positions=200)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: WhisperEncoder(wcfg, rngs=nnx.Rngs(0))))
    fn = jax.jit(lambda s, x, f: nnx.merge(graphdef, s).frames_at(x, f, (2,)))
    xla = _xla_flops(fn, state, jax.ShapeDtypeStruct((1, 80, 400), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32))
    np.testing.assert_allclose(roofline.whisper_window_flops(wcfg, 400), xla, rtol=0.05)

    lcfg = LlamaConfig(vocab_size=500, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                       num_attention_heads=8, num_key_value_heads=2, head_dim=32)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: LlamaModel(lcfg, rngs=nnx.Rngs(0))))
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)[-1])
    xla = _xla_flops(fn, state, jax.ShapeDtypeStruct((2, 128), jnp.int32))
    np.testing.assert_allclose(2 * roofline.llama_window_flops(lcfg, 128, 2), xla, rtol=0.05)


def test_mlp_flop_count_matches_xla():
    """One minibatch's forward and backward of jaxenc's MLP: :func:`roofline.mlp_epoch` with no
    validation rows against XLA's count of the gradient (in evaluation mode: batch statistics
    are not updated under jax.grad; the products are the same; elementwise work under 2%)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxenc.models.nonlinear import MLP

    n_in, batch = 2048, 128
    model = MLP(n_in, roofline.PCA_COMPONENTS, hidden=roofline.HIDDEN, dropout=0.2, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.zeros((batch, n_in))
    y = jnp.zeros((batch, roofline.PCA_COMPONENTS))

    def loss(p, r):
        return jnp.mean(jnp.abs(nnx.merge(graphdef, p, r)(x, train=False) - y))

    xla = _xla_flops(jax.jit(jax.grad(loss)), params, rest)
    np.testing.assert_allclose(roofline.mlp_epoch(n_in, batch, 0)["flop"], xla, rtol=0.05)


def test_matmul_peak_names_its_precisions():
    assert matmul_peak_gflops(64, "tf32", repeats=1) > 0
    with pytest.raises(ValueError, match="float32"):
        matmul_peak_gflops(64, "float16")


def test_only_missing_wheels_are_installed(tmp_path):
    present = tmp_path / "numpy-2.0.0-cp312-cp312-manylinux2014_x86_64.whl"
    absent = tmp_path / "surely_not_installed_dist-1.0-py3-none-any.whl"
    assert device_check.missing_wheels([present, absent]) == [absent]


def test_a_failing_step_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    """A step that fails and one that runs out of time are recorded; the next step still runs,
    and the results are copied to $OUT."""
    quick = "tests/test_device_check.py::test_only_missing_wheels_are_installed"
    monkeypatch.setattr(device_check, "STEPS", {"fails": device_check.Step(30, 30, (), ("tests/no_such_file.py",)),
                                                "passes": device_check.Step(60, 60, (), (quick,))})
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    summary = device_check.orchestrate(True, tmp_path / "results", None)
    assert not summary["steps"]["fails"]["ok"] and summary["steps"]["fails"]["returncode"] != 0
    assert summary["steps"]["passes"]["ok"], summary["steps"]["passes"]["output_tail"]
    copied = {p.name for p in (tmp_path / "out" / "results").iterdir()}
    assert {"device_check.json", "fails.log", "passes.log", "passes.xml"} <= copied

    record = device_check.run_process([sys.executable, "-c", "import time; time.sleep(60)"], {}, 1.0,
                                      tmp_path / "sleep.log")
    assert record["timed_out"] and not record["ok"] and record["seconds"] < 30
