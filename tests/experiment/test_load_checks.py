"""Settings and layouts refused before any work: the subjects are the folders holding response
files, subject names are file-name safe, every suggested fix is accepted, and the memory of the
largest compiled programs is compared with the device's."""

from __future__ import annotations

import re
import shutil
import types

import pytest

from jaxenc.errors import ConfigError
from jaxenc.experiment import Experiment, load_config
from jaxenc.experiment.checks import check_memory
from jaxenc.experiment.fitting import table_jobs
from tests.experiment._runs import TINY, run_folder

# Every subject of the tiny twin, planted features, ridge only.
EVERY_SUBJECT = [o for o in TINY if not o.startswith("data.subjects")] + [
    "audio.source=planted", "semantic.source=planted", 'table.models=["ridge"]']


def _experiment(out, overrides, lines=None):
    log = (lambda line: None) if lines is None else lines.append
    return Experiment(load_config(None, overrides), out, progress=False, log=log)


def test_subjects_are_the_folders_holding_responses_and_each_suggested_fix_is_accepted(prepared, tmp_path):
    out = run_folder(tmp_path / "run", prepared)
    folders = out / "data" / "derivative" / "preprocessed_data"
    (folders / "notes").mkdir()
    (folders / "notes" / "readme.txt").write_text("scan notes")
    lines = []
    exp = _experiment(out, EVERY_SUBJECT, lines)
    exp.check()
    assert exp.data.subjects == ["UTS01", "UTS02"] and exp.data.dataset.ignored_folders == ["notes"]
    assert "subjects: UTS01, UTS02; ignored (no .hf5 response files): notes/" in lines

    # A subject folder whose name cannot name the run's score folders stops the run at its start.
    shutil.copytree(folders / "UTS01", folders / "UTS 01!")
    with pytest.raises(ConfigError, match=r"subject names must be file-name safe .*got 'UTS 01!'") as err:
        _experiment(out, EVERY_SUBJECT).check()
    assert err.value.path == str(folders / "UTS 01!")
    shutil.rmtree(folders / "UTS 01!")

    # One training story is too few for any fold count: the advice is to leave the subject out,
    # and that advice is a setting the run accepts.
    exp = _experiment(out, EVERY_SUBJECT)
    for story in exp.data.train_stories("UTS02")[1:]:
        (folders / "UTS02" / f"{story}.hf5").unlink()
    with pytest.raises(ConfigError) as err:
        _experiment(out, EVERY_SUBJECT).check()
    message = str(err.value)
    assert "subject UTS02 has 1 training stories, too few for cross-validation (at least 2 folds" in message
    fix = re.search(r"--set '([^']+)'", message).group(1)
    assert fix == 'data.subjects=["UTS01"]'
    _experiment(out, EVERY_SUBJECT + [fix]).check()


def test_programs_larger_than_the_device_are_refused_naming_the_setting(prepared, tmp_path):
    out = run_folder(tmp_path / "run", prepared)
    device = (10**9, "a 1 GB test device")
    voxels = 320  # the tiny twin's; the table's targets include voxels, above its 8 components

    def check(*overrides):
        config = load_config(None, TINY + ['table.models=["ridge", "mlp"]', *overrides])
        exp = Experiment(config, out, progress=False, log=lambda line: None)
        check_memory(config, exp.data, table_jobs(config), memory=device)

    check()  # the tiny settings fit
    # 2 folds x 1 grid point x hidden x 320 outputs x 16 bytes (float32 weight, gradient, 2 Adam moments).
    with pytest.raises(ConfigError, match=rf"networks.hidden = 1000000: the fits' compiled program needs at least "
                                          rf"{2 * 10**6 * voxels * 16 / 1e9:.1f} GB .*more than the 1.0 GB of a 1 GB "
                                          r"test device: lower networks.hidden"):
        check("networks.hidden=1000000")
    # 2 models x 10^8 epochs x 8 bytes of loss history.
    with pytest.raises(ConfigError, match=r"train.max_epochs = 100000000: .* at least 1.6 GB .*lower train.max_epochs"):
        check("train.max_epochs=100000000")
    # 10^8 permutation keys x 16 bytes.
    with pytest.raises(ConfigError, match=r"evaluate.permutations = 100000000: .* at least 1.6 GB .*lower evaluate"):
        check("evaluate.permutations=100000000")
    # Ridge alone trains no network.
    config = load_config(None, TINY + ['table.models=["ridge"]', "networks.hidden=1000000"])
    check_memory(config, Experiment(config, out, progress=False, log=lambda line: None).data, table_jobs(config),
                 memory=device)


class _Layout:
    """What check_memory reads of a run's data: subjects, their training stories and voxels."""

    def __init__(self, voxels: dict, n_stories: int):
        self.subjects = list(voxels)
        self.dataset = type("Dataset", (), {"n_voxels": staticmethod(voxels.__getitem__)})()
        self._stories = [f"story{i}" for i in range(n_stories)]

    def train_stories(self, subject):
        return self._stories


def test_the_memory_check_counts_every_model_one_program_stacks():
    # Voxel targets: UTS01 and UTS02 (1000 voxels each) train in one program, UTS03 (500) in
    # another. Each subject is there on its 12 stories and on 3 and 6 of them (fractions 1/4,
    # 1/2, 1 with 3 folds) in each of 4 draws: 1 + 4 x 2 = 9 entries, x 3 folds, x 2 subjects.
    data = _Layout({"UTS01": 1000, "UTS02": 1000, "UTS03": 500}, n_stories=12)
    config = load_config(None, ['table.models=["mlp"]', 'table.targets=["voxels"]', "train.n_folds=3",
                                "analyses.data_fractions=[0.25, 0.5, 1.0]", "analyses.data_draws=4",
                                "networks.hidden=1000", "train.max_epochs=10"])
    models = 2 * 9 * 3
    need = models * 1000 * 1000 * 16 + models * 10 * 8
    check_memory(config, data, table_jobs(config), memory=(need, "exactly enough"))
    with pytest.raises(ConfigError, match=rf"at least {need / 1e9:.1f} GB \({models} models x 1000 hidden units x "
                                          r"1000 outputs x 16 bytes, .*lower networks.hidden"):
        check_memory(config, data, table_jobs(config), memory=(need - 1, "a device one byte short"))
    # Over 8 devices a device holds ceil(54 / 8) = 7 of them (check_memory reads the mesh's size).
    eight = types.SimpleNamespace(size=8)
    per_device = 7 * 1000 * 1000 * 16 + 7 * 10 * 8
    check_memory(config, data, table_jobs(config), memory=(per_device, "enough for 7"), mesh=eight)
    with pytest.raises(ConfigError, match=r"\(7 models per device of 8 x 1000 hidden units"):
        check_memory(config, data, table_jobs(config), memory=(per_device - 1, "short of 7"), mesh=eight)
    # PCA targets: every subject in one program, 3 x 9 x 3 models of table.n_components outputs.
    pca = load_config(None, ['table.models=["mlp"]', 'table.targets=["pca"]', "train.n_folds=3",
                             "analyses.data_fractions=[0.25, 0.5, 1.0]", "analyses.data_draws=4",
                             "networks.hidden=1000", "train.max_epochs=10", "table.n_components=100"])
    need = 81 * 1000 * 100 * 16 + 81 * 10 * 8
    check_memory(pca, data, table_jobs(pca), memory=(need, "exactly enough"))
    with pytest.raises(ConfigError, match=r"\(81 models x 1000 hidden units x 100 outputs"):
        check_memory(pca, data, table_jobs(pca), memory=(need - 1, "a device one byte short"))


def test_counts_beyond_32_bits_are_refused_at_load():
    for key in ("evaluate.permutations", "train.max_epochs", "seed", "networks.hidden"):
        with pytest.raises(ConfigError, match=rf"{key} = 1000000000000 does not fit a 32-bit integer; expected at "
                                              r"most 2147483647"):
            load_config(None, [f"{key}=1000000000000"])
