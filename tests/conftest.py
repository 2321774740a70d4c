"""Fixtures shared across the test tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# XLA's compiled programs, kept on disk for every process of the test run: the suite compiles
# the same programs in many processes (`jaxenc run` subprocesses, 8-device children, the
# multi-process check), and a contributor's second run compiles almost nothing. The cache is
# keyed by the program, the jax/jaxlib version, the backend and XLA's flags, so a stale entry is
# never used; it lives in pytest's own cache folder (ignored by git; `pytest --cache-clear`
# leaves it, `rm -r .pytest_cache` clears it). An outer JAX_COMPILATION_CACHE_DIR wins.
COMPILATION_CACHE = {
    "jax_compilation_cache_dir": str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"),
    # Every program, not only those over jax's default 1 s of compile time: most of the
    # suite's programs are small and compiled again in each child process.
    "jax_persistent_cache_min_compile_time_secs": 0.3,
    "jax_persistent_cache_min_entry_size_bytes": 0,
    # Least recently used entries go beyond 2 GiB.
    "jax_compilation_cache_max_size": 2 * 1024**3,
}


def pytest_configure(config):
    """Point this process and every child it starts at the shared compilation cache."""
    for name, value in COMPILATION_CACHE.items():
        os.environ.setdefault(name.upper(), str(value))
    if "jax" in sys.modules:  # imported by a plugin before this hook, so it read the env already
        import jax

        for name, value in COMPILATION_CACHE.items():
            jax.config.update(name, type(value)(os.environ[name.upper()]))


@pytest.fixture(scope="session")
def planted_twin(tmp_path_factory):
    """A small synthetic twin for planted-truth tests, written once per session.

    Six training stories heard by both subjects and a test story of 90 rows (nine 10-TR blocks
    for the permutation test), 320 / 280 voxels.

    Returns
    -------
    tuple of (Path, jaxenc.synthetic.SyntheticTruth)
    """
    from jaxenc.synthetic import SyntheticConfig, write_synthetic

    root = tmp_path_factory.mktemp("planted_twin")
    config = SyntheticConfig.tiny(n_train_stories=6, fewer_stories=(), min_respdict=110)
    return root, write_synthetic(root, config, progress=False)
