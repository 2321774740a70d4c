"""A full-size synthetic subject, end to end, in bounded host memory: time and peak memory per stage.

    nohup nice -n 10 python benchmarks/fullsize.py > /tmp/fullsize.log 2>&1 &   # ~30-40 min, 2 cores
    python benchmarks/fullsize.py --fast     # 4000 voxels, 12 stories at 0.3 length: ~2 min
    python benchmarks/fullsize.py --stage features   # only stage 2, merged into the JSON

With ``--stage features`` only the feature stage runs (no responses are read, so the process
stays at a few hundred MB): its twin is written with the same stories and stimulus settings
but 100 voxels and 100 Hz audio under ``--root`` (default /work/fullsize_stimuli/ds003020);
the planted features depend on neither field. Its time and memory replace the recorded
``stages.features`` of the JSON, every other stage's record is kept, and
``rerun.features`` says when it ran, under what load, and what the stage recorded before.

The synthetic twin (one subject, UTS01, 90,000 voxels, the first 80 training stories at their
real lengths plus the test story with 10 repeats, 16 kHz audio; about 22 GB of float64 hf5)
is written once under ``--root`` (default /work/fullsize/ds003020, outside the repository)
and reused. Then, in this one process:

1. stream: the training responses are read story by story into one preallocated float32 array
   (:func:`jaxenc.stream.stack_story_rows`, 26,952 TRs x 90,000 voxels = 9.7 GB);
2. features: the planted oracle features (audio properties and semantic vectors) Lanczos
   downsampled, delayed 1-4 TRs (:func:`jaxenc.pipeline.design_matrix`);
3. pca: 512 components on all training stories, randomized solver (``--pca-iter`` power
   iterations), read as per-story blocks; scores computed story by story;
4. ridge: jaxenc ``RidgeCV`` (5 story-grouped folds) from the features to the 512 scores;
5. mlp: :func:`jaxenc.train.fit_encoders`, MLP (hidden 256), 5 folds, each fold fitting its
   own 512-component randomized PCA on its training stories, epochs capped at
   ``--max-epochs``;
6. evaluate: test-story predictions of both models scored in chunks of 8192 voxels
   (:func:`jaxenc.metrics.score` on a :func:`jaxenc.stream.pca_chunk_predictor`), inverse PCA
   projection of each chunk only.

Recorded per stage: wall seconds, VmRSS after the stage, VmHWM (the peak so far) from
/proc/self/status; and the test correlations (mean, median, top-1000 mean of r and cc_norm,
plus r per planted voxel class) in benchmarks/results/fullsize.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
from common import RESULTS_DIR, machine_info, write_results

GIB = 2**30
LIMIT_GB = 24.0


def proc_status() -> dict:
    """VmRSS and VmHWM (peak resident set) of this process, in GiB, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024 / GIB
    return out


class Stages:
    """Wall time and memory after each named stage, written to ``partial`` as each one ends,
    so a run stopped part way still leaves what it measured."""

    def __init__(self, partial: Path):
        self.records = {}
        self.partial = partial

    def run(self, name, fn):
        t0 = time.perf_counter()
        result = fn()
        mem = proc_status()
        self.records[name] = {"wall_s": round(time.perf_counter() - t0, 2),
                              "rss_gb_after": round(mem["VmRSS"], 3),
                              "peak_gb_so_far": round(mem["VmHWM"], 3)}
        print(f"[fullsize] {name}: {self.records[name]}", flush=True)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.partial.write_text(json.dumps({"benchmark": "fullsize", "complete": False,
                                            "stages": self.records}, indent=2) + "\n")
        return result


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small sizes, for a quick check")
    parser.add_argument("--root", type=Path, default=None, help="where the synthetic twin lives")
    parser.add_argument("--pca-iter", type=int, default=2, help="randomized PCA power iterations")
    parser.add_argument("--max-epochs", type=int, default=20, help="cap on MLP training epochs")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--stage", choices=("all", "features"), default="all",
                        help="run every stage, or only the feature stage (merged into the JSON)")
    return parser.parse_args()


FULL_STORIES = dict(subjects=("UTS01",), n_repeats=(10,), n_train_stories=80)


def feature_stage(stories, test, truth, respdict):
    """Stage 2: the planted oracle features aligned, delayed and stacked, audio then semantic.

    Returns
    -------
    X : ndarray of shape (n_train_trs, n_features), float32
    groups : ndarray of shape (n_train_trs,)
        Story of each row.
    slices : dict of str to slice
        Rows of each training story.
    X_test : ndarray of shape (n_test_trs, n_features), float32
    """
    from jaxenc.featuresets import MODALITIES
    from jaxenc.pipeline import design_matrix, planted_features

    planted = planted_features(truth, stories + [test])
    sets = [planted[name] for name in MODALITIES]
    design = design_matrix(sets, respdict, stories)
    return design.X, design.groups, design.slices, design_matrix(sets, respdict, [test]).X


def reference_check(truth, stories, X, slices):
    """Largest difference of the design's delay-1 audio columns from a float64 numpy
    formulation (dense Lanczos weights, trim, z-score), on the shortest and longest story."""
    from jaxenc import conventions as c

    lengths = {s: slices[s].stop - slices[s].start for s in stories}
    out = {}
    for story in (min(lengths, key=lengths.get), max(lengths, key=lengths.get)):
        stimulus = truth.stimulus(story)
        centres = c.TR * np.arange(truth.respdict[story] - c.PAD) - c.SOUND_START + c.TR / 2
        t = (centres[:, None] - stimulus.audio_times[None, :]) / c.TR
        weights = np.where(np.abs(t) > c.LANCZOS_WINDOW, 0.0,
                           np.sinc(t) * np.sinc(t / c.LANCZOS_WINDOW))
        rows = (weights @ stimulus.audio)[c.TRIM_START:-c.TRIM_END]
        expected = (rows - rows.mean(0)) / rows.std(0)
        got = X[slices[story], : stimulus.audio.shape[1]]  # delay 1: row t holds TR t - 1
        out[story] = {"rows": int(lengths[story]), "audio_samples": len(stimulus.audio_times),
                      "max_abs_diff": float(np.abs(got[1:] - expected[:-1]).max())}
    return out


def rerun_features(args):
    """Only the feature stage, on a twin with the full run's stories; merged into the JSON."""
    import datetime
    import os

    import jax

    from jaxenc import conventions
    from jaxenc.synthetic import SyntheticConfig, write_synthetic
    from jaxenc.synthetic.words import CONTROL_RATE

    config = SyntheticConfig.full(n_voxels=(100,), audio_rate=CONTROL_RATE, **FULL_STORIES)
    root = args.root or Path("/work/fullsize_stimuli/ds003020")
    t0 = time.perf_counter()
    truth = write_synthetic(root, config, progress=False)
    write_s = time.perf_counter() - t0
    out = args.out or RESULTS_DIR / "fullsize.json"
    doc = json.loads(out.read_text())
    stories = sorted(config.subject_stories("UTS01"))
    load_start = os.getloadavg()
    stages = Stages(out.with_suffix(".features.partial.json"))
    rss_before = proc_status()["VmRSS"]
    compiles = []

    def count(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count)
    X, _, slices, X_test = stages.run("features", lambda: feature_stage(
        stories, conventions.TEST_STORY, truth, truth.respdict))
    jax.monitoring.unregister_event_duration_listener(count)
    check = reference_check(truth, stories, X, slices)
    shape = {"n_train_trs": int(X.shape[0]), "n_test_trs": int(X_test.shape[0]),
             "n_features": int(X.shape[1])}
    expected = {k: doc["dataset"][k] for k in shape}
    if shape != expected:
        raise SystemExit(f"the re-run's design {shape} is not the recorded run's {expected}")
    previous = doc["stages"]["features"]
    doc["stages"]["features"] = stages.records["features"]
    doc.setdefault("rerun", {})["features"] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": machine_info().get("git_commit"),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "rss_gb_before_stage": round(rss_before, 3),
        "xla_compilations": {"count": len(compiles), "seconds": round(sum(compiles), 2),
                             "stories_aligned": 2 * (len(stories) + 1)},
        "previous": previous,
        "design": shape,
        "reference_check": check,
        "root": str(root), "write_s": round(write_s, 1),
        "note": ("only the feature stage re-ran, in its own process (no response matrix "
                 "resident, so rss/peak are the stage's own, not on top of 9.3 GB); the other "
                 "stages' records are those of the full run"),
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    stages.partial.unlink(missing_ok=True)
    print(json.dumps(doc["rerun"]["features"], indent=2))


def main():
    args = parse()
    if args.stage == "features":
        rerun_features(args)
        return
    from jaxenc.synthetic import SyntheticConfig, VoxelClass, write_synthetic

    if args.fast:
        config = SyntheticConfig.demo(subjects=("UTS01",), n_voxels=(4000,), n_repeats=(10,),
                                      audio_rate=16000)
        root = args.root or Path("/tmp/fullsize_fast/ds003020")
    else:
        config = SyntheticConfig.full(n_voxels=(90000,), audio_rate=16000, **FULL_STORIES)
        root = args.root or Path("/work/fullsize/ds003020")
    stages = Stages(args.out or RESULTS_DIR / "fullsize.json")
    t0 = time.perf_counter()
    truth = write_synthetic(root, config, progress=False)
    write_s = time.perf_counter() - t0
    # The writer's memory is not part of the pipeline's: record the baseline it leaves.
    baseline = proc_status()

    import jax

    from jaxenc import conventions
    from jaxenc.data import LeBelDataset
    from jaxenc.decomp import PCA
    from jaxenc.metrics import ScoreConfig, score
    from jaxenc.models import RidgeCV
    from jaxenc.models.nonlinear import MLP
    from jaxenc.stream import fit_chunk_predictor, pca_chunk_predictor, stack_story_rows, story_views
    from jaxenc.train import SubjectData, TrainConfig, fit_encoders

    subject, test = "UTS01", conventions.TEST_STORY
    ds = LeBelDataset(root, cache_bytes=0)
    stories = ds.stories(subject)
    n_voxels = ds.n_voxels(subject)
    rows = {s: ds.respdict[s] - conventions.RESPDICT_OFFSET for s in stories}

    Y, slices = stages.run("stream_responses", lambda: stack_story_rows(
        functools.partial(ds.responses, subject), stories, rows, n_voxels, subject=subject))
    views = story_views(Y, slices)

    X, groups, design_slices, X_test = stages.run(
        "features", lambda: feature_stage(stories, test, truth, ds.respdict))
    assert design_slices == slices, "design rows and response rows disagree"

    def pca_stage():
        pca = PCA(512, method="randomized", n_iter=args.pca_iter).fit([views[s] for s in stories])
        Z = np.concatenate([np.asarray(pca.transform(views[s])) for s in stories])
        return pca, Z

    pca, Z = stages.run("pca_512_randomized", pca_stage)
    ridge = stages.run("ridge", lambda: RidgeCV(alphas=np.logspace(0, 5, 11), cv=5, lapack_threads=1)
                       .fit(X, Z, groups=groups))

    cfg = TrainConfig(n_folds=5, n_components=512, max_epochs=args.max_epochs, patience=10,
                      batch_size=128, epochs_per_call=5, checkpoint_every=5,
                      pca_method="randomized", pca_n_iter=args.pca_iter)
    feats = {s: X[slices[s]] for s in stories}
    make = functools.partial(MLP, hidden=256)
    fit = stages.run("mlp_fit_encoders", lambda: fit_encoders(
        make, {subject: SubjectData(feats, views)}, cfg, progress=False))

    scoring = ScoreConfig()

    def evaluate():
        repeats = ds.test_repeats(subject)
        ridge_scores = score(pca_chunk_predictor([pca], [ridge.predict(X_test)]), repeats, scoring, chunk=8192)
        mlp_scores = score(fit_chunk_predictor(fit, {subject: X_test}, subject), repeats, scoring, chunk=8192)
        return ridge_scores, mlp_scores

    ridge_scores, mlp_scores = stages.run("evaluate_chunked", evaluate)
    classes = truth.voxel_class[subject]

    def report(scores):
        out = scores.summary()
        out["r_mean_by_planted_class"] = {
            VoxelClass(int(c)).name.lower(): float(np.nanmean(scores.r[classes == c]))
            for c in np.unique(classes)}
        return out

    peak = proc_status()["VmHWM"]
    payload = {
        "complete": True,
        "description": __doc__.strip().splitlines()[0],
        "notes": [
            f"Peak host memory {peak:.2f} GiB (VmHWM of the one process, the 9.7 GB float32 "
            f"response matrix included) against the {LIMIT_GB:.0f} GB target.",
            f"Randomized PCA with {args.pca_iter} power iterations (jaxenc's default is 7): "
            "every iteration is two passes over the 9.7 GB matrix; 6 PCAs (one for ridge, one "
            "per fold) would take about 3x longer at 7 on this shared 2-core machine.",
            f"MLP training capped at {args.max_epochs} epochs (patience 10).",
            "Dataset writing is not part of the measured pipeline; it ran once, before.",
            "One CPU device (2 shared cores, shared with other jobs, load about 5-8).",
        ],
        "dataset": {"root": str(root), "subject": subject, "n_voxels": int(n_voxels),
                    "n_train_stories": len(stories), "n_train_trs": int(Y.shape[0]),
                    "n_test_trs": int(X_test.shape[0]), "n_features": int(X.shape[1]),
                    "responses_gb_float32": round(Y.nbytes / GIB, 3), "write_s": round(write_s, 1)},
        "settings": {"pca_components": 512, "pca_method": "randomized", "pca_n_iter": args.pca_iter,
                     "ridge_alphas": "logspace(0, 5, 11)", "ridge_cv": 5, "mlp_hidden": 256,
                     "n_folds": 5, "max_epochs": args.max_epochs, "loss": cfg.loss,
                     "eval_chunk_voxels": 8192, "eval_permutations": scoring.permutations,
                     "fast": args.fast},
        "baseline_after_write": {k: round(v, 3) for k, v in baseline.items()},
        "stages": stages.records,
        "peak_host_memory_gb": round(peak, 3),
        "under_24gb": bool(peak < LIMIT_GB),
        "mlp_epochs_run": int(np.nanmax(np.sum(np.isfinite(fit.history[:, :, 1]), axis=1))),
        "mlp_best_epoch": fit.best_epoch.tolist(),
        "pca_explained_variance_ratio_total": float(np.sum(np.asarray(pca.explained_variance_ratio_))),
        "test_scores": {"ridge": report(ridge_scores), "mlp": report(mlp_scores)},
        "devices": [str(d) for d in jax.devices()],
    }
    write_results("fullsize", payload, ratios={"memory_headroom_vs_24gb": LIMIT_GB / peak},
                  out=args.out)


if __name__ == "__main__":
    main()
