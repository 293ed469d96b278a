"""The shape model: OpenFace's point distribution model (PDM) and its maths.

:mod:`.pdm` (shapes from parameters, Jacobian, fitting to landmarks),
:mod:`.kernels` (its Numba kernels), :mod:`.rotation` (Euler angles, axis-angle
and rotation matrices), :mod:`.alignment` (similarity alignment of two
shapes) and :mod:`.pose` (head pose from the 3D shape and a camera).
Arrays only; no fitting state.
"""
