"""Fixtures of the alignment tests."""

from __future__ import annotations

import contextlib

import jax
import pytest

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def _collect():
    events = []

    def listener(event, duration, **kwargs):
        if event == _COMPILE_EVENT:
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def backend_compiles():
    """A context manager yielding the list of XLA compilations made inside it (every jitted
    program and every eager op compiled anew), after clearing JAX's caches so the first use
    of a program is seen."""
    jax.clear_caches()
    return _collect
