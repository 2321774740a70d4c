"""Cortical voxels for the synthetic twin: a pycortex subject's mask and one of its ROIs.

With :attr:`SyntheticConfig.cortex <jaxenc.synthetic.SyntheticConfig.cortex>` set (for example
``"S1/fullhead"``, the subject pycortex ships), a twin's voxels are the voxels of that
transform's cortical mask (:data:`MASK`), in the mask's order, which is the order
``cortex.Volume`` expects of a 1-D array, so every per-voxel score of a run on the twin draws on
the subject's flatmap. The planted audio voxels are the mask's voxels inside the ROI
:attr:`SyntheticConfig.cortex_roi <jaxenc.synthetic.SyntheticConfig.cortex_roi>` (``"AC"``,
auditory cortex, by default); the other classes fill the rest (see
:func:`jaxenc.synthetic.responses.draw_voxels`).

pycortex is optional (``pip install -e ".[maps]"``) and imported only here, when such a twin is
written.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxenc.errors import ConfigError

__all__ = ["MASK", "CorticalVoxels", "cortical_voxels", "parse_cortex"]

# pycortex's cortical mask of the twin's voxels: "thin" (voxels whose centre lies within the
# cortical ribbon; S1/fullhead: 37,226) rather than "thick" (80,615), half the voxels to fit.
MASK = "thin"


@dataclasses.dataclass(frozen=True, eq=False)
class CorticalVoxels:
    """The voxels of a pycortex subject's cortical mask and which of them lie in an ROI.

    Parameters
    ----------
    subject, xfm : str
        pycortex subject and transform.
    roi : str
        ROI name in the subject's overlays.
    mask : ndarray of shape (n_slices, n_rows, n_columns), bool
        The transform's cortical mask (:data:`MASK`) in its reference volume.
    in_roi : ndarray of shape (n_voxels,), bool
        For each mask voxel, in mask order, whether it lies in ``roi``.
    """

    subject: str
    xfm: str
    roi: str
    mask: np.ndarray
    in_roi: np.ndarray

    @property
    def n_voxels(self) -> int:
        """Voxels of the mask."""
        return int(self.in_roi.size)


def parse_cortex(spec: str) -> tuple[str, str]:
    """Split ``"SUBJECT/XFM"`` into the pycortex subject and transform.

    Raises
    ------
    ConfigError
        Unless ``spec`` is two non-empty names joined by one ``/``.
    """
    subject, sep, xfm = spec.partition("/")
    if not (sep and subject and xfm) or "/" in xfm:
        raise ConfigError(f"cortex must be 'SUBJECT/TRANSFORM' of the pycortex database (e.g. 'S1/fullhead'), "
                          f"got {spec!r}")
    return subject, xfm


def cortical_voxels(spec: str, roi: str) -> CorticalVoxels:
    """The cortical mask of a pycortex subject's transform and the mask voxels in ``roi``.

    ROI membership is pycortex's own (``cortex.utils.get_roi_masks`` with the mask as its grey
    matter sampler): a mask voxel is in the ROI when the overlay's ROI outline on the flatmap
    encloses the cortical surface it lies on. Takes seconds (pycortex computes the mask once and
    caches it in its database; the ROI is computed every time).

    Parameters
    ----------
    spec : str
        ``"SUBJECT/XFM"``, e.g. ``"S1/fullhead"``.
    roi : str
        ROI name in the subject's ``overlays.svg``, e.g. ``"AC"``.

    Returns
    -------
    CorticalVoxels

    Raises
    ------
    ConfigError
        pycortex is not installed, the subject, transform or ROI is unknown, or no mask voxel
        lies in the ROI.
    """
    subject, xfm = parse_cortex(spec)
    try:
        import cortex
    except ImportError:
        raise ConfigError(f"synthetic cortex={spec!r} needs pycortex: pip install -e '.[maps]'") from None
    if subject not in cortex.db.subjects:
        raise ConfigError(f"no pycortex subject {subject!r} (cortex={spec!r}); the database has "
                          f"{sorted(cortex.db.subjects)}")
    transforms = sorted(cortex.db.subjects[subject].transforms.xfms)
    if xfm not in transforms:
        raise ConfigError(f"pycortex subject {subject!r} has no transform {xfm!r} (cortex={spec!r}); it has "
                          f"{transforms}")
    mask = np.asarray(cortex.db.get_mask(subject, xfm, MASK), dtype=bool)
    names = list(cortex.db.get_overlay(subject).rois.shapes)
    if roi not in names:
        raise ConfigError(f"pycortex subject {subject!r} has no ROI {roi!r} (cortex_roi); it has {sorted(names)}")
    volume = cortex.utils.get_roi_masks(subject, xfm, roi_list=[roi], gm_sampler=MASK)[roi]
    in_roi = np.asarray(volume, dtype=bool)[mask]
    if not in_roi.any():
        raise ConfigError(f"no voxel of the {MASK} mask of {spec!r} lies in ROI {roi!r} (cortex_roi): the "
                          "transform's volume does not cover it")
    return CorticalVoxels(subject=subject, xfm=xfm, roi=roi, mask=mask, in_roi=in_roi)
