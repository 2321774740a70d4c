"""A full-size synthetic subject through `jaxenc run`'s own stages: time and peak host memory per stage.

    nohup nice -n 10 python benchmarks/fullsize.py > /tmp/fullsize.log 2>&1 &   # full size, 8 host devices
    python benchmarks/fullsize.py --fast --out /tmp/fullsize_fast.json   # 4000 voxels, demo stories: minutes

The run is an ordinary experiment (:class:`jaxenc.experiment.Experiment`, the stages of
``jaxenc run``), so this script measures the path users run, not a copy of it: one subject,
UTS01, of the synthetic twin (``data.preset = "full"``: 90,000 voxels, the first 80 training
stories at their real lengths plus the test story with 10 repeats, 16 kHz audio; about 22 GB of
float64 hf5, written once into ``RUN/data`` and reused), its planted features, ridge and the MLP
(hidden 256) on audio+semantic to 512 principal components (randomized solver, ``--pca-iter``
power iterations), 5 story-grouped folds, epochs capped at ``--max-epochs``. The stages:

1. twin: the synthetic twin written (skipped when ``RUN/data`` holds it; not part of the
   pipeline's memory: the baseline after it is recorded);
2. extract: the planted features into the run's feature cache;
3. fit: every job through :func:`jaxenc.pipeline.fit_predict` on the run's mesh
   (``--host-devices`` CPU devices, ``run.devices = 0``): the training responses read story by
   story into one float32 array (26,952 TRs x 90,000 voxels = 9.7 GB), the PCAs, ridge, the
   MLP's subject x fold stack;
4. evaluate: the stored test-story predictions scored (:func:`jaxenc.metrics.score`).

Recorded per stage: wall seconds, VmRSS after the stage, VmHWM (the peak so far) from
/proc/self/status, against the 24 GB target; and the test correlations (the run's summary, plus
r per planted voxel class) in benchmarks/results/fullsize.json (``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from common import RESULTS_DIR, write_results

GIB = 2**30
LIMIT_GB = 24.0
SUBJECT = "UTS01"


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
    parser.add_argument("--run", type=Path, default=None, help="run folder (holds the twin between runs)")
    parser.add_argument("--pca-iter", type=int, default=2, help="randomized PCA power iterations")
    parser.add_argument("--max-epochs", type=int, default=20, help="cap on MLP training epochs")
    parser.add_argument("--host-devices", type=int, default=8,
                        help="CPU devices of the run's mesh (XLA_FLAGS; ignored on GPUs and TPUs)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    return parser.parse_args()


def overrides(args) -> list[str]:
    """The experiment's settings: the twin's size, the planted features, the models, the folds."""
    twin = (f'{{subjects = ["{SUBJECT}"], n_voxels = [4000], n_repeats = [10], audio_rate = 16000}}' if args.fast
            else f'{{subjects = ["{SUBJECT}"], n_voxels = [90000], n_repeats = [10], audio_rate = 16000, '
                 "n_train_stories = 80}")
    return [
        "name=fullsize", f"data.preset={'demo' if args.fast else 'full'}", f"data.synthetic={twin}",
        "audio.source=planted", "semantic.source=planted",
        'table.feature_sets=["audio+semantic"]', 'table.models=["ridge","mlp"]', 'table.targets=["pca"]',
        "table.n_components=512", "table.pca_method=randomized", f"table.pca_n_iter={args.pca_iter}",
        "ridge.log10_alphas=[0, 5, 11]", "ridge.folds=5", "train.n_folds=5", f"train.max_epochs={args.max_epochs}",
        "train.patience=10", "train.batch_size=128", "train.epochs_per_call=5", "train.checkpoint_every=5",
        "networks.hidden=256", "analyses.partition=false", "analyses.clustering=false", "nonlinearity.run=false",
    ]


def main():
    args = parse()
    if args.host_devices > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        # Read when the backend starts: before jax is imported.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.host_devices}")
    import jax

    from jaxenc.distributed import describe_mesh
    from jaxenc.experiment import Experiment, load_config
    from jaxenc.synthetic import VoxelClass

    settings = overrides(args)
    config = load_config(None, settings)
    run = args.run or Path("/tmp/fullsize_fast/run" if args.fast else "/work/fullsize/run")
    exp = Experiment(config, run, progress=False)
    out = args.out or RESULTS_DIR / "fullsize.json"
    stages = Stages(out.with_suffix(".partial.json"))
    stages.run("twin", lambda: exp.data.root)
    # The writer's memory is not part of the pipeline's: record the baseline it leaves.
    baseline = proc_status()
    stages.run("extract", exp.extract)
    stages.run("fit", exp.fit)
    results = stages.run("evaluate", exp.evaluate)

    classes = exp.data.truth.voxel_class[SUBJECT]
    scores = {}
    for model in config.table.models:
        (found,) = results.find(subject=SUBJECT, model=model)
        summary = found.scores.summary()
        r = found.scores.r
        summary["r_mean_by_planted_class"] = {VoxelClass(int(c)).name.lower(): float(np.nanmean(r[classes == c]))
                                              for c in np.unique(classes)}
        scores[model] = {"summary": summary, "info": found.info}
    fits = {name: json.loads((run / "predictions" / f"{name}.json").read_text())
            for name in (f"audio+semantic__{m}__pca" for m in config.table.models)}
    dataset = exp.data.dataset
    n_train_trs = sum(dataset.respdict[s] - 20 for s in dataset.stories(SUBJECT))
    peak = proc_status()["VmHWM"]
    payload = {
        "complete": True,
        "description": __doc__.strip().splitlines()[0],
        "command": "jaxenc run's stages (jaxenc.experiment.Experiment) with --set " + " --set ".join(settings),
        "notes": [
            f"Peak host memory {peak:.2f} GiB (VmHWM of the one process, the float32 response matrix "
            f"included) against the {LIMIT_GB:.0f} GB target.",
            f"Randomized PCA with {args.pca_iter} power iterations (jaxenc's default is 7).",
            f"MLP training capped at {args.max_epochs} epochs (patience 10).",
            "Writing the twin is not part of the measured pipeline (baseline_after_twin).",
        ],
        "mesh": describe_mesh(exp.mesh),
        "devices": [str(d) for d in jax.devices()],
        "dataset": {"run": str(run), "subject": SUBJECT, "n_voxels": int(dataset.n_voxels(SUBJECT)),
                    "n_train_stories": len(dataset.stories(SUBJECT)), "n_train_trs": int(n_train_trs),
                    "responses_gb_float32": round(n_train_trs * dataset.n_voxels(SUBJECT) * 4 / GIB, 3)},
        "settings": {"fast": args.fast, "overrides": settings},
        "baseline_after_twin": {k: round(v, 3) for k, v in baseline.items()},
        "stages": stages.records,
        "fits": fits,
        "peak_host_memory_gb": round(peak, 3),
        "under_24gb": bool(peak < LIMIT_GB),
        "test_scores": scores,
    }
    write_results("fullsize", payload, ratios={"memory_headroom_vs_24gb": LIMIT_GB / peak}, out=out)
    stages.partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
