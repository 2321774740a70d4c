"""The ``jaxenc`` command line: experiment stages over one output folder.

``jaxenc demo`` runs the whole chain on the synthetic twin with the embedded default
extractors; ``jaxenc run CONFIG`` does the same for any experiment config (see experiments/);
``extract``, ``fit``, ``evaluate`` and ``report`` run one stage each and resume what an earlier
run left; ``synth`` writes a synthetic twin. Errors that jaxenc raises on purpose (a wrong path,
an unknown model id, a config typo, an ``--out`` that is a file or not writable, a folder in
use by another run) and those of the file system are printed as one line, without a traceback.
Ctrl-C and SIGTERM end any stage with one line saying what was interrupted: the lock is
released and the run folder resumes with the same command.

``run``, ``extract``, ``fit`` and ``evaluate`` also run as one job of several processes, one
per host: ``--coordinator HOST:PORT --num-processes N --process-id I`` (found by JAX on SLURM
and Cloud TPU), the options of :func:`jaxenc.multihost.add_process_options`. Each process then
runs under :func:`jaxenc.multihost.supervise`, which turns a process of the job that stops
answering into one line naming it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from jaxenc import multihost
from jaxenc.errors import ConfigError, JaxencError
from jaxenc.experiment.stagelist import CHECK_DOING, STAGES

__all__ = ["main", "command", "build_parser"]

_CONFIG_HELP = ("experiment config: a .toml file (see experiments/) or a run folder holding the "
                "config.json an earlier stage wrote")
_SET_HELP = ("override a config value, e.g. --set train.max_epochs=20 --set 'table.models=[\"ridge\"]' "
             "(TOML values; repeatable)")



class Interrupted(KeyboardInterrupt):
    """SIGTERM (what SLURM and other schedulers send before killing), raised in the main thread
    like Ctrl-C's KeyboardInterrupt so that every ``finally`` runs: the run folder's lock is
    released and no file is left half-written under its final name."""


def _terminate(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def _experiment(args, config_path):
    # Deferred: the experiment stack loads JAX (about 2 s), which `jaxenc --help` and `synth` need not.
    from jaxenc.experiment import Experiment, load_config

    config = load_config(config_path, args.set)
    if args.out:
        out = Path(args.out)
    elif config_path is not None and Path(config_path).is_dir():
        out = Path(config_path)
    else:
        out = Path("runs") / config.name
    _check_out(out)
    return Experiment(config, out, progress=not args.quiet)


def _check_out(out: Path) -> None:
    """Refuse an output folder that is a file or cannot be written, before any work."""
    if out.exists() and not out.is_dir():
        raise ConfigError("--out names a file; expected a new folder or a run folder", path=out)
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out lies under the file {existing}; expected a folder", path=out)
    try:
        # A probe, not os.access: it also sees read-only file systems, and root's limits.
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise ConfigError(f"cannot write into {existing} ({err.strerror}); choose another --out",
                          path=out) from None


def _stage(stage):
    def run(args) -> int:
        exp = _experiment(args, args.config)
        started = time.perf_counter()
        print(f"jaxenc {stage.name}: {exp.config.name} -> {exp.out}")
        args.doing = stage.doing
        getattr(exp, stage.name)()
        if stage.name == "evaluate":
            _print_summary(exp)
        print(f"{stage.name} done in {time.perf_counter() - started:.0f} s")
        return 0

    return run


def _run(args, config_path) -> int:
    exp = _experiment(args, config_path)
    started = time.perf_counter()
    print(f"jaxenc: {exp.config.name} -> {exp.out}")
    args.doing = CHECK_DOING
    numbers = {stage.name: i for i, stage in enumerate(STAGES, 1)}

    def before(stage) -> None:
        print(f"[{numbers[stage.name]}/{len(STAGES)}] {stage.title}")
        args.doing = stage.doing

    paths = exp.run(before=before)
    _print_summary(exp)
    written = ", ".join(str(p) for p in paths.values()) or "written by process 0 of the job"
    print(f"done in {time.perf_counter() - started:.0f} s; report: {written}")
    return 0


def _print_summary(exp) -> None:
    # Deferred: jaxenc.report.render loads matplotlib, which `jaxenc --help` need not.
    from jaxenc.report import RunResults
    from jaxenc.report.render import model_table

    results = RunResults.load(exp.out)
    rows = model_table(results)
    # Sweep rows name their source too ("semantic/random-llama-512"): the column fits the longest.
    width = max([20] + [len(row["features"]) for row in rows]) + 2
    print(f"{'features':<{width}}{'model':<12}{'target':<8}{'mean r':>8}{'r2 %':>7}{'r2_cod %':>10}{'cc_norm':>9}"
          f"{'sig. voxels':>13}")
    for row in rows:
        print(f"{row['features']:<{width}}{row['model']:<12}{row['target']:<8}{row['mean_r']:>8.3f}"
              f"{100 * row['mean_r2']:>7.2f}{100 * row['mean_r2_cod']:>10.2f}{row['mean_cc_norm']:>9.3f}"
              f"{row['n_significant']:>13.0f}")
    print("r2: the paper's mean of r·|r| over voxels; r2_cod: coefficient of determination")
    nonfinite = [f"{r['subject']} {r['features']} {r['model']} {r['target']} {r['n_nonfinite']} of {r['n_voxels']}"
                 for r in results.table() if r["n_nonfinite"]]
    if nonfinite:
        print("voxels without a finite score, left out of the means: " + "; ".join(nonfinite))
    step = results.nonlinearity
    if step:
        means = {}
        for row in step["rows"]:
            if row["voxels"] == "interaction":
                means.setdefault(row["model"], []).append(row["mean_r"])
        print(f"nonlinearity step ({step['folder']}/, planted features), mean r on interaction voxels: "
              + ", ".join(f"{model} {np.mean(v):.3f}" for model, v in means.items()))
    outcomes = results.planted_outcomes()
    n_checked = len(outcomes["passed"]) + len(outcomes["failed"])
    skipped = sorted({n for _, n, _ in outcomes["skipped"]})
    skipped = f" ({', '.join(skipped)} not checked here: planted.skip)" if skipped else ""
    if outcomes["failed"]:
        failed = [f"{s}:{n} {c['value']:.2f} (margin {c['margin']:.2f})" for s, n, c in outcomes["failed"]]
        print(f"planted checks: {len(failed)} of {n_checked} failed: " + "; ".join(failed) + skipped)
    elif n_checked:
        print(f"planted checks: all {n_checked} passed{skipped}")


def _synth(args) -> int:
    # Deferred: jaxenc.synthetic loads scipy (about 0.8 s), which `jaxenc --help` need not.
    from jaxenc.synthetic import main

    argv = [str(args.root), "--preset", args.preset, "--seed", str(args.seed)]
    return main(argv)


def _add_common(parser, *, config: bool = True, processes: bool = False) -> None:
    if config:
        parser.add_argument("config", help=_CONFIG_HELP)
    parser.add_argument("--out", help="output folder (default: runs/<config name>, or the run folder given)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    if processes:
        multihost.add_process_options(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``jaxenc`` command."""
    parser = argparse.ArgumentParser(
        prog="jaxenc",
        description="Encoding models of fMRI responses to stories (ds003020), in JAX. Each "
        "experiment writes everything (config, features, predictions, checkpoints, scores, "
        "report) into one output folder; stages resume what an earlier run left.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="the whole chain on the synthetic twin with the embedded default extractors",
        description="Write the synthetic twin of ds003020 (3 subjects x 2000 voxels) into OUT/data, "
        "extract Whisper and LLaMA features with jaxenc's small embedded (random-init) default "
        "models, fit ridge, MLLinear, MLP and DIMLP encoders on audio, semantic and audio+semantic "
        "features for every subject and fold, score them on the held-out test story (r, the "
        "paper's r2 = r·|r|, the coefficient of determination, cc_norm, significance), run the "
        "variance partition and voxel clustering, fit the nonlinearity step (a reshaped twin "
        "where the MLP must beat MLLinear on the planted audio x semantic products), check the "
        "planted structure and write OUT/report.html and OUT/report.md. A few minutes on 2 CPU "
        "cores.",
    )
    _add_common(demo, config=False)
    demo.add_argument("--config", default=None,
                      help="start from this config instead of the defaults (the demo is the defaults)")
    demo.set_defaults(func=lambda args: _run(args, args.config), out_default="runs/demo")

    run = commands.add_parser(
        "run", help="all stages of an experiment config: " + ", ".join(stage.name for stage in STAGES),
        description=f"Run every stage of an experiment config ({' -> '.join(stage.name for stage in STAGES)}) "
        "into one output folder. See experiments/ for the paper's tables and figures.",
    )
    _add_common(run, processes=True)
    run.set_defaults(func=lambda args: _run(args, args.config))

    for stage in STAGES:
        sub = commands.add_parser(stage.name, help=stage.help,
                                  description=stage.help[0].upper() + stage.help[1:] + ".")
        _add_common(sub, processes=stage.name != "report")
        sub.set_defaults(func=_stage(stage))

    synth = commands.add_parser(
        "synth", help="write a synthetic twin of ds003020",
        description="Write a synthetic twin of ds003020 with planted ground truth into ROOT.",
    )
    synth.add_argument("root", type=Path, help="folder to write the dataset into")
    synth.add_argument("--preset", default="demo",
                       help="tiny (tests), demo (default) or full (real size, ~78 GB)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the twin")
    synth.set_defaults(func=_synth)
    return parser


def main(argv=None) -> int:
    """Run the ``jaxenc`` command; return its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if getattr(args, "out_default", None) and not args.out:
        args.out = args.out_default
    args.doing = "the start"
    # Signal handlers belong to the main thread; main() called from another keeps the default.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        if hasattr(args, "num_processes"):
            job = multihost.job_of(args)
            if job is not None and not multihost.supervised():
                return multihost.supervise(job, "jaxenc.cli", argv)
            multihost.join(job, args.cpu_devices)
        return args.func(args)
    except KeyboardInterrupt as interrupt:
        # Ctrl-C or SIGTERM: the stages' `finally` blocks have released the lock; every file is
        # written to a temporary name and moved into place, so the folder resumes where it stopped.
        name = str(interrupt) if isinstance(interrupt, Interrupted) else "Ctrl-C (SIGINT)"
        print(f"jaxenc: interrupted by {name} during {args.doing}; what was finished is kept: run the same "
              "command again to resume", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(interrupt, Interrupted) else signal.SIGINT)
    except JaxencError as error:
        print(f"jaxenc: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # The file system refused (a folder made read-only, a full disk): one line naming the file.
        where = error.filename if error.filename is not None else f"a file of {args.out or 'the run folder'}"
        print(f"jaxenc: error: {error.strerror or error}: {where}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def command() -> None:
    """The ``jaxenc`` executable: :func:`main`, then exit with its status.

    After Ctrl-C or SIGTERM (everything already cleaned up by :func:`main`) the process ends
    without the interpreter's teardown, which can crash with SIGSEGV when an XLA or tensorstore
    worker thread was stopped in the middle of an operation (seen in 1 of 3 interrupted
    extractions).
    """
    code = main()
    # A failed process of a job of several ends at once, without JAX's shutdown barrier, which
    # would wait for the others; they stop within the heartbeat timeout and name it.
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM) or (code and _in_job()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _in_job() -> bool:
    return multihost.supervised() and multihost.processes().count > 1


if __name__ == "__main__":
    command()
