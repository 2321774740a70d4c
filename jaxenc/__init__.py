"""jaxenc: voxelwise encoding models of story listening, in JAX.

Subpackages follow the data flow: ``data`` (readers of ds003020 on disk, or of the twin that
``synthetic`` writes) -> ``features`` (Whisper and LLaMA hidden states, through ``nn`` and
``ckpt``) -> ``align`` (TR grid, delays, z-scoring) -> ``decomp`` (PCA) -> ``models`` and
``train`` (ridge, MLP family) -> ``metrics``.
Import the subpackage you need; this top level stays light so ``import jaxenc`` is cheap.
"""

__version__ = "0.1.0"
