"""OpenFace model descriptors: ``main_*.txt`` and the per-model ``*_general.txt``.

A main descriptor lists the landmark detector, its hierarchical parts (each
with the index pairs ``main_index part_index`` that tie it to the main model),
the face-detector conversion and the detection validator.  A model descriptor
lists the PDM, triangulations, patch experts and the early-termination file.
Paths are relative to the descriptor's folder and must stay inside the model
folder (the top descriptor's folder); every named file must exist and be a
regular file. Errors name the descriptor and the line.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..errors import ModelFormatError
from .binary import MAX_DIM, read_model_bytes
from ._text import TextMatrixReader

#: Largest descriptor or early-termination file read (OpenFace's are below 1 kB).
MAX_DESCRIPTOR_BYTES = 1 << 20

_MODEL_MODULES = ("PDM", "Triangulations", "PatchesCCNF", "PatchesCEN", "EarlyTermination")


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
    descriptor: Optional[Path] = None   #: the main descriptor naming the part
    line: Optional[int] = None          #: its line there (for error messages)


@dataclass
class MainDescriptor:
    """Contents of a ``main_*.txt`` file (absolute paths)."""

    path: Path
    detector: ModelDescriptor
    parts: List[PartDescriptor] = field(default_factory=list)
    validator: Optional[Path] = None
    face_det_conversion: Optional[Path] = None


def descriptor_lines(path):
    """``(line number, words)`` of the non-blank lines of a descriptor (bounded read)."""
    text = read_model_bytes(path, MAX_DESCRIPTOR_BYTES).decode("latin-1")
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if words:
            yield number, words


def _error(path, line, expected, found=None) -> ModelFormatError:
    return ModelFormatError(path, line, expected, found=found, unit="line")


def locate_model_file(descriptor: Path, line: int, root: Path, relative: str) -> Path:
    """The file ``relative`` (relative to the descriptor's folder) names,
    checked to lie inside ``root``.

    Parameters
    ----------
    descriptor : pathlib.Path
        The descriptor naming the file (for the path and error messages).
    line : int
        Its line naming the file.
    root : pathlib.Path
        The model folder.
    relative : str
        The path as written.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ModelFormatError
        Naming the descriptor and line if the path is absolute, leaves
        ``root``, or names something that is not an existing regular file.

    The check is on the path as written (no absolute paths, no ``..`` that
    leaves ``root``), then the file must exist and be a regular file (symbolic
    links are followed: a model folder made of links, such as the one
    :func:`~pyclnf.testing.synthetic.synthetic_model_dir` writes, is fine; a
    link to a device is refused here, and the readers bound every file's size).
    """
    if os.path.isabs(relative) or (os.name == "nt" and os.path.splitdrive(relative)[0]):
        raise _error(descriptor, line, "a path relative to the model folder", repr(relative))
    location = Path(os.path.normpath(descriptor.parent / relative))
    try:
        location.relative_to(Path(os.path.normpath(root)))
    except ValueError:
        raise _error(descriptor, line, f"a path inside the model folder {root}",
                     repr(relative)) from None
    try:
        st = location.stat()
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
        raise _error(descriptor, line, f"an existing file {relative!r}",
                     f"{getattr(exc, 'strerror', None) or exc} ({location!r})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _error(descriptor, line, f"a regular file {relative}",
                     f"a folder or device ({location})")
    return location


def read_model_descriptor(path, root=None) -> ModelDescriptor:
    """Parse a model descriptor such as ``clnf_general.txt`` or ``cen_general.txt``.

    Parameters
    ----------
    path : str or os.PathLike
        The descriptor.
    root : str or os.PathLike, optional
        The model folder every named file must lie in; the descriptor's own
        folder by default.

    Raises
    ------
    ModelFormatError
        Naming the descriptor and line, for an unknown or missing module, or
        a named file that is missing, not a regular file, or outside ``root``.
    """
    path = Path(path)
    root = path.parent if root is None else Path(root)
    found = {}  # module -> list of (line, relative path)
    for number, words in descriptor_lines(path):
        if len(words) < 2:
            raise _error(path, number, "'<module> <relative path>'", " ".join(words))
        module = words[0]
        if module == "PatchesIntensity":
            raise _error(path, number, "CCNF or CEN patch experts (SVR experts are not supported)",
                         module)
        if module in _MODEL_MODULES:
            found.setdefault(module, []).append((number, " ".join(words[1:])))
    if "PDM" not in found:
        raise ModelFormatError(path, None, "a 'PDM <path>' line", unit="line")
    if "PatchesCCNF" not in found and "PatchesCEN" not in found:
        raise ModelFormatError(path, None, "'PatchesCCNF' or 'PatchesCEN' lines", unit="line")
    if "PatchesCCNF" in found and "PatchesCEN" in found:
        raise ModelFormatError(path, None, "one kind of patch expert", found="both CCNF and CEN",
                               unit="line")
    files = {m: [locate_model_file(path, n, root, rel) for n, rel in entries]
             for m, entries in found.items()}

    def last(module):
        return files[module][-1] if module in files else None

    return ModelDescriptor(path, last("PDM"), last("Triangulations"), files.get("PatchesCCNF", []),
                           files.get("PatchesCEN", []), last("EarlyTermination"))


def read_main_descriptor(path, root=None) -> MainDescriptor:
    """Parse a main descriptor such as ``main_ceclm_general.txt``.

    Parameters
    ----------
    path : str or os.PathLike
        The descriptor.
    root : str or os.PathLike, optional
        The model folder every named file must lie in; the descriptor's own
        folder by default.

    Raises
    ------
    ModelFormatError
        Naming the descriptor and line: a malformed line, a part mapping that
        is not pairs of indices in ``[0, MAX_DIM]``, or a named file that is
        missing, not a regular file or outside ``root``.
    """
    path = Path(path)
    root = path.parent if root is None else Path(root)
    detector_line = None
    parts, validator, conversion = [], None, None
    for number, words in descriptor_lines(path):
        module = words[0]
        if len(words) < 2:
            raise _error(path, number, "'<module> <relative path>'", " ".join(words))
        if module == "LandmarkDetector":
            detector_line = (number, words[1])
        elif module == "LandmarkDetector_part":
            if len(words) < 3:
                raise _error(path, number, "'LandmarkDetector_part <path> <name> <pairs...>'")
            pairs = words[3:]
            if len(pairs) % 2:
                raise _error(path, number, "an even number of mapping indices", str(len(pairs)))
            idx = []
            for p in pairs:
                if not (p.isascii() and p.isdigit()) or int(p) > MAX_DIM:
                    raise _error(path, number, f"mapping indices in [0, {MAX_DIM}]", repr(p))
                idx.append(int(p))
            location = locate_model_file(path, number, root, words[1])
            parts.append(PartDescriptor(words[2], location, list(zip(idx[0::2], idx[1::2])),
                                        path, number))
        elif module == "DetectionValidator":
            validator = locate_model_file(path, number, root, words[1])
        elif module == "FaceDetConversion":
            conversion = locate_model_file(path, number, root, words[1])
    if detector_line is None:
        raise ModelFormatError(path, None, "a 'LandmarkDetector <path>' line", unit="line")
    number, rel = detector_line
    location = locate_model_file(path, number, root, rel)
    detector = read_model_descriptor(location, root)
    return MainDescriptor(path, detector, parts, validator, conversion)


def check_part_mapping(part: PartDescriptor, n_main: int, n_part: int) -> np.ndarray:
    """Check a part's index pairs against the two models' landmark counts.

    Parameters
    ----------
    part : PartDescriptor
    n_main, n_part : int
        Landmarks of the main model and of the part model.

    Returns
    -------
    (k, 2) ndarray of int64
        ``(index in main model, index in part)`` pairs.

    Raises
    ------
    ModelFormatError
        Naming the main descriptor and the part's line, if an index is out
        of range.
    """
    mapping = np.array(part.mapping, dtype=np.int64).reshape(-1, 2)
    for column, n, which in ((0, n_main, "main model"), (1, n_part, f"part {part.name!r}")):
        bad = mapping[:, column] >= n
        if bad.any():
            raise _error(part.descriptor, part.line,
                         f"{which} landmark indices in [0, {n - 1}]",
                         str(int(mapping[np.argmax(bad), column])))
    return mapping


def check_patch_experts(desc: ModelDescriptor, files, scales, n_points: int) -> None:
    """Check that every patch-expert file covers the PDM's landmarks.

    Parameters
    ----------
    desc : ModelDescriptor
        The model descriptor naming the PDM and the files.
    files : sequence of path
        The patch-expert files read (``PatchExpertSet.source_files``).
    scales : sequence of CENScale or CCNFScale
        What was read from them, in the same order.
    n_points : int
        Landmarks of the PDM.

    Raises
    ------
    ModelFormatError
        Naming the first file whose landmark count differs (it would fail
        with an IndexError inside the first fit).
    """
    for path, scale in zip(files, scales):
        if scale.n_points != n_points:
            raise ModelFormatError(path, None, f"patch experts for the {n_points} landmarks of "
                                               f"the PDM that {desc.path} names",
                                   found=f"{scale.n_points} landmarks")


def read_triangulations(path) -> List[np.ndarray]:
    """Read ``tris_68.txt``: a view count, then one (t, 3) int32 matrix per view.

    Raises
    ------
    ModelFormatError
        If the file is malformed or a corner index is negative.
    """
    r = TextMatrixReader(path)
    n = r.read_int("triangulation count", 1, 1000)
    tris = []
    for i in range(n):
        t = r.read_mat(f"triangulation {i}", minimum=0).astype(np.int32)
        if t.shape[1] != 3:
            raise r.error(f"triangulation {i}: (t, 3) corner indices", found=f"shape {t.shape}")
        tris.append(t)
    return tris


def read_early_termination(path, n_views: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the CE-CLM early-termination file.

    Returns
    -------
    weights, biases, cutoffs : (n_views,) ndarray of float64
        ``lhood' = lhood * weight + bias`` is compared with ``cutoff``.

    Raises
    ------
    ModelFormatError
        Naming the file and line of the first value that is missing, not a
        number or not finite.
    """
    path = Path(path)
    tokens = []  # (line, text)
    for number, words in descriptor_lines(path):
        tokens += [(number, w) for w in words]
    if len(tokens) < 3 * n_views:
        raise ModelFormatError(path, tokens[-1][0] if tokens else 1,
                               f"{3 * n_views} numbers (weights, biases, cutoffs for {n_views} views)",
                               found=f"{len(tokens)}", unit="line")
    values = []
    for number, word in tokens[:3 * n_views]:
        try:
            v = float(word)
        except ValueError:
            raise _error(path, number, "a number", repr(word)) from None
        if not np.isfinite(v):
            raise _error(path, number, "a finite number", repr(word))
        values.append(v)
    values = np.array(values, dtype=np.float64)
    return values[:n_views], values[n_views:2 * n_views], values[2 * n_views:]

