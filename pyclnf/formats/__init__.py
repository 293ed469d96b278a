"""OpenFace's model file formats: bounded readers and the matching writers.

One module per format: :mod:`.cen` and :mod:`.ccnf` (patch experts),
:mod:`.pdm_file` (point distribution model), :mod:`.descriptor` (the main
``main_*.txt`` descriptors and the files they name); :mod:`.binary` holds the
bounded binary reader/writer and OpenCV's matrix type table shared by them
(and by the detector's network files).  Where the files live and how they are
installed is :mod:`pyclnf.models` (the model store).
"""
