"""Build a :class:`LandmarkModel` (with its parts) from an OpenFace main descriptor."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional


from ..config import part_settings
from ..formats.descriptor import check_part_mapping, check_patch_experts, read_main_descriptor
from ..patch_experts import PatchExpertSet
from ..shape.pdm import PDM
from .landmark_model import LandmarkModel, Part


def build_landmark_model(main_path, make_backend: Callable, load_validator: bool = True,
                         part_backend: Optional[Callable] = None) -> LandmarkModel:
    """Read a ``main_*.txt`` descriptor and everything it names.

    Parameters
    ----------
    main_path : path of the main descriptor
    make_backend : callable() -> PatchExpertBackend (unbound) for the main model
    load_validator : read the detection validator the descriptor names
    part_backend : callable for the part models (default: ``make_backend``)
    """
    main_path = Path(main_path)
    desc = read_main_descriptor(main_path)
    part_backend = part_backend or make_backend
    parts = []
    main_pdm = PDM.from_file(desc.detector.pdm)
    for pd in desc.parts:
        sub = read_main_descriptor(pd.main_path)
        sub_pdm = PDM.from_file(sub.detector.pdm)
        experts = PatchExpertSet.from_descriptor(sub.detector)
        check_patch_experts(sub.detector, experts.source_files, experts.scales, sub_pdm.n_points)
        sub_model = LandmarkModel(sub_pdm, experts, part_backend().bind(experts))
        mapping = check_part_mapping(pd, main_pdm.n_points, sub_model.pdm.n_points)
        parts.append(Part(pd.name, sub_model, mapping, part_settings(pd.name)))
    experts = PatchExpertSet.from_descriptor(desc.detector)
    check_patch_experts(desc.detector, experts.source_files, experts.scales, main_pdm.n_points)
    validator = None
    if load_validator and desc.validator is not None:
        from ..detection.validator import DetectionValidator
        validator = DetectionValidator.from_file(desc.validator)
    return LandmarkModel(main_pdm, experts, make_backend().bind(experts),
                         parts, validator)
