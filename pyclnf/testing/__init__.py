"""Test and benchmark support, not part of the stable API.

:mod:`.synthetic` writes model files of OpenFace's architecture with random
weights (tests, benchmarks and ``pyclnf benchmark`` without OpenFace's
models); :mod:`.datasets` reads reference landmark files (OpenFace CSVs,
``.pts``) and computes landmark errors.  Names here may change between
releases without notice.
"""
