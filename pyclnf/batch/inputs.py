"""Inputs of a run or a batch: what to process and where each output goes.

Output names mirror the inputs' paths relative to the deepest folder that
holds every input (:func:`assign_outputs`), so no two inputs share an output:
``pyclnf a/x.jpg b/x.jpg --out-dir out`` writes ``out/a/x.csv`` and
``out/b/x.csv``; ``pyclnf run`` keeps flat names (``out/x.csv``) while they
are distinct.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Sequence

from ..video import is_video_file, list_images

__all__ = ["Item", "assign_outputs", "discover", "shard", "part_of"]

#: Suffixes of a text file that lists inputs, one path a line.
LIST_SUFFIXES = (".txt", ".lst")


@dataclass(frozen=True)
class Item:
    """One input and its output.

    Attributes
    ----------
    source : str
        Path of the image, video or image folder (or a webcam index).
    rel : str
        Output path without extension, relative to the output folder, with
        ``/`` separators (also the stable key of sharding and the manifest).
    """

    source: str
    rel: str

    def base(self, out_dir) -> Path:
        """``out_dir / rel``: the output path without extension."""
        return Path(out_dir).joinpath(*self.rel.split("/"))


def _is_webcam(source: str) -> bool:
    return source.isdigit() and not os.path.exists(source)


def assign_outputs(sources: Sequence[str], anchors: Sequence[str], flat: bool = False) -> List[Item]:
    """Give every source a distinct relative output name.

    Parameters
    ----------
    sources : sequence of str
        Inputs (files, image-sequence folders, webcam indices).
    anchors : sequence of str
        The folders the names are made relative to: the deepest folder
        holding all anchors is the root, and a source's name is its path
        relative to the root without the extension.  Two sources that would
        still share a name keep their extension (``x.mp4`` and ``x.avi`` ->
        ``x.mp4``, ``x.avi``).
    flat : bool
        Name each source by its file (or folder) name alone when these are
        all distinct; mirror the paths (as above) only when two collide.
        The ``run`` command's naming; ``batch`` always mirrors.

    Returns
    -------
    list of Item, in the order of ``sources``.
    """
    if flat:
        short = [f"webcam{s}" if _is_webcam(s) else
                 (Path(s).name if os.path.isdir(s) else Path(s).stem) for s in sources]
        if len(set(short)) == len(short):
            return [Item(s, n) for s, n in zip(sources, short)]
    paths = [os.path.abspath(a) for s, a in zip(sources, anchors) if not _is_webcam(s)]
    try:
        root = os.path.commonpath(paths) if paths else os.getcwd()
    except ValueError:        # different drives
        root = ""
    names = []
    for s in sources:
        if _is_webcam(s):
            names.append((f"webcam{s}", f"webcam{s}"))
            continue
        full = os.path.abspath(s)
        rel = Path(os.path.relpath(full, root) if root else full.lstrip(os.sep)).as_posix()
        names.append((rel if os.path.isdir(full) else str(Path(rel).with_suffix("")).replace(os.sep, "/"), rel))
    seen = {}
    for short, _ in names:
        seen[short] = seen.get(short, 0) + 1
    return [Item(s, short if seen[short] == 1 else long) for s, (short, long) in zip(sources, names)]


def _walk(folder: Path, images: bool, out: List[str]) -> None:
    """Items under ``folder``: a folder holding images is one image sequence
    (or, with ``images``, each image is an item); videos are items; subfolders
    are searched; other files are ignored."""
    entries = sorted(folder.iterdir())
    pics = list_images(folder)
    if pics:
        if images:
            out.extend(str(p) for p in pics)
        else:
            out.append(str(folder))
    out.extend(str(p) for p in entries if p.is_file() and is_video_file(p))
    for p in entries:
        if p.is_dir():
            _walk(p, images, out)


def _read_list(path: Path) -> List[str]:
    """Paths listed in a text file (one a line; ``#`` comments and blank lines
    skipped; relative paths are relative to the list's folder)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            out.append(str(p if p.is_absolute() else path.parent / p))
    return out


def discover(inputs: Iterable[str], images: bool = False) -> List[Item]:
    """The items of a batch, in a stable order, with their output names.

    Parameters
    ----------
    inputs : iterable of str or PathLike
        Videos and images; folders, searched recursively (a folder that holds
        images is one image sequence, unless ``images``); text files
        (``.txt``/``.lst``) listing such paths.  A path that does not exist is
        kept as an item, so that it is reported as failed.
    images : bool
        Images in folders are independent items, not sequences.

    Returns
    -------
    list of Item
        Names are relative to the deepest folder holding all inputs (a
        searched folder counts as itself, a file or sequence as its parent).
    """
    sources, anchors = [], []

    def add(p: str, anchor: str) -> None:
        if p not in seen:
            seen.add(p)
            sources.append(p)
            anchors.append(anchor)
    seen = set()
    todo = [str(i) for i in inputs]
    while todo:
        inp = todo.pop(0)
        p = Path(inp)
        if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            todo[:0] = _read_list(p)
        elif p.is_dir() and not (list_images(p) and not images and not any(c.is_dir() for c in p.iterdir())):
            found: List[str] = []
            _walk(p, images, found)
            for f in found:     # the folder itself may be a sequence: named after itself
                add(f, str(p.parent) if f == str(p) else str(p))
        else:           # a file, a leaf image sequence, or a missing path
            add(str(p), str(p.parent))
    return assign_outputs(sources, anchors)


def part_of(item: Item, num_parts: int) -> int:
    """The part (0 .. num_parts-1) an item belongs to: a hash of its output
    name, so parts are disjoint, cover the batch, and do not depend on the
    order of the inputs or on the machine."""
    digest = hashlib.sha1(item.rel.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_parts


def shard(items: Sequence[Item], num_parts: int, part_id: int) -> List[Item]:
    """The items of part ``part_id`` of ``num_parts`` (see :func:`part_of`).

    Raises
    ------
    ValueError
        ``num_parts`` < 1 or ``part_id`` outside 0 .. num_parts-1.
    """
    if num_parts < 1:
        raise ValueError(f"--num-parts must be >= 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise ValueError(f"--part-id must be in 0..{num_parts - 1}, got {part_id}")
    return [it for it in items if part_of(it, num_parts) == part_id]
