"""The interaction shares in RunResults (exact round trip, shape check) and in the report."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from jaxenc.errors import DataError
from jaxenc.report import write_report
from jaxenc.report.results import RunResults
from tests.report.conftest import SUBJECTS, _scores, make_results


def _with_interactions() -> RunResults:
    """make_results' run with DIMLP on audio+semantic PCA targets and shares for it and the MLP."""
    results = make_results(3)
    rng = np.random.default_rng(3)
    results.models += [_scores(rng, s, n, "audio+semantic", "dimlp", "pca", 0.01) for s, n in SUBJECTS.items()]
    results.interactions = {s: {"mlp/pca": rng.uniform(0, 1, n).astype(np.float32), "dimlp/pca": np.zeros(n)}
                            for s, n in SUBJECTS.items()}
    return results


def test_interaction_shares_round_trip_exactly(tmp_path):
    results = _with_interactions()
    results.save(tmp_path / "run")
    loaded = RunResults.load(tmp_path / "run")
    assert loaded.interactions.keys() == results.interactions.keys()
    for subject, entry in results.interactions.items():
        assert loaded.interactions[subject].keys() == entry.keys()
        for key, share in entry.items():
            np.testing.assert_array_equal(loaded.interactions[subject][key], share)
            assert loaded.interactions[subject][key].dtype == share.dtype
    assert (tmp_path / "run" / "interactions" / "UTS01" / "mlp-pca.npy").is_file()


def test_interaction_shares_of_another_length_are_refused():
    results = _with_interactions()
    results.interactions["UTS01"]["mlp/pca"] = np.zeros(3)
    with pytest.raises(DataError, match="interaction shares mlp/pca"):
        results.validate()


def test_report_shows_the_shares_beside_the_mlp_dimlp_gain(tmp_path):
    results = _with_interactions()
    paths = write_report(results, tmp_path, formats=("md",))
    text = paths["md"].read_text()
    section = text.split("## Audio x semantic interactions")[1].split("\n## ")[0]
    assert (tmp_path / "figures" / "interactions.png").is_file()
    # The Spearman correlation of the table, against scipy on the voxels significant for either.
    share = results.interactions["UTS01"]["mlp/pca"].astype(np.float64)
    mlp = results.find(subject="UTS01", features="audio+semantic", model="mlp", target="pca")[0].scores
    dimlp = results.find(subject="UTS01", features="audio+semantic", model="dimlp", target="pca")[0].scores
    either = mlp.significant | dimlp.significant
    rho = spearmanr(share[either], (mlp.r.astype(np.float64) - dimlp.r)[either]).statistic
    row = next(line for line in section.splitlines() if line.startswith("| UTS01") and "| mlp" in line)
    assert f"{rho:.3f}" in row and f"{np.median(share):.3f}" in row
    # Without the analysis the section says so.
    plain = write_report(make_results(3), tmp_path / "plain", formats=("md",))["md"].read_text()
    assert "skipped: no interaction attribution in this run" in plain
