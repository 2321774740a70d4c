"""The run store: every record of a run folder written atomically and read back, or a clear error."""

from __future__ import annotations

import stat

import numpy as np
import pytest

from jaxenc.errors import ConfigError, DataError
from jaxenc.store import RunStore, atomic_write


def test_predictions_round_trip_and_the_record_marks_them_complete(tmp_path):
    store = RunStore(tmp_path / "run")
    assert store.load_prediction("audio__ridge__voxels") is None and store.prediction_names() == []
    predictions = {"UTS01": np.arange(6, dtype=np.float64).reshape(3, 2)}
    store.save_prediction("audio__ridge__voxels", predictions, {"model": "ridge", "digest": "abc"})
    arrays, meta = store.load_prediction("audio__ridge__voxels")
    assert meta == {"model": "ridge", "digest": "abc"}
    assert arrays["UTS01"].dtype == np.float32
    np.testing.assert_array_equal(arrays["UTS01"], predictions["UTS01"])
    assert store.prediction_names() == ["audio__ridge__voxels"]
    # Arrays without their record (a fit killed between the two writes) are not a prediction.
    store.write_arrays("predictions/semantic__ridge__voxels.npz", predictions)
    assert store.load_prediction("semantic__ridge__voxels") is None
    assert store.prediction_names() == ["audio__ridge__voxels"]
    files = list((tmp_path / "run").rglob("*"))
    assert not [p for p in files if p.name.endswith(".tmp")], "temporary files left behind"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files if p.is_file())


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")

    def failing(fh):
        fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_reads_name_the_file(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(ConfigError, match="run `jaxenc extract` first"):
        store.features_index()
    store.save_features_index({"audio": {"kind": "planted"}})
    assert store.features_index() == {"audio": {"kind": "planted"}}
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="broken.json"):
        store.read_json("broken.json")
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="broken.npz") as info:
        store.read_arrays("broken.npz", subject="UTS02")
    assert info.value.subject == "UTS02"
    store.write_arrays("some.npz", {"r": np.zeros(3)})
    with pytest.raises(DataError, match=r"some.npz.*lacks \['p'\]"):
        store.read_arrays("some.npz", ["r", "p"])
    with pytest.raises(DataError, match="absent.npy"):
        store.read_array("absent.npy")


def test_timings_merge_and_nested_runs(tmp_path):
    store = RunStore(tmp_path)
    assert store.merge_timings({"extract": 1.234}) == {"extract": 1.2}
    assert store.merge_timings({"fit": 10.06}) == {"extract": 1.2, "fit": 10.1}
    assert store.child("nonlinearity").root == tmp_path / "nonlinearity"
    assert store.checkpoint_dir("x-1") == tmp_path / "checkpoints" / "x-1"


def test_a_refused_write_names_its_file(tmp_path):
    """write() on a full disk raises an OSError without a file name; the run's writes name it."""
    import errno

    from jaxenc.store import named_os_errors

    def full(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "run" / "report.html"
    with pytest.raises(OSError) as err:
        atomic_write(target, full)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(target))
    assert list((tmp_path / "run").iterdir()) == []  # no temporary left behind

    class WriterError(Exception):
        pass

    with pytest.raises(OSError, match=r"cannot write the file \(Error while serializing: I/O error; \d+ bytes free "
                                      r"on its disk\)") as err:
        with named_os_errors(target, (WriterError,)):
            raise WriterError("Error while serializing: I/O error\nmore detail")
    assert err.value.filename == str(target)
