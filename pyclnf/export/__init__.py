"""Export OpenFace patch experts to ONNX and CoreML.

:func:`export_onnx` / :func:`export_coreml` export the patch experts of a
model folder (``pyclnf export onnx|coreml`` on the command line);
:func:`ensure_export` is what the accelerated backends call: it reuses a
current export (see :mod:`pyclnf.export.manifest`) and rebuilds a stale one.
What the exported models compute is documented in
:mod:`pyclnf.export.onnx_export` and :mod:`pyclnf.export.coreml_export`.
"""

from __future__ import annotations

import atexit
import logging
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..patch_experts import PatchExpertSet, load_expert_set
from .kinds import expert_kind, normalise_windows
from .manifest import (ExportManifest, StagedExport, check_export, default_export_dir, read_manifest,
                       source_entries)

__all__ = ["FORMATS", "ExportResult", "load_expert_set", "ensure_export", "export_onnx", "export_coreml",
           "default_export_dir", "read_manifest"]

log = logging.getLogger("pyclnf.export")

#: Export formats.
FORMATS = ("onnx", "coreml")


@dataclass
class ExportResult:
    """Outcome of an export request.

    Attributes
    ----------
    folder : Path
        The export folder (holds ``manifest.json``).
    manifest : ExportManifest
    rebuilt : bool
        True if the models were (re)written by this call, False if a current
        export was reused.
    seconds : float
        Wall time of the call, seconds.
    reason : str
        Why the export was rebuilt ("" if reused).
    """

    folder: Path
    manifest: ExportManifest
    rebuilt: bool
    seconds: float
    reason: str = ""


def _temporary_folder(owner) -> Path:
    """A temporary folder removed when ``owner`` is collected (or at exit)."""
    tmp = tempfile.TemporaryDirectory(prefix="pyclnf-export-")
    if owner is not None:
        weakref.finalize(owner, tmp.cleanup)
    else:
        atexit.register(tmp.cleanup)
    return Path(tmp.name)


def ensure_export(fmt: str, experts: PatchExpertSet, out_dir=None, windows=None, force: bool = False,
                  progress: Optional[Callable[[Path], None]] = None, owner=None,
                  build_windows=None) -> ExportResult:
    """Return a current export of ``experts`` in format ``fmt``, building it if needed.

    Parameters
    ----------
    fmt : {"onnx", "coreml"}
    experts : PatchExpertSet
        With ``source_files`` (read from a model folder): exported to
        ``out_dir`` or the user cache and reused while the sources' SHA-256
        match.  Without (built in memory): exported to a temporary folder that
        lives as long as ``owner`` (or the process).
    out_dir : path, optional
    windows : sequence of int or dict scale -> sequence, optional
        CCNF window sizes (default: every size PyCLNF's settings use).  When
        given, an existing export must have exactly these.
    force : bool
        Rebuild even if current.
    progress : callable(path), optional
        Called after each written file.
    owner : object, optional
        Keeps a temporary export folder alive (see above).
    build_windows : sequence of int or dict scale -> sequence, optional
        CCNF only, with ``windows=None``: any current export is accepted, and
        a new one is built with these windows (instead of all of them).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    t0 = time.perf_counter()
    kind = expert_kind(experts)
    wins = normalise_windows(experts.n_scales, windows)
    options = kind.export_options(wins)
    files = list(experts.source_files)
    if files and len(files) != experts.n_scales:
        raise ValueError(f"experts name {len(files)} source files for {experts.n_scales} scales")
    folder, sources, current, reason = _find_current(fmt, kind, files, out_dir, owner, force, options)
    if current is not None:
        return ExportResult(folder, current, False, time.perf_counter() - t0)
    if wins is None and build_windows is not None:
        wins = normalise_windows(experts.n_scales, build_windows)
    log.info("exporting %s %s patch experts to %s: %s", kind.name.upper(), fmt, folder, reason)
    manifest = _write_export(fmt, kind, experts, folder, wins, options, sources, progress)
    return ExportResult(folder, manifest, True, time.perf_counter() - t0, reason)


def _find_current(fmt: str, kind, files, out_dir, owner, force: bool, options):
    """Where the export of ``files`` goes and whether a current one is there.

    Returns ``(folder, sources, manifest, reason)``: the export folder, the
    source entries of ``files``, the manifest of a current export in
    ``folder`` (None: build one) and why one is built."""
    if not files:
        folder = Path(out_dir) if out_dir is not None else _temporary_folder(owner)
        return folder, [], None, "patch experts built in memory (no source files)"
    folder = Path(out_dir) if out_dir is not None else default_export_dir(fmt, kind.name, files)
    sources = source_entries(files)
    if force:
        return folder, sources, None, "rebuild forced"
    m, reason = check_export(folder, fmt, files, options, sources)
    return folder, sources, m, reason


def _write_export(fmt: str, kind, experts: PatchExpertSet, folder: Path, wins, options, sources,
                  progress) -> ExportManifest:
    """Write the ``fmt`` models of ``experts`` (windows ``wins``) into a staged
    folder and commit it as ``folder``; returns its manifest."""
    with StagedExport(folder) as stage:
        if fmt == "onnx":
            from .onnx_export import OPSET, onnx_package_versions, write_onnx_models
            scales = write_onnx_models(experts, stage.path, wins, progress)
            opset, packages = OPSET, onnx_package_versions()
        else:
            from .coreml_export import coreml_package_versions, write_coreml_models, SPEC_TARGET
            scales = write_coreml_models(experts, stage.path, wins, progress)
            opset, packages = SPEC_TARGET, coreml_package_versions()
        if options is None:
            options = kind.export_options({e["index"]: e["windows"] for e in scales})
        manifest = ExportManifest(format=fmt, kind=kind.name, sources=sources, scales=scales,
                                  options=options, opset=opset, packages=packages)
        stage.commit(manifest)
    return manifest


def export_onnx(model_dir=None, out_dir=None, model: str = "ceclm", scales: Optional[Sequence] = None,
                windows=None, force: bool = False, progress=None) -> ExportResult:
    """Export the patch experts of ``model`` in ``model_dir`` to ONNX.

    Parameters
    ----------
    model_dir : path, optional
        OpenFace model folder (default: the located one).
    out_dir : path, optional
        Export folder (default: the user cache, see :mod:`pyclnf.export.manifest`).
    model : {"ceclm", "clnf"}
    scales : sequence of float or of int, optional
        Patch scalings (e.g. ``[0.25, 0.35]``) or file indices (default all;
        see :func:`pyclnf.patch_experts.resolve_scale`).
    windows : sequence of int, optional
        CCNF window sizes (default: all PyCLNF's settings use).
    force : bool
        Rebuild even if the folder holds a current export.
    progress : callable(path), optional

    Returns
    -------
    ExportResult
    """
    experts = load_expert_set(model_dir, model, scales)
    return ensure_export("onnx", experts, out_dir, windows, force, progress)


def export_coreml(model_dir=None, out_dir=None, model: str = "ceclm", scales: Optional[Sequence] = None,
                  windows=None, force: bool = False, progress=None) -> ExportResult:
    """Export the patch experts of ``model`` to CoreML ML Programs (see :func:`export_onnx`)."""
    experts = load_expert_set(model_dir, model, scales)
    return ensure_export("coreml", experts, out_dir, windows, force, progress)
