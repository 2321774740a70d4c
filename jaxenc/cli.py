"""The ``jaxenc`` command line: thin wrappers around :mod:`jaxenc.pipeline`.

``jaxenc demo`` writes the synthetic twin of ds003020 (unless it is there already), reads and
aligns it, fits the linear baselines of every subject and writes the scores; ``jaxenc synth``
writes a synthetic twin of any preset. Errors that jaxenc raises on purpose are printed as one
line, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxenc.errors import JaxencError

__all__ = ["main"]


def _demo(args) -> int:
    from jaxenc import pipeline
    from jaxenc.data import LeBelDataset
    from jaxenc.data.synthetic import SyntheticConfig, load_truth, write_synthetic

    out = Path(args.out)
    data_root = out / "data"
    presets = {"tiny": SyntheticConfig.tiny, "demo": SyntheticConfig.demo}
    config = presets[args.preset](seed=args.seed)
    started = time.perf_counter()
    print(f"[1/3] synthetic twin of ds003020 ({args.preset} preset) in {data_root}")
    truth = write_synthetic(data_root, config, progress=True)
    dataset = LeBelDataset(data_root)
    print(f"      {dataset!r}")

    print("[2/3] aligning the planted audio and semantic features to each story's TR grid")
    stories = sorted({s for subject in dataset.subjects for s in dataset.stories(subject)})
    features = pipeline.planted_features(truth, stories + [dataset.test_story])

    print("[3/3] ridge baselines per subject (audio, semantic, banded audio+semantic)")
    results = []
    for subject in dataset.subjects:
        for target in args.targets:
            result = pipeline.fit_linear_baseline(
                dataset, subject, features, target=target, n_components=args.n_components,
                cv=args.folds, n_permutations=args.permutations, seed=args.seed,
            )
            summary = result.summary()
            summary["recovered"] = _recovery(result, truth, subject)
            results.append(summary)
            print(_summary_line(summary))

    out.mkdir(parents=True, exist_ok=True)
    run = {
        "command": "jaxenc demo",
        "arguments": {k: v for k, v in vars(args).items() if k != "func"},
        "synthetic_config": config.to_dict(),
        "features": "planted stimulus properties of the synthetic twin (oracle features)",
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "metrics.json").write_text(json.dumps(run, indent=2) + "\n")
    print(f"done in {run['seconds']} s; scores in {out / 'metrics.json'}")
    return 0


def _recovery(result, truth, subject) -> dict:
    """How well the planted voxel classes come out, per class: the share of that class's
    significant voxels whose variance-partition part or best model is the planted one."""
    from jaxenc.data.synthetic import VoxelClass
    from jaxenc.metrics import UNIQUE_A, UNIQUE_B

    classes = truth.voxel_class[subject]
    best_part = np.asarray(result.partition.best_part)
    joint = result.FEATURE_SETS.index("audio+semantic")
    significant = best_part >= 0

    def share(voxel_class, values, code):
        voxels = (classes == int(voxel_class)) & significant
        return float(np.mean(values[voxels] == code)) if voxels.any() else None

    noise = classes == int(VoxelClass.NOISE)
    return {
        "audio_voxels_unique_audio": share(VoxelClass.AUDIO, best_part, UNIQUE_A),
        "semantic_voxels_unique_semantic": share(VoxelClass.SEMANTIC, best_part, UNIQUE_B),
        "joint_voxels_best_joint_model": share(VoxelClass.AUDIO_SEMANTIC, result.best_model, joint),
        "noise_voxels_significant": float(np.mean(significant[noise])) if noise.any() else None,
    }


def _summary_line(summary) -> str:
    models = summary["models"]
    scores = "  ".join(
        f"{name}: r={m['mean_r']:.3f} cc_norm={m['mean_cc_norm']:.3f} sig={m['n_significant']}"
        for name, m in models.items()
    )
    recovered = summary["recovered"]
    shares = ", ".join(
        f"{k}={v:.2f}" for k, v in recovered.items() if v is not None
    )
    return f"  {summary['subject']} [{summary['target']}] {scores}\n      planted recovery: {shares}"


def _synth(args) -> int:
    from jaxenc.data import synthetic

    argv = [str(args.root), "--preset", args.preset, "--seed", str(args.seed)]
    return synthetic.main(argv) or 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``jaxenc`` command."""
    parser = argparse.ArgumentParser(
        prog="jaxenc",
        description="Encoding models of fMRI responses to stories (ds003020), in JAX.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="synthetic twin -> aligned features -> ridge baselines -> test-story scores",
        description="Write the synthetic twin of ds003020 into OUT/data (once), align its planted "
        "audio and semantic features to the TR grid, fit audio, semantic and banded "
        "audio+semantic ridge models for every subject, score them on the held-out test story "
        "and write OUT/metrics.json.",
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--preset", choices=("demo", "tiny"), default="demo",
                      help="size of the synthetic twin (default: demo, ~2000 voxels x 3 subjects)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the twin and the models")
    demo.add_argument("--targets", nargs="+", choices=("voxels", "pca"), default=["voxels", "pca"],
                      help="ridge targets: voxels directly and/or PCA components (default: both)")
    demo.add_argument("--n-components", type=int, default=512,
                      help="PCA components for the pca target (capped at the training rows)")
    demo.add_argument("--folds", type=int, default=5, help="cross-validation folds over stories")
    demo.add_argument("--permutations", type=int, default=500,
                      help="block permutations for per-voxel significance")
    demo.set_defaults(func=_demo)

    synth = commands.add_parser(
        "synth", help="write a synthetic twin of ds003020",
        description="Write a synthetic twin of ds003020 with planted ground truth into ROOT.",
    )
    synth.add_argument("root", type=Path, help="folder to write the dataset into")
    synth.add_argument("--preset", choices=("tiny", "demo", "full"), default="demo",
                       help="tiny (tests), demo (default) or full (real size, ~78 GB)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the twin")
    synth.set_defaults(func=_synth)
    return parser


def main(argv=None) -> int:
    """Run the ``jaxenc`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except JaxencError as error:
        print(f"jaxenc: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
