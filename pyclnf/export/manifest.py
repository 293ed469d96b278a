"""Export folders: where they live, their ``manifest.json``, staleness and rebuilds.

An export folder holds the models of one patch-expert set in one format
(``onnx`` or ``coreml``) and a ``manifest.json``::

    {
      "manifest_version": 1, "format": "onnx", "kind": "cen", "layout_version": 1,
      "opset": 17, "pyclnf_version": "0.1.0",
      "packages": {"numpy": "...", "onnx": "...", "onnxruntime": "..."},
      "sources": [{"path": "/abs/cen_patches_0.25_of.dat", "sha256": "...", "bytes": 60602360}],
      "scales": [{"index": 0, "folder": "cen_0.25", "patch_scaling": 0.25, ...}],
      "files": [{"name": "cen_0.25/fused.onnx", "bytes": 1234}, ...],
      "created": "2025-01-01T00:00:00+00:00"
    }

The manifest is written last, after every model file is in place, so a
folder without a readable manifest is an unfinished export.  An export is
*current* when the manifest's format, layout version and options match and
every source file still has the recorded SHA-256 (and every listed file its
size); anything else is rebuilt -- never silently used.

Default folder: ``<user cache>/exports/<format>/<kind>-<digest>``, where the
user cache is :func:`pyclnf.models.locate.user_cache_dir` (``$PYCLNF_CACHE_DIR``,
else ``~/.cache/pyclnf`` on Linux etc., from platformdirs); ``digest`` is derived from the
source files' absolute paths, so each model folder gets its own export.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .._version import __version__
from ..models import file_sha256
from ..models.locate import CACHE_DIR_ENV, user_cache_dir  # re-exported: the one per-user cache
from .layout import LAYOUT_VERSION

__all__ = ["MANIFEST_NAME", "MANIFEST_VERSION", "CACHE_DIR_ENV", "SourceFile", "ExportManifest",
           "user_cache_dir", "default_export_dir", "source_entries", "read_manifest", "write_manifest",
           "check_export", "StagedExport"]

log = logging.getLogger("pyclnf.export")

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SourceFile:
    """A model file an export was built from."""

    path: str
    sha256: str
    bytes: int


@dataclass
class ExportManifest:
    """Contents of an export folder's ``manifest.json`` (see the module docstring)."""

    format: str
    kind: str
    sources: List[SourceFile]
    scales: List[dict]
    files: List[dict] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    opset: Optional[int] = None
    packages: Dict[str, str] = field(default_factory=dict)
    layout_version: int = LAYOUT_VERSION
    pyclnf_version: str = __version__
    created: str = ""
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> dict:
        return {
            "manifest_version": self.manifest_version, "format": self.format, "kind": self.kind,
            "layout_version": self.layout_version, "opset": self.opset,
            "pyclnf_version": self.pyclnf_version, "packages": dict(self.packages),
            "options": dict(self.options),
            "sources": [{"path": s.path, "sha256": s.sha256, "bytes": s.bytes} for s in self.sources],
            "scales": self.scales, "files": self.files, "created": self.created,
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "ExportManifest":
        try:
            return cls(format=str(d["format"]), kind=str(d["kind"]),
                       sources=[SourceFile(str(s["path"]), str(s["sha256"]), int(s["bytes"]))
                                for s in d["sources"]],
                       scales=list(d["scales"]), files=list(d.get("files", [])),
                       options=dict(d.get("options", {})), opset=d.get("opset"),
                       packages=dict(d.get("packages", {})), layout_version=int(d["layout_version"]),
                       pyclnf_version=str(d.get("pyclnf_version", "")), created=str(d.get("created", "")),
                       manifest_version=int(d["manifest_version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed export manifest: {exc}") from exc


# --------------------------------------------------------------------------- locations
def default_export_dir(fmt: str, kind: str, source_files: Sequence, root: Optional[Path] = None) -> Path:
    """Cache folder of the ``fmt`` export of the patch experts in ``source_files``."""
    paths = "\n".join(str(Path(p).resolve()) for p in source_files)
    digest = hashlib.sha256(paths.encode("utf-8")).hexdigest()[:16]
    base = Path(root) if root is not None else user_cache_dir() / "exports"
    return base / fmt / f"{kind}-{digest}"


# --------------------------------------------------------------------------- manifest I/O
def source_entries(paths: Sequence) -> List[SourceFile]:
    """SHA-256 and size of each source file (absolute paths)."""
    out = []
    for p in paths:
        p = Path(p).resolve()
        out.append(SourceFile(str(p), file_sha256(p), p.stat().st_size))
    return out


def read_manifest(folder) -> Optional[ExportManifest]:
    """The manifest of ``folder``, or None if it has none (or an unreadable one)."""
    path = Path(folder) / MANIFEST_NAME
    try:
        return ExportManifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable export manifest %s: %s", path, exc)
        return None


def write_manifest(folder, manifest: ExportManifest) -> Path:
    """Write ``manifest.json`` atomically (temporary file + rename)."""
    folder = Path(folder)
    if not manifest.created:
        manifest.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    path = folder / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(manifest.to_json(), fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def check_export(folder, fmt: str, source_files: Sequence, options: Optional[Mapping] = None,
                 sources: Optional[List[SourceFile]] = None) -> Tuple[Optional[ExportManifest], str]:
    """Is the export in ``folder`` current?

    Parameters
    ----------
    folder : path
    fmt : {"onnx", "coreml"}
    source_files : sequence of paths
        Files the export must have been built from, in scale order.
    options : mapping, optional
        Export options that must equal the manifest's (e.g. CCNF windows).
    sources : list of SourceFile, optional
        Pre-computed hashes of ``source_files`` (saves re-hashing).

    Returns
    -------
    manifest : ExportManifest or None
        The manifest if the export is current, else None.
    reason : str
        Why it is not current ("" when it is).
    """
    m = read_manifest(folder)
    if m is None:
        return None, f"no export manifest in {folder}"
    if m.manifest_version != MANIFEST_VERSION or m.layout_version != LAYOUT_VERSION:
        return None, (f"export made by another PyCLNF layout (manifest {m.manifest_version}, layout "
                      f"{m.layout_version}; this version writes {MANIFEST_VERSION}, {LAYOUT_VERSION})")
    if m.format != fmt:
        return None, f"export format is {m.format!r}, not {fmt!r}"
    want = [str(Path(p).resolve()) for p in source_files]
    have = [s.path for s in m.sources]
    if want != have:
        return None, f"export was made from {have}, not {want}"
    if options is not None and dict(options) != m.options:
        return None, f"export options {m.options} differ from the requested {dict(options)}"
    current = sources if sources is not None else source_entries(source_files)
    for new, old in zip(current, m.sources):
        if new.sha256 != old.sha256:
            return None, f"source file {new.path} changed (SHA-256 {new.sha256[:12]}..., export has {old.sha256[:12]}...)"
    for f in m.files:
        p = Path(folder) / f["name"]
        if not p.exists():
            return None, f"exported file {p} is missing"
        if "bytes" in f and p.is_file() and p.stat().st_size != int(f["bytes"]):
            return None, f"exported file {p} has {p.stat().st_size} bytes, manifest says {f['bytes']}"
    return m, ""


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class StagedExport:
    """Build an export in a staging folder, then move it into place.

    ``with StagedExport(target) as stage: ...write into stage.path...;
    stage.commit(manifest)``.  Committing removes the old manifest first, moves
    every top-level entry of the staging folder into ``target`` (replacing
    entries of the same name, and removing those the old manifest listed that
    the new export no longer has), then writes the new manifest.  Leaving the
    block without committing deletes the staging folder only.
    """

    def __init__(self, target):
        self.target = Path(target)
        self.path: Optional[Path] = None

    def __enter__(self) -> "StagedExport":
        self.target.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.target))
        return self

    def __exit__(self, *exc) -> None:
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def file_entries(self) -> List[dict]:
        """``{"name", "bytes"}`` of every model file in the staging folder
        (``.mlpackage`` folders count as one entry)."""
        out = []
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path)
            if any(part.endswith(".mlpackage") for part in rel.parts[:-1]):
                continue
            if p.is_file() or p.suffix == ".mlpackage":
                out.append({"name": rel.as_posix(), "bytes": _size(p)})
        return out

    def commit(self, manifest: ExportManifest) -> ExportManifest:
        old = read_manifest(self.target)
        mpath = self.target / MANIFEST_NAME
        if mpath.exists():
            mpath.unlink()
        manifest.files = self.file_entries()
        new_tops = {Path(f["name"]).parts[0] for f in manifest.files}
        if old is not None:
            for f in old.files:
                top = Path(f["name"]).parts[0]
                if top not in new_tops:
                    _remove(self.target / top)
        for entry in self.path.iterdir():
            dest = self.target / entry.name
            if dest.exists() or dest.is_symlink():
                _remove(dest)
            os.replace(entry, dest)
        write_manifest(self.target, manifest)
        return manifest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
