"""Run results and the report that turns them into tables and figures.

- :mod:`~jaxenc.report.results`: :class:`ModelResult` (one model's
  :class:`jaxenc.metrics.Scores` with its labels), :class:`RunResults` (a whole run) with
  exact ``save`` / ``load`` of a run folder.
- :mod:`~jaxenc.report.render`: :func:`write_report`, a self-contained ``report.html`` and a
  ``report.md`` with ``figures/*.png``.
- :mod:`~jaxenc.report.figures`: one matplotlib figure per report section.
- :mod:`~jaxenc.report.flatmaps`: cortical flatmaps through pycortex, when it is installed.

Importing this package loads numpy only; matplotlib is loaded on first use of
:func:`write_report`, so the experiment runner can build results cheaply. Nothing here imports
JAX or ``matplotlib.pyplot``.
"""

from jaxenc._lazy import lazy_names
from jaxenc.report.results import ModelResult, RunResults

__all__ = ["ModelResult", "RunResults", "write_report"]

# Deferred: the renderer loads matplotlib, which loading run results need not.
__getattr__, __dir__ = lazy_names(__name__, {"write_report": "render"})
