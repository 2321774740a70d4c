"""Cortical flatmaps of per-voxel scores through pycortex, when pycortex is installed.

pycortex is optional (``pip install -e ".[maps]"``) and imported lazily: without it, or without
a pycortex subject and transform for a subject, the report says why the section was skipped.
The voxel order of ds003020's responses is the order of pycortex's cortical mask for the
subject's transform, so a 1-D score array maps onto the volume by that mask (``cortex.Volume``
finds it by size); the synthetic twin's ``cortex`` option writes voxels in that order
(:mod:`jaxenc.synthetic.cortex`).

Maps are drawn vertex by vertex (``pixelwise=False``: each flatmap pixel shows its nearest
vertex, each vertex the voxel it lies in). pycortex's default pixelwise maps need a Delaunay
triangulation of the whole flat surface cached per image height, a minute or more on 2 cores;
the vertex cache takes seconds. ROI outlines are drawn by jaxenc from the overlay's vertices,
since pycortex's own ROI layer needs Inkscape.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np

from jaxenc.errors import ConfigError
from jaxenc.report.results import slug

__all__ = ["pycortex_available", "best_voxel_scores", "flatmap_models", "render_flatmaps", "ENTRY_KEYS"]

# Keys of a flatmaps entry (see render_flatmaps).
ENTRY_KEYS = ("pycortex_subject", "xfm", "models", "rois")
# Height of a flatmap in pixels of pycortex's flat image (both hemispheres side by side).
HEIGHT = 600
# Colour of the ROI outlines: cyan stands out against the inferno colour map.
_OUTLINE = "#00e5ff"


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


def flatmap_models(results, subject: str, entry: dict) -> list:
    """The models of ``subject`` one flatmaps entry draws.

    Parameters
    ----------
    results : RunResults
    subject : str
    entry : dict
        See :func:`render_flatmaps`.

    Returns
    -------
    list of ModelResult
        The models labelled in ``entry["models"]``, in that order; without it every model of
        the subject, in the results' order.

    Raises
    ------
    ConfigError
        On a label the subject has no scores for.
    """
    found = results.find(subject=subject)
    if "models" not in entry:
        return found
    by_name = {m.name: m for m in found}
    unknown = [name for name in entry["models"] if name not in by_name]
    if unknown:
        raise ConfigError(f"flatmaps: no scores labelled {unknown}; the subject has {sorted(by_name)}",
                          subject=subject)
    return [by_name[name] for name in entry["models"]]


def render_flatmaps(results, flatmaps: dict | None, *,
                    height: int = HEIGHT) -> tuple[list[tuple[str, str, bytes]], str | None]:
    """Flatmaps of each model's test-story r per subject, and of its interaction shares, as PNG bytes.

    Parameters
    ----------
    results : RunResults
    flatmaps : dict or None
        Subject -> ``{"pycortex_subject": str, "xfm": str}`` naming the subject and transform
        in the pycortex database; optionally ``"models"``: the labels (``ModelResult.name``,
        e.g. ``"audio | ridge | voxels"``) to draw, by default every model of the subject;
        ``"rois"``: names of ROIs in the subject's overlays to outline (e.g. ``["AC"]``).
    height : int, default HEIGHT
        Height of each map in pixels of the flat image.

    Returns
    -------
    images : list of (name, caption, bytes)
        One PNG per subject and model drawn, in the order of ``flatmaps`` then the models,
        then one per entry of the subject's ``results.interactions`` (shares 0 to 1); ``name``
        is file-name safe and distinct (``slug`` of the subject and the model label).
    note : str or None
        Why nothing (or not every subject) was drawn; ``None`` when all were.

    Raises
    ------
    ConfigError
        If an entry lacks ``pycortex_subject`` or ``xfm``, has another key, or names an unknown
        model or ROI, or a model's voxel count is not the transform's cortical mask's.
    """
    if not flatmaps:
        return [], "skipped: no pycortex subject given"
    if not pycortex_available():
        return [], "skipped: pycortex not installed"
    import cortex
    import matplotlib.pyplot

    images, missing = [], []
    for subject, entry in flatmaps.items():
        if not isinstance(entry, dict) or "pycortex_subject" not in entry or "xfm" not in entry:
            raise ConfigError("flatmaps entries need 'pycortex_subject' and 'xfm'", subject=subject)
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ConfigError(f"flatmaps: unknown keys {unknown}; expected among {list(ENTRY_KEYS)}",
                              subject=subject)
        models = flatmap_models(results, subject, entry)
        if not models:
            missing.append(subject)
            continue
        pycortex_subject, xfm = entry["pycortex_subject"], entry["xfm"]
        rs = [np.where(np.isfinite(m.scores.r), m.scores.r, 0.0).astype(np.float32) for m in models]
        # One colour scale per subject, so that its maps compare at a glance.
        vmax = max(0.1, float(np.percentile(np.concatenate(rs), 99)))
        outlines = [_roi_outline(pycortex_subject, roi, height) for roi in entry.get("rois", ())]
        rois = f"; outlined: {', '.join(entry['rois'])}" if entry.get("rois") else ""
        # (file name, caption, values, top of the colour scale, what an error names)
        maps = [(slug(f"{subject} {m.name}"), f"test-story r of {m.name}", r, vmax, repr(m.name))
                for m, r in zip(models, rs, strict=True)]
        # The interaction shares (analyses.interactions) on their own scale, 0 to 1.
        maps += [(slug(f"{subject} interactions {key}"), f"audio x semantic interaction share of {key}",
                  np.nan_to_num(np.asarray(share, np.float32)), 1.0, f"the interaction shares {key!r}")
                 for key, share in results.interactions.get(subject, {}).items()]
        for name, caption, values, top, what in maps:
            png = _flatmap_png(cortex, matplotlib.pyplot, values, pycortex_subject, xfm, top, outlines, height,
                               what, subject)
            images.append((name, f"{subject}: {caption} (0 to {top:.2f}{rois})", png))
    note = f"skipped for {', '.join(missing)}: no scores" if missing else None
    return images, note


def _flatmap_png(cortex, pyplot, values, pycortex_subject, xfm, vmax, outlines, height, what, subject) -> bytes:
    """One flatmap of per-voxel ``values`` (0 to ``vmax``) with ROI outlines, as PNG bytes."""
    try:
        volume = cortex.Volume(values, pycortex_subject, xfm, vmin=0.0, vmax=vmax, cmap="inferno")
    except ValueError as err:
        raise ConfigError(f"flatmaps: the {values.size} voxels of {what} do not fit a cortical mask "
                          f"of {pycortex_subject}/{xfm} ({err})", subject=subject) from None
    figure = cortex.quickflat.make_figure(
        volume, pixelwise=False, height=height, with_curvature=True, with_colorbar=True,
        with_rois=False, with_labels=False, with_sulci=False)
    axes = figure.axes[0]
    for image, extents in outlines:
        axes.contour(image, levels=[0.5], extent=extents, origin="upper", colors=_OUTLINE, linewidths=1.2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    # quickflat draws through pyplot; close it so the caller's figure registry stays clean.
    pyplot.close(figure)
    return buffer.getvalue()


@functools.cache
def _roi_outline(subject: str, roi: str, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A pycortex ROI as a 0/1 flat image at ``height`` and its extents, for ``contour``.

    Raises
    ------
    ConfigError
        If the subject's overlays have no such ROI.
    """
    import cortex

    names = list(cortex.db.get_overlay(subject).rois.shapes)
    if roi not in names:
        raise ConfigError(f"flatmaps: pycortex subject {subject!r} has no ROI {roi!r}; it has {sorted(names)}")
    inside = cortex.get_roi_verts(subject, roi, mask=True)[roi].astype(np.float32)
    image, extents = cortex.quickflat.make_flatmap_image(cortex.Vertex(inside, subject), height=height)
    return np.nan_to_num(np.asarray(image, dtype=np.float32)), np.asarray(extents)
