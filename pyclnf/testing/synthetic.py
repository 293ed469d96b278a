"""Synthetic CEN patch experts with OpenFace's real architectures.

OpenFace's trained CEN files (60-154 MB) cannot ship with PyCLNF; for speed
work and tests this module writes files of the *same* format, mirrored
layout and network sizes with random weights:

* :func:`make_synthetic_cen` -- a :class:`~pyclnf.formats.cen.CENScale` with
  the views, visibilities and mirror tables of a template file and random
  float32 networks (default 122-300-100-50-1, ReLU, ReLU, sigmoid, sigmoid);
* :func:`write_synthetic_cen_set` -- a whole OpenFace model folder whose
  ``cen_patches_*_of.dat`` are synthetic (122-300-100-50-1 at scales 0.25
  and 0.35, 122-500-200-100-1 at 0.50 and 1.00, as OpenFace's) and whose
  other files are symbolic links to the original folder's, so that
  ``CLNF(model_dir=out_dir)`` fits with them.

The weights are scaled so that pre-activations have a standard deviation
near 1 (He scaling after ReLU layers): responses vary with the patch and are
not saturated.  They mean nothing -- landmarks fitted with them are not
faces' landmarks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..formats.cen import LINEAR, RELU, SIGMOID, CENExpert, CENScale, read_cen, write_cen

__all__ = ["SMALL_ARCHITECTURE", "LARGE_ARCHITECTURE", "OPENFACE_ACTIVATIONS", "make_synthetic_cen",
           "write_synthetic_cen_set", "architecture_for_scaling"]

#: OpenFace's CEN at patch scalings 0.25 and 0.35.
SMALL_ARCHITECTURE = (122, 300, 100, 50, 1)
#: OpenFace's CEN at patch scalings 0.50 and 1.00.
LARGE_ARCHITECTURE = (122, 500, 200, 100, 1)
#: Activations of OpenFace's CEN layers (ReLU, ReLU, sigmoid, sigmoid).
OPENFACE_ACTIVATIONS = (RELU, RELU, SIGMOID, SIGMOID)
_STAMP = "synthetic_cen.json"


def architecture_for_scaling(patch_scaling: float) -> Tuple[int, ...]:
    """OpenFace's layer sizes for a CEN file of ``patch_scaling``."""
    return SMALL_ARCHITECTURE if patch_scaling < 0.45 else LARGE_ARCHITECTURE


def _layer_std(layer: int, fan_in: int, prev_act: Optional[int]) -> float:
    if layer == 0:
        # input = bias 1 + a unit-norm patch: |x| = sqrt(2)
        return 1.0 / np.sqrt(2.0)
    if prev_act == RELU:
        return float(np.sqrt(2.0 / fan_in))       # He
    if prev_act == SIGMOID:
        return float(2.0 / np.sqrt(fan_in))       # inputs in (0, 1), spread ~0.25
    return float(1.0 / np.sqrt(fan_in))


def make_synthetic_cen(template: CENScale, layer_sizes: Sequence[int] = SMALL_ARCHITECTURE,
                       activations: Sequence[int] = OPENFACE_ACTIVATIONS, seed: int = 0) -> CENScale:
    """Random CEN experts with the view/mirror layout of ``template``.

    Parameters
    ----------
    template : CENScale
        Supplies patch scaling, view centres, visibilities, mirror tables,
        which experts are stored (non-empty) and their confidences.
    layer_sizes : sequence of int
        Network sizes, input first; the input must be ``1 + 11*11 = 122``
        (OpenFace's support) and the output 1.
    activations : sequence of int
        One per layer: 0 sigmoid, 1 linear, 2 ReLU.
    seed : int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    CENScale
        float32 weights ``(out, in)`` and biases ``(out, 1)``.
    """
    sizes = [int(s) for s in layer_sizes]
    acts = [int(a) for a in activations]
    if len(sizes) < 2 or sizes[-1] != 1:
        raise ValueError(f"layer_sizes must have an input and end with 1 output, got {tuple(sizes)}")
    if len(acts) != len(sizes) - 1:
        raise ValueError(f"need {len(sizes) - 1} activations for layer_sizes {tuple(sizes)}, got {len(acts)}")
    if any(a not in (SIGMOID, LINEAR, RELU) for a in acts):
        raise ValueError(f"activations must be 0 (sigmoid), 1 (linear) or 2 (ReLU), got {tuple(acts)}")
    rng = np.random.default_rng(seed)
    experts = []
    for row in template.experts:
        new_row = []
        for e in row:
            if e.is_empty:
                new_row.append(CENExpert(e.width_support, e.height_support, confidence=e.confidence))
                continue
            if e.width_support * e.height_support + 1 != sizes[0]:
                raise ValueError(f"layer_sizes[0] must be {e.width_support * e.height_support + 1} for "
                                 f"{e.width_support}x{e.height_support} supports, got {sizes[0]}")
            ws, bs = [], []
            for layer in range(len(acts)):
                std = _layer_std(layer, sizes[layer], acts[layer - 1] if layer else None)
                ws.append(rng.standard_normal((sizes[layer + 1], sizes[layer]), dtype=np.float32)
                          * np.float32(std))
                bs.append(rng.standard_normal((sizes[layer + 1], 1), dtype=np.float32) * np.float32(0.1))
            new_row.append(CENExpert(e.width_support, e.height_support, list(acts), bs, ws, e.confidence))
        experts.append(new_row)
    return CENScale(template.patch_scaling, template.centers_deg.copy(), template.visibilities.copy(),
                    template.mirror_inds.copy(), template.mirror_views.copy(), experts)


def _link(src: Path, dest: Path) -> None:
    if dest.is_symlink() or dest.exists():
        if dest.is_symlink() and os.readlink(dest) == str(src):
            return
        if dest.is_dir() and not dest.is_symlink():
            raise FileExistsError(f"{dest} exists and is a folder; choose an empty out_dir")
        dest.unlink()
    os.symlink(src, dest, target_is_directory=src.is_dir())


def write_synthetic_cen_set(model_dir, out_dir, seed: int = 0,
                            architectures: Optional[Dict[float, Sequence[int]]] = None) -> Path:
    """Write an OpenFace model folder whose CEN files are synthetic.

    Parameters
    ----------
    model_dir : path or None
        The OpenFace model folder to copy (None: the located one).  Its CEN
        files are the templates (views, visibility, mirroring).
    out_dir : path
        Folder to create or update.  Every entry of ``model_dir`` becomes a
        symbolic link, except the CEN files that ``main_ceclm_general.txt``
        lists, which are written anew.
    seed : int
        Seed; scale ``i`` uses ``default_rng([seed, i])``.
    architectures : dict patch scaling -> layer sizes, optional
        Default :func:`architecture_for_scaling` (OpenFace's).

    Returns
    -------
    Path
        ``out_dir``.  A stamp file records seed, architectures and template
        sizes; calling again with the same arguments rewrites nothing.
    """
    from ..formats.descriptor import read_main_descriptor
    from ..models.locate import find_model_dir
    src_root = find_model_dir(model_dir, required=("main_ceclm_general.txt",)).resolve()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    desc = read_main_descriptor(src_root / "main_ceclm_general.txt")
    cen_files = [Path(p).resolve() for p in desc.detector.cen]
    rel_cen = {p.relative_to(src_root) for p in cen_files}
    templates = {path: read_cen(path) for path in cen_files}
    arch = _architectures(src_root, templates, architectures)
    stamp = {"seed": int(seed), "source": str(src_root), "architectures": arch,
             "activations": list(OPENFACE_ACTIVATIONS),
             "templates": {str(p.relative_to(src_root)): p.stat().st_size for p in cen_files}}
    stamp_path = out / _STAMP
    up_to_date = _stamp_matches(stamp_path, stamp, out, rel_cen)
    _link_model_folder(src_root, out, rel_cen)
    if up_to_date:
        return out
    if stamp_path.exists():
        stamp_path.unlink()
    _write_synthetic_cens(src_root, out, templates, arch, seed)
    stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    return out


def _architectures(src_root: Path, templates, architectures) -> Dict[str, list]:
    """Layer sizes per CEN file (path relative to ``src_root``): those given
    for its patch scaling in ``architectures``, else OpenFace's."""
    arch = {}
    for path, tpl in templates.items():
        sizes = tuple(architectures[tpl.patch_scaling]) if architectures and tpl.patch_scaling in architectures \
            else architecture_for_scaling(tpl.patch_scaling)
        arch[str(path.relative_to(src_root))] = list(sizes)
    return arch


def _stamp_matches(stamp_path: Path, stamp: dict, out: Path, rel_cen) -> bool:
    """True if ``out`` holds every CEN file and a stamp equal to ``stamp``."""
    if not stamp_path.exists():
        return False
    try:
        return json.loads(stamp_path.read_text()) == stamp and all((out / r).is_file() for r in rel_cen)
    except (OSError, ValueError):
        return False


def _link_model_folder(src_root: Path, out: Path, rel_cen) -> None:
    """Link every entry of ``src_root`` into ``out`` except the CEN files
    ``rel_cen``; folders holding CEN files are rebuilt as folders of links."""
    cen_dirs = {r.parts[0] for r in rel_cen if len(r.parts) > 1}
    for entry in sorted(src_root.iterdir()):
        if entry.name in cen_dirs:
            sub = out / entry.name
            if sub.is_symlink():
                sub.unlink()
            sub.mkdir(exist_ok=True)
            for f in sorted(entry.iterdir()):
                if f.relative_to(src_root) not in rel_cen:
                    _link(f, sub / f.name)
        elif entry.relative_to(src_root) not in rel_cen:
            _link(entry, out / entry.name)


def _write_synthetic_cens(src_root: Path, out: Path, templates, arch, seed: int) -> None:
    """Write a synthetic CEN file under ``out`` for each template, file ``i``
    seeded from ``SeedSequence([seed, i])``."""
    for i, (path, template) in enumerate(templates.items()):
        rel = path.relative_to(src_root)
        dest = out / rel
        if dest.is_symlink():
            dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        scale = make_synthetic_cen(template, arch[str(rel)], OPENFACE_ACTIVATIONS,
                                   seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
        write_cen(scale, dest)
