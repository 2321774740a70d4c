"""A job carries its encoder, parsed once from the config's name (TableConfig.encoders)."""

from __future__ import annotations

import pytest

from jaxenc.errors import ConfigError
from jaxenc.experiment import fitting, load_config
from jaxenc.models import encoder


def test_jobs_carry_the_encoders_the_config_parsed():
    config = load_config(None, ['table.models=["ridge", "mllinear", "deepmlp-3"]', "analyses.layer_sweep=[1]"])
    specs = config.table.encoders
    assert specs is config.table.encoders  # parsed once per config
    assert specs == tuple(encoder(name) for name in ("ridge", "mllinear", "deepmlp-3"))
    assert specs[2].depth == 3 and specs[0].is_ridge and not specs[1].is_ridge
    # The table's jobs hold those very specs (what the checks and the fit read), not new parses.
    jobs = [job for job in fitting.table_jobs(config) if not job.sweep]
    assert all(any(job.spec is spec for spec in specs) for job in jobs)
    assert {job.model for job in jobs} == {"ridge", "mllinear", "deepmlp-3"}
    assert fitting.job_name(jobs[0]) == fitting.record_name(jobs[0].features, jobs[0].model, jobs[0].target)
    (sweep,) = [job for job in fitting.table_jobs(config) if job.sweep]
    assert sweep.spec == encoder("ridge") and sweep.model == "ridge"


def test_an_unknown_encoder_names_its_key():
    with pytest.raises(ConfigError, match=r"table.models: unknown model 'lstm'"):
        load_config(None, ['table.models=["ridge", "lstm"]'])
