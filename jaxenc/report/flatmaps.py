"""Cortical flatmaps of per-voxel scores through pycortex, when pycortex is installed.

pycortex is optional and imported lazily: without it, or without a pycortex subject and
transform for a subject, the report says why the section was skipped. The voxel order of
ds003020's responses is the order of pycortex's cortical mask for the subject's transform, so a
1-D score array maps onto the volume by that mask (``cortex.Volume`` finds it by size).
"""

from __future__ import annotations

import io
import math

import numpy as np

from jaxenc.errors import ConfigError

__all__ = ["pycortex_available", "best_voxel_scores", "render_flatmaps"]


def pycortex_available() -> bool:
    """Whether ``import cortex`` works in this environment.

    Returns
    -------
    bool
    """
    # Importing, not just finding the package: a pycortex without its compiled parts is absent.
    try:
        import cortex  # noqa: F401
    except ImportError:
        return False
    return True


def best_voxel_scores(results, subject: str):
    """The subject's model with the highest mean r on the ``"voxels"`` target.

    Parameters
    ----------
    results : RunResults
    subject : str

    Returns
    -------
    ModelResult or None
        ``None`` when the subject has no voxel-target scores.
    """
    candidates = results.find(subject=subject, target="voxels") or results.find(subject=subject)
    finite = [m for m in candidates if not math.isnan(m.scores.summary()["mean_r"])]
    return max(finite, key=lambda m: m.scores.summary()["mean_r"]) if finite else None


def render_flatmaps(results, flatmaps: dict | None) -> tuple[list[tuple[str, bytes]], str | None]:
    """Flatmaps of the best model's r per subject, as PNG bytes.

    Parameters
    ----------
    results : RunResults
    flatmaps : dict or None
        Subject -> ``{"pycortex_subject": str, "xfm": str}`` naming the subject and transform
        in the pycortex database, optionally ``"model"``: the label (``ModelResult.name``) of
        the scores to draw instead of the best one.

    Returns
    -------
    images : list of (caption, bytes)
        One PNG per subject drawn.
    note : str or None
        Why nothing (or not every subject) was drawn; ``None`` when all were.

    Raises
    ------
    ConfigError
        If an entry lacks ``pycortex_subject`` or ``xfm``, or names an unknown model.
    """
    if not flatmaps:
        return [], "skipped: no pycortex subject given"
    if not pycortex_available():
        return [], "skipped: pycortex not installed"
    import cortex

    images, missing = [], []
    for subject, entry in flatmaps.items():
        if not entry or "pycortex_subject" not in entry or "xfm" not in entry:
            raise ConfigError(
                "flatmaps entries need 'pycortex_subject' and 'xfm'", subject=subject
            )
        if "model" in entry:
            chosen = [s for s in results.find(subject=subject) if s.name == entry["model"]]
            if not chosen:
                raise ConfigError(f"no scores labelled {entry['model']!r}", subject=subject)
            chosen = chosen[0]
        else:
            chosen = best_voxel_scores(results, subject)
        if chosen is None:
            missing.append(subject)
            continue
        r = np.where(np.isfinite(chosen.scores.r), chosen.scores.r, 0.0).astype(np.float32)
        vmax = max(0.1, float(np.percentile(r, 99)))
        volume = cortex.Volume(
            r, entry["pycortex_subject"], entry["xfm"], vmin=0.0, vmax=vmax, cmap="inferno"
        )
        figure = cortex.quickflat.make_figure(volume, with_curvature=True, with_colorbar=True)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=150, metadata={"Software": None})
        # quickflat draws through pyplot; close it so the caller's figure registry stays clean.
        import matplotlib.pyplot

        matplotlib.pyplot.close(figure)
        images.append((f"{subject}: test-story r of {scores.name} (0 to {vmax:.2f})",
                       buffer.getvalue()))
    note = f"skipped for {', '.join(missing)}: no scores" if missing else None
    return images, note
