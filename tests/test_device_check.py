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


def test_pytest_steps_take_the_suites_addopts_less_xdists(tmp_path):
    written = tmp_path / "pyproject.toml"
    written.write_text("[tool.pytest.ini_options]\n"
                       "addopts = \"-m 'not slow' -n 4 --dist=loadfile -ra -nauto --numprocesses 2 -p foo\"\n")
    assert device_check.addopts_without_xdist(written) == "-m 'not slow' -ra -p foo"
    command = device_check.step_command("tests_ports", device_check.STEPS["tests_ports"], True, tmp_path)
    assert f"addopts={device_check.addopts_without_xdist()}" in command
    assert not {"-n", "--dist"} & set(device_check.addopts_without_xdist().split())


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


# A compiled program in XLA's HLO text form: a copy, an asynchronous copy (start and done: one
# kernel), a 4-trip loop (a fusion and an add in its body, a compare in its condition), a
# library call and a two-way conditional (two fusions in one branch, one in the other);
# parameters, constants, tuples and get-tuple-elements launch nothing. Kernels:
# 1 + 1 + 4 * 2 + (4 + 1) * 1 + 1 + max(2, 1) = 18, 13 of them in the loop.
_HLO = """HloModule m, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

%fused_computation (param_0: f32[8]) -> f32[8] {
  %param_0 = f32[8]{0} parameter(0)
  ROOT %sine.1 = f32[8]{0} sine(%param_0)
}

%body (arg: (s32[], f32[8])) -> (s32[], f32[8]) {
  %arg = (s32[], f32[8]{0}) parameter(0)
  %gte.0 = s32[] get-tuple-element(%arg), index=0
  %gte.1 = f32[8]{0} get-tuple-element(%arg), index=1
  %fusion.1 = f32[8]{0} fusion(%gte.1), kind=kLoop, calls=%fused_computation
  %constant.2 = s32[] constant(1)
  %add.2 = s32[] add(%gte.0, %constant.2)
  ROOT %tuple.1 = (s32[], f32[8]{0}) tuple(%add.2, %fusion.1)
}

%cond (arg.1: (s32[], f32[8])) -> pred[] {
  %arg.1 = (s32[], f32[8]{0}) parameter(0)
  %gte.2 = s32[] get-tuple-element(%arg.1), index=0
  %constant.4 = s32[] constant(4)
  ROOT %compare.1 = pred[] compare(%gte.2, %constant.4), direction=LT
}

%branch_a (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  %fusion.2 = f32[8]{0} fusion(%a), kind=kLoop, calls=%fused_computation
  ROOT %fusion.3 = f32[8]{0} fusion(%fusion.2), kind=kLoop, calls=%fused_computation
}

%branch_b (b: f32[8]) -> f32[8] {
  %b = f32[8]{0} parameter(0)
  ROOT %fusion.4 = f32[8]{0} fusion(%b), kind=kLoop, calls=%fused_computation
}

ENTRY %main (p: f32[8], q: s32[]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  %q = s32[] parameter(1)
  %constant.1 = s32[] constant(0)
  %copy.1 = f32[8]{0} copy(%p)
  %copy-start.1 = (f32[8]{0}, f32[8]{0}, u32[]) copy-start(%p)
  %copy-done.1 = f32[8]{0} copy-done(%copy-start.1)
  %tuple.0 = (s32[], f32[8]{0}) tuple(%constant.1, %copy.1)
  %while.1 = (s32[], f32[8]) while(%tuple.0), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"4"}}
  %gte.9 = f32[8]{0} get-tuple-element(%while.1), index=1
  %custom-call.1 = f32[8]{0} custom-call(%gte.9), custom_call_target="lapack_ssyevd"
  ROOT %conditional.1 = f32[8] conditional(%q, %copy.1, %custom-call.1), branch_computations={%branch_a,%branch_b}
}
"""


def test_kernel_count_of_a_written_program():
    counted = roofline.count_kernels(_HLO)
    assert counted["kernels"] == 18 and counted["in_loops"] == 13 and counted["unknown_trip_counts"] == 0
    assert counted["by_op"] == {"copy": 1, "copy-start": 1, "while/fusion": 4, "while/add": 4, "while/compare": 5,
                                "custom-call": 1, "fusion": 2}


def test_kernel_count_of_a_compiled_loop_grows_with_its_trips():
    """Kernels are affine in a loop's trip count, however XLA fuses or unrolls its body."""
    import jax
    import jax.numpy as jnp

    def kernels(n):
        fn = jax.jit(lambda x: jax.lax.fori_loop(0, n, lambda i, y: jnp.sin(y) * y + i, x))
        return roofline.count_kernels(fn.lower(jnp.ones(8)).compile().as_text())["kernels"]

    k3, k5, k7 = kernels(3), kernels(5), kernels(7)
    assert k5 > k3 and k7 - k3 == 2 * (k5 - k3)


def test_stored_moments_adamw_is_jaxencs_in_float32_and_rounds_bfloat16_moments_only():
    """The AdamW of the moment-bytes measurement: jaxenc's to the bit with float32 moments;
    with a bfloat16 first moment, one step from zero moments differs from float32 moments by
    the first moment's rounding alone: the update ``lr * m_hat / sqrt(v_hat)`` (magnitude
    ``lr`` at the first step) moved by at most bfloat16's unit roundoff 2^-8, plus the float32
    rounding of ``p + u`` (one ulp of p). A moment cast back to float32 before its update would
    move it by 0 and fail the dtype check; a missing bias correction by ~10 x lr."""
    import jax
    import jax.numpy as jnp

    from jaxenc.train import _adamw

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)}
    lr = 3e-3
    state = _adamw.init(params, lr, 0.1)
    grads = {"w": jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)}
    apply = jnp.asarray(True)
    ours = jax.jit(roofline.adamw_stored_moments)(params, grads, state, apply)
    ref = jax.jit(_adamw.update)(params, grads, state, apply)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(a, b)
    low = {**state, "mu": jax.tree.map(lambda a: a.astype(jnp.bfloat16), state["mu"])}
    new, new_state = jax.jit(roofline.adamw_stored_moments)(params, grads, low, apply)
    assert new_state["mu"]["w"].dtype == jnp.bfloat16 and new_state["nu"]["w"].dtype == jnp.float32
    bound = lr * 2.0**-8 + np.spacing(np.abs(np.asarray(params["w"])))
    assert np.all(np.abs(np.asarray(new["w"]) - np.asarray(ref[0]["w"])) <= bound)


def test_kernel_count_of_a_program_compiled_for_a_tpu_without_one():
    """XLA:TPU's program for one v5e chip, compiled through libtpu (skipped without it): one
    fused elementwise kernel, as on the CPU."""
    pytest.importorskip("libtpu")
    import jax
    import jax.numpy as jnp

    compile_on_tpu = roofline.deviceless_tpu()
    compiled = compile_on_tpu(jax.jit(lambda x: jnp.sin(x) * x + 1), jax.ShapeDtypeStruct((8, 128), jnp.float32))
    assert "T(8,128)" in compiled.as_text()  # a TPU layout: tiles of 8 x 128
    assert roofline.count_kernels(compiled.as_text())["kernels"] == 1
