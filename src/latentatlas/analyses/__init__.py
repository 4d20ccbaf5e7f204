"""Analyses of an atlas, each a stage of the pipeline (:data:`latentatlas.atlas.ANALYSES`).

- :mod:`~latentatlas.analyses.geometry`: boundaries, phases, geodesics, path analysis,
  baselines, accuracy (every source).
- :mod:`~latentatlas.analyses.images`: the images of a latent plane's grid and their classes
  (the phase map stored as ``labels`` in ``atlas.npz``).
- :mod:`~latentatlas.analyses.planes`: the image-plane analyses (phase agreement, interpolation
  strips, zoom series, Lipschitz profiles, the seeds' path, the eta comparison).
"""
