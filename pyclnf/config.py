"""Fitting settings: OpenFace's ``FaceModelParameters`` as a dataclass.

Two presets mirror OpenFace's command lines: :meth:`FitSettings.default`
(FaceLandmarkImg / FeatureExtraction without flags) and
:meth:`FitSettings.wild` (their ``-wild`` flag).  For the CE-CLM model
OpenFace scales sigma by 1.5 and the regularisation by 0.9 (it keys this on
the descriptor's file name, ``main_ceclm_general``).  Settings record whether
that scaling is applied (:attr:`FitSettings.model`): :meth:`FitSettings.for_model`
applies it once, and :class:`~pyclnf.CLNF` calls it on every settings object
it is given, so ``CLNF(model="ceclm", settings=FitSettings.wild())`` and
``settings="wild"`` are the same fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple

import numpy as np

#: main descriptor file of each model name
MAIN_DESCRIPTORS = {
    "ceclm": "main_ceclm_general.txt",
    "clnf": "main_clnf_general.txt",
}

#: OpenFace's rotation hypotheses (radians, pitch/yaw/roll) for multi-view fitting
MULTI_VIEW_HYPOTHESES: Tuple[Tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (0.0, -0.5236, 0.0),
    (0.0, 0.5236, 0.0),
    (0.0, -0.96, 0.0),
    (0.0, 0.96, 0.0),
    (0.0, 0.0, 0.5236),
    (0.0, 0.0, -0.5236),
    (0.0, -1.57, 0.0),
    (0.0, 1.57, 0.0),
    (0.0, -1.22, 0.698),
    (0.0, 1.22, -0.698),
)


@dataclass
class FitSettings:
    """Parameters of one landmark fit.

    Attributes
    ----------
    window_sizes : list of int
        Response-map side per patch scale (0 skips the scale), pixels.
    window_sizes_small : list of int
        Windows used while tracking after a successful frame.
    sigma : float
        KDE standard deviation of the mean shift, response-map pixels.
    reg_factor : float
        Shape regularisation (divided by the PDM eigenvalues).
    weight_factor : float
        NU-RLMS weighting by expert confidence (0 = plain RLMS).
    n_iterations : int
        RLMS iterations per phase (rigid, then non-rigid) and scale.
    multi_view : bool
        Try OpenFace's 11 rotation hypotheses from a box and keep the best.
    refine_hierarchical : bool
        Run the part models (eyes; inner face for CLNF).
    refine_parameters : bool
        Adapt sigma/reg/weight to the patch scale, as OpenFace.
    validate_detections : bool
        Run the detection validator CNN after a fit.
    validation_boundary : float
        Validator certainty above which a fit counts as a success.
    reinit_video_every : int
        While tracking, re-detect every this many failed frames.
    model : {None, "ceclm", "clnf"}
        The model whose scaling of sigma and reg_factor the values already
        include; None for OpenFace's command-line values (scaled by
        :meth:`for_model` when used).
    """

    window_sizes: List[int] = field(default_factory=lambda: [11, 9, 7, 5])
    window_sizes_small: List[int] = field(default_factory=lambda: [0, 9, 7, 0])
    sigma: float = 1.5
    reg_factor: float = 25.0
    weight_factor: float = 0.0
    n_iterations: int = 5
    multi_view: bool = False
    refine_hierarchical: bool = True
    refine_parameters: bool = True
    validate_detections: bool = True
    validation_boundary: float = 0.725
    reinit_video_every: int = 2
    model: Optional[str] = None

    @classmethod
    def default(cls) -> "FitSettings":
        """OpenFace's defaults (images and video without ``-wild``)."""
        return cls()

    @classmethod
    def wild(cls) -> "FitSettings":
        """OpenFace's ``-wild``: wider windows, 11 rotation hypotheses,
        NU-RLMS weighting, 10 iterations."""
        return cls(window_sizes=[15, 13, 11, 11], sigma=1.25, reg_factor=35.0,
                   weight_factor=2.5, n_iterations=10, multi_view=True)

    def copy(self, **changes) -> "FitSettings":
        return replace(self, window_sizes=list(self.window_sizes),
                       window_sizes_small=list(self.window_sizes_small), **changes)

    def for_model(self, model: str) -> "FitSettings":
        """These settings as OpenFace uses them with ``model``: CE-CLM scales
        sigma by 1.5 and reg_factor by 0.9 (in float32), once.

        Raises
        ------
        ValueError
            The settings were already scaled for another model.
        """
        if self.model == model:
            return self
        if self.model is not None:
            raise ValueError(f"these settings were made for model {self.model!r}, not {model!r}")
        s = self.copy(model=model)
        if model == "ceclm":
            s.sigma = float(np.float32(1.5) * np.float32(s.sigma))
            s.reg_factor = float(np.float32(0.9) * np.float32(s.reg_factor))
        return s


def settings_for(model: str, preset: str = "default") -> FitSettings:
    """Settings OpenFace uses for ``model`` ("ceclm"/"clnf") and ``preset``
    ("default"/"wild"), including CE-CLM's sigma x1.5 and reg x0.9
    (:meth:`FitSettings.for_model`)."""
    if preset not in ("default", "wild"):
        raise ValueError(f"settings must be 'default' or 'wild', got {preset!r}")
    s = FitSettings.wild() if preset == "wild" else FitSettings.default()
    return s.for_model(model)


def part_settings(part_name: str) -> FitSettings:
    """Settings OpenFace gives a hierarchical part model (by its name)."""
    s = FitSettings(validate_detections=False, refine_hierarchical=False, refine_parameters=False)
    if part_name in ("left_eye", "right_eye"):
        s.window_sizes, s.window_sizes_small, s.reg_factor, s.sigma = [5, 3], [5, 3], 0.1, 2.0
    elif part_name in ("left_eye_28", "right_eye_28"):
        s.window_sizes, s.window_sizes_small, s.reg_factor, s.sigma = [3, 5, 9], [3, 5, 9], 0.5, 1.0
    elif part_name == "mouth":
        s.window_sizes, s.window_sizes_small, s.reg_factor, s.sigma = [7, 7], [7, 7], 1.0, 2.0
    elif part_name == "brow":
        s.window_sizes, s.window_sizes_small, s.reg_factor, s.sigma = [11, 9], [11, 9], 10.0, 3.5
    elif part_name == "inner":
        s.window_sizes, s.window_sizes_small, s.reg_factor, s.sigma = [9], [9], 2.5, 1.75
        s.weight_factor = 2.5
    return s
