"""Tests of jaxenc.align.make_delayed against a numpy loop over rows and delays."""

import jax
import numpy as np
import pytest

from jaxenc.align import make_delayed
from jaxenc.conventions import DELAYS
from jaxenc.errors import AlignmentError, ConfigError


def delayed_reference(x, delays):
    n, f = x.shape
    out = np.zeros((n, f * len(delays)), x.dtype)
    for block, k in enumerate(delays):
        for t in range(n):
            if 0 <= t - k < n:
                out[t, block * f : (block + 1) * f] = x[t - k]
    return out


def test_golden_values():
    # Delay 1 moves each row one TR later, -1 one TR earlier, 0 leaves it, 3 >= n is all zero.
    x = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    expected = np.array(
        [
            [0.0, 0.0, 2.0, 20.0, 1.0, 10.0, 0.0, 0.0],
            [1.0, 10.0, 3.0, 30.0, 2.0, 20.0, 0.0, 0.0],
            [2.0, 20.0, 0.0, 0.0, 3.0, 30.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_array_equal(np.asarray(make_delayed(x, (1, -1, 0, 3))), expected)


@pytest.mark.parametrize(
    "delays", [DELAYS, (0,), (2, -3, 0, 1, -1), (-7, 7, 6, -6, 5), [4, 4, -2]]
)
def test_matches_loop_reference(delays):
    x = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    got = make_delayed(x, delays)
    assert got.shape == (7, 3 * len(delays)) and got.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(got), delayed_reference(x, tuple(delays)))


def test_jit_with_static_delays():
    x = np.random.default_rng(1).standard_normal((9, 2)).astype(np.float32)
    delays = (1, -2, 0)
    got = jax.jit(make_delayed, static_argnums=1)(x, delays)
    np.testing.assert_array_equal(np.asarray(got), delayed_reference(x, delays))


@pytest.mark.parametrize("delays", [(), (1.0, 2.0), (True,), 3, ("1",)])
def test_bad_delays_raise_config_error(delays):
    with pytest.raises(ConfigError, match="delays"):
        make_delayed(np.zeros((4, 2)), delays)


def test_non_2d_features_raise_alignment_error():
    with pytest.raises(AlignmentError, match=r"2-D.*\(4,\)"):
        make_delayed(np.zeros(4), (1, 2))


def test_groups_delay_each_group_alone():
    rng = np.random.default_rng(2)
    parts = [rng.standard_normal((n, 3)).astype(np.float32) for n in (5, 2, 7)]
    groups = np.repeat([0, 1, 2], [5, 2, 7])
    delays = (1, -2, 0, 3)
    got = make_delayed(np.vstack(parts), delays, groups)
    expected = np.vstack([delayed_reference(p, delays) for p in parts])
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_groups_of_another_length_raise_alignment_error():
    with pytest.raises(AlignmentError, match=r"one label per row.*\(4,\).*\(3,\)"):
        make_delayed(np.zeros((4, 2)), (1,), groups=np.zeros(3, int))
