"""CEN and CCNF patch experts behind one interface, for the exporters and the
backends that run exports.

The two kinds differ in what an export holds (CEN: per-landmark and fused
per-view models; CCNF: one fused model per response window size) and in
which options make two exports interchangeable (CCNF: the window sizes).
:func:`expert_kind` is the one place that tells them apart; everything else
calls the methods of :class:`ExpertKind`:

* :meth:`ExpertKind.export_options` -- the options recorded in (and compared
  with) an export's manifest;
* :meth:`ExpertKind.first_use_windows` -- what a backend exports on first use;
* :meth:`ExpertKind.write_scale` -- hands one scale to a format writer
  (:class:`ScaleWriter`: ``write_cen_scale`` or ``write_ccnf_scale``);
* :func:`write_models` -- the per-scale driver shared by every format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..formats.cen import CENScale
from ..patch_experts import PatchExpertSet

__all__ = ["ExpertKind", "CENKind", "CCNFKind", "ScaleWriter", "expert_kind", "normalise_windows",
           "scale_folder_name", "write_models"]

Windows = Optional[Dict[int, List[int]]]


def normalise_windows(n_scales: int, windows) -> Windows:
    """None, a sequence of window sizes for every scale, or a dict scale -> sizes,
    as a dict scale -> sorted sizes (None stays None).

    Raises
    ------
    ValueError
        A size that is even or below 3.
    """
    if windows is None:
        return None
    if isinstance(windows, dict):
        out = {int(k): sorted({int(w) for w in v}) for k, v in windows.items()}
    else:
        ws = sorted({int(w) for w in windows})
        out = {s: ws for s in range(n_scales)}
    for ws in out.values():
        for w in ws:
            if w < 3 or w % 2 == 0:
                raise ValueError(f"CCNF window sizes must be odd and >= 3, got {w}")
    return out


def scale_folder_name(kind: str, patch_scaling: float, used: Sequence[str] = ()) -> str:
    """``cen_0.25``-style sub-folder of one scale (suffixed if already used)."""
    name = base = f"{kind}_{patch_scaling:.2f}"
    k = 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    return name


class ScaleWriter(ABC):
    """Writes the models of one scale in one format (ONNX, CoreML)."""

    @abstractmethod
    def write_cen_scale(self, experts: PatchExpertSet, scale: int, folder: Path,
                        emit: Callable[[Path], None]) -> dict:
        """Write a CEN scale's models into ``folder``; returns the manifest entry's
        format-specific fields."""

    @abstractmethod
    def write_ccnf_scale(self, experts: PatchExpertSet, scale: int, folder: Path, windows: List[int],
                         emit: Callable[[Path], None]) -> dict:
        """Write a CCNF scale's models (one per window) into ``folder``."""


class ExpertKind(ABC):
    """What exporting (and running exports of) one kind of patch experts needs.

    Parameters
    ----------
    experts : PatchExpertSet
    """

    #: ``"cen"`` or ``"ccnf"`` (manifests and folder names)
    name = ""

    def __init__(self, experts: PatchExpertSet):
        self.experts = experts

    @abstractmethod
    def export_options(self, windows: Windows) -> Optional[dict]:
        """Options an export must have been built with to be reused; None: any."""

    def first_use_windows(self) -> Windows:
        """Window sizes a backend's first-use export is built with (None: the default)."""
        return None

    @abstractmethod
    def write_scale(self, writer: ScaleWriter, scale: int, folder: Path, windows: Windows,
                    emit: Callable[[Path], None]) -> dict:
        """Write one scale through ``writer``; returns its manifest entry fields."""


class CENKind(ExpertKind):
    """CE-CLM's CEN experts: per-landmark and fused per-view models, no options."""

    name = "cen"

    def export_options(self, windows: Windows) -> Optional[dict]:
        return {}

    def write_scale(self, writer, scale, folder, windows, emit) -> dict:
        return writer.write_cen_scale(self.experts, scale, folder, emit)


class CCNFKind(ExpertKind):
    """CLNF's CCNF experts: one fused model per response window size."""

    name = "ccnf"

    def export_options(self, windows: Windows) -> Optional[dict]:
        if windows is None:
            return None
        return {"windows": {str(k): list(v) for k, v in sorted(windows.items())}}

    def first_use_windows(self) -> Windows:
        # only the windows PyCLNF's settings use at each scale (all sizes: ~0.5 GB);
        # a backend builds others in memory when asked for them
        from .layout import settings_ccnf_windows
        return {s: settings_ccnf_windows(s) or [11] for s in range(self.experts.n_scales)}

    def write_scale(self, writer, scale, folder, windows, emit) -> dict:
        from .layout import default_ccnf_windows
        ws = list(windows[scale]) if windows and scale in windows else default_ccnf_windows(self.experts, scale)
        entry = writer.write_ccnf_scale(self.experts, scale, folder, ws, emit)
        return dict(entry, windows=ws)


def expert_kind(experts: PatchExpertSet) -> ExpertKind:
    """The :class:`ExpertKind` of ``experts`` (the one place CEN and CCNF are told apart)."""
    if not isinstance(experts, PatchExpertSet):
        raise TypeError(f"expected a PatchExpertSet, got {type(experts).__name__}")
    return CENKind(experts) if isinstance(experts.scales[0], CENScale) else CCNFKind(experts)


def write_models(writer: ScaleWriter, experts: PatchExpertSet, folder, windows: Windows = None,
                 emit: Optional[Callable[[Path], None]] = None) -> List[dict]:
    """Write every scale of ``experts`` through ``writer`` into ``folder`` (no manifest).

    Parameters
    ----------
    writer : ScaleWriter
    experts : PatchExpertSet
        CEN or CCNF experts, all scales.
    folder : path
        Existing or new folder; files are (over)written, one sub-folder per
        scale (:func:`scale_folder_name`).
    windows : dict scale -> window sizes, optional
        CCNF only; default :func:`pyclnf.export.layout.default_ccnf_windows`.
    emit : callable(path), optional
        Called after each file is written (progress).

    Returns
    -------
    list of dict
        One manifest entry per scale (``index``, ``folder``, ``patch_scaling``,
        ``n_views``, ``n_points`` and the writer's fields).
    """
    kind = expert_kind(experts)
    folder = Path(folder)
    emit = emit or (lambda p: None)
    entries, used = [], []
    for s in range(experts.n_scales):
        sub = scale_folder_name(kind.name, experts.patch_scaling[s], used)
        used.append(sub)
        (folder / sub).mkdir(parents=True, exist_ok=True)
        entry = {"index": s, "folder": sub, "patch_scaling": float(experts.patch_scaling[s]),
                 "n_views": experts.n_views(s), "n_points": experts.n_points}
        entry.update(kind.write_scale(writer, s, folder / sub, windows, emit))
        entries.append(entry)
    return entries
