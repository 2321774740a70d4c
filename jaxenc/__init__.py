"""jaxenc: voxelwise encoding models of story listening, in JAX.

Subpackages follow the data flow: ``data`` (readers, synthetic twin) -> ``features`` (Whisper and
LLaMA hidden states, through ``nn`` and ``ckpt``) -> ``align`` (TR grid, delays, z-scoring) ->
``decomp`` (PCA) -> ``models`` and ``train`` (ridge, MLP family) -> ``metrics``.
Import the subpackage you need; this top level stays light so ``import jaxenc`` is cheap.
"""

__version__ = "0.1.0"
