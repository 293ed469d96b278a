"""The batch manifest: one JSON record per processed input, appended to
``DIR/batch.jsonl`` (``DIR/batch-part<i>of<K>.jsonl`` for ``--num-parts``,
so that parts running at once never write one file); the latest record of an
input wins.  A record says what came out and whether the output is still
valid for the input as it is now (:func:`is_done`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional

from ..video import list_images
from .job import COMPLETE

__all__ = ["Manifest", "signature", "is_done", "MANIFEST_GLOB"]

MANIFEST_GLOB = "batch*.jsonl"

#: Fields of a record.
FIELDS = ("input", "output", "status", "frames", "frames_ok", "declared_frames", "error", "seconds",
          "worker", "rel", "signature", "options", "outputs", "csv_bytes", "finished")


def signature(source: str) -> Optional[List[int]]:
    """What identifies an input's content cheaply: ``[size, mtime_ns]`` of a
    file, ``[images, total size, latest mtime_ns]`` of an image folder;
    None when it does not exist."""
    p = Path(source)
    try:
        if p.is_dir():
            st = [f.stat() for f in list_images(p)]
            return [len(st), sum(s.st_size for s in st), max((s.st_mtime_ns for s in st), default=0)]
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return None


class Manifest:
    """Reads every ``batch*.jsonl`` of an output folder, appends to this run's.

    Parameters
    ----------
    out_dir : Path
    num_parts, part_id : int
        Which file this run appends to.
    """

    def __init__(self, out_dir, num_parts: int = 1, part_id: int = 0):
        self.out_dir = Path(out_dir)
        name = "batch.jsonl" if num_parts == 1 else f"batch-part{part_id}of{num_parts}.jsonl"
        self.path = self.out_dir / name
        self.latest: Dict[str, dict] = {}
        for f in sorted(self.out_dir.glob(MANIFEST_GLOB)):
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:        # a line cut short when a run was killed
                        continue
                    if isinstance(rec, dict) and "rel" in rec:
                        self.latest[rec["rel"]] = rec
        self._fh = None

    def append(self, record: dict) -> None:
        """Append one record (one line, flushed) and make it the latest."""
        if self._fh is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.latest[record["rel"]] = record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def is_done(record: Optional[dict], sig, options_fp: dict, out_dir) -> bool:
    """Whether ``record`` describes complete outputs that are still valid: a
    complete status, the same input signature and options, every output
    present and the CSV of the recorded size."""
    if not record or record.get("status") not in COMPLETE:
        return False
    if record.get("signature") != sig or record.get("options") != options_fp:
        return False
    out_dir = Path(out_dir)
    for rel in record.get("outputs") or []:
        if not (out_dir / rel).is_file():
            return False
    csv = out_dir / record["output"]
    return csv.is_file() and csv.stat().st_size == record.get("csv_bytes")
