"""OpenFace model descriptors: ``main_*.txt`` and the per-model ``*_general.txt``.

A main descriptor lists the landmark detector, its hierarchical parts (each
with the index pairs ``main_index part_index`` that tie it to the main model),
the face-detector conversion and the detection validator.  A model descriptor
lists the PDM, triangulations, patch experts and the early-termination file.
Paths are relative to the descriptor's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..errors import ModelFormatError
from ._text import TextMatrixReader


@dataclass
class ModelDescriptor:
    """Contents of a ``clnf_general.txt``-style file (absolute paths)."""

    path: Path
    pdm: Path
    triangulations: Optional[Path] = None
    ccnf: List[Path] = field(default_factory=list)
    cen: List[Path] = field(default_factory=list)
    early_termination: Optional[Path] = None

    @property
    def patch_type(self) -> str:
        """``"cen"`` or ``"ccnf"``."""
        return "cen" if self.cen else "ccnf"

    @property
    def patch_files(self) -> List[Path]:
        return self.cen if self.cen else self.ccnf


@dataclass
class PartDescriptor:
    """A hierarchical part model named in a main descriptor."""

    name: str
    main_path: Path                     #: the part's own main descriptor
    mapping: List[Tuple[int, int]]      #: (index in main model, index in part)


@dataclass
class MainDescriptor:
    """Contents of a ``main_*.txt`` file (absolute paths)."""

    path: Path
    detector: ModelDescriptor
    parts: List[PartDescriptor] = field(default_factory=list)
    validator: Optional[Path] = None
    face_det_conversion: Optional[Path] = None


def _lines(path: Path):
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise ModelFormatError(path, None, "a readable model descriptor", found=str(exc), unit="line") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if words:
            yield number, words


def read_model_descriptor(path) -> ModelDescriptor:
    """Parse a model descriptor such as ``clnf_general.txt`` or ``cen_general.txt``."""
    path = Path(path)
    root = path.parent
    pdm = tri = early = None
    ccnf, cen = [], []
    for number, words in _lines(path):
        if len(words) < 2:
            raise ModelFormatError(path, number, "'<module> <relative path>'", found=" ".join(words), unit="line")
        module, location = words[0], root / " ".join(words[1:])
        if module == "PDM":
            pdm = location
        elif module == "Triangulations":
            tri = location
        elif module == "PatchesCCNF":
            ccnf.append(location)
        elif module == "PatchesCEN":
            cen.append(location)
        elif module == "EarlyTermination":
            early = location
        elif module == "PatchesIntensity":
            raise ModelFormatError(path, number, "CCNF or CEN patch experts (SVR experts are not supported)",
                                   found=module, unit="line")
    if pdm is None:
        raise ModelFormatError(path, None, "a 'PDM <path>' line", unit="line")
    if not ccnf and not cen:
        raise ModelFormatError(path, None, "'PatchesCCNF' or 'PatchesCEN' lines", unit="line")
    if ccnf and cen:
        raise ModelFormatError(path, None, "one kind of patch expert", found="both CCNF and CEN", unit="line")
    return ModelDescriptor(path, pdm, tri, ccnf, cen, early)


def read_main_descriptor(path) -> MainDescriptor:
    """Parse a main descriptor such as ``main_ceclm_general.txt``."""
    path = Path(path)
    root = path.parent
    detector = None
    parts, validator, conversion = [], None, None
    for number, words in _lines(path):
        module = words[0]
        if len(words) < 2:
            raise ModelFormatError(path, number, "'<module> <relative path>'", found=" ".join(words), unit="line")
        location = root / words[1]
        if module == "LandmarkDetector":
            detector = read_model_descriptor(location)
        elif module == "LandmarkDetector_part":
            if len(words) < 3:
                raise ModelFormatError(path, number, "'LandmarkDetector_part <path> <name> <pairs...>'", unit="line")
            pairs = words[3:]
            if len(pairs) % 2:
                raise ModelFormatError(path, number, "an even number of mapping indices", found=str(len(pairs)), unit="line")
            try:
                idx = [int(p) for p in pairs]
            except ValueError:
                raise ModelFormatError(path, number, "integer mapping indices", unit="line") from None
            parts.append(PartDescriptor(words[2], location, list(zip(idx[0::2], idx[1::2]))))
        elif module == "DetectionValidator":
            validator = location
        elif module == "FaceDetConversion":
            conversion = location
    if detector is None:
        raise ModelFormatError(path, None, "a 'LandmarkDetector <path>' line", unit="line")
    return MainDescriptor(path, detector, parts, validator, conversion)


def read_triangulations(path) -> List[np.ndarray]:
    """Read ``tris_68.txt``: a view count, then one (t, 3) int32 matrix per view."""
    r = TextMatrixReader(path)
    n = r.read_int("triangulation count", 1, 1000)
    return [r.read_mat(f"triangulation {i}").astype(np.int32) for i in range(n)]


def read_early_termination(path, n_views: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the CE-CLM early-termination file.

    Returns
    -------
    weights, biases, cutoffs : (n_views,) ndarray of float64
        ``lhood' = lhood * weight + bias`` is compared with ``cutoff``.
    """
    path = Path(path)
    try:
        tokens = path.read_text(encoding="latin-1").split()
    except OSError as exc:
        raise ModelFormatError(path, None, "a readable early-termination file", found=str(exc), unit="line") from exc
    if len(tokens) < 3 * n_views:
        raise ModelFormatError(path, None, f"{3 * n_views} numbers (weights, biases, cutoffs for {n_views} views)",
                               found=f"{len(tokens)}", unit="line")
    try:
        values = np.array([float(t) for t in tokens[:3 * n_views]], dtype=np.float64)
    except ValueError:
        raise ModelFormatError(path, 1, "numbers", unit="line") from None
    return values[:n_views], values[n_views:2 * n_views], values[2 * n_views:]
