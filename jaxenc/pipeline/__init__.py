"""From features and responses to test-story predictions: the steps every path shares.

This is the library layer that chains the subpackages (data -> align -> models/train ->
metrics); the command line (:mod:`jaxenc.experiment`) and your own scripts both build on it, so
a change to any step is made once:

- :mod:`~jaxenc.pipeline.designs`: design matrices (:func:`design_matrix`: align each story's
  features to its TR grid, trim, z-score, delay, stack; modalities side by side) and the
  training responses on the same rows (:func:`training_responses`), with the settings of
  :class:`AlignOptions`;
- :mod:`~jaxenc.pipeline.runner`: the one job runner, :func:`fit_predict`: an encoder of
  :data:`jaxenc.models.ENCODERS` fitted on every subject's :class:`SubjectArrays`, to
  test-story voxel predictions;
- :mod:`~jaxenc.pipeline.baseline`: :func:`fit_linear_baseline`, the paper's linear model on
  a dataset from Python, scored and partitioned into :class:`jaxenc.report.RunResults`.
"""

from jaxenc.pipeline import baseline, designs, runner
from jaxenc.pipeline.baseline import *  # noqa: F403 (the names of its __all__)
from jaxenc.pipeline.designs import *  # noqa: F403
from jaxenc.pipeline.runner import *  # noqa: F403

__all__ = [*designs.__all__, *runner.__all__, *baseline.__all__]
