"""Export OpenFace CEN and CCNF patch experts to CoreML ML Programs (``.mlpackage``).

Built with coremltools' MIL builder (``coremltools.converters.mil.Builder``)
and converted with ``compute_precision=FLOAT32`` (weights stay float32,
equal to the ``.dat`` values), deployment target macOS 13 / iOS 16.
Conversion works on any OS; prediction needs macOS.

Folder layout written by :func:`write_coreml_models`::

    cen_0.25/landmark_00.mlpackage ...  one per landmark, every view
    cen_0.25/fused_view0.mlpackage ...  all landmarks of one view
    ccnf_0.25/fused_w11_view0.mlpackage CCNF, per window and view

The graphs are those of :mod:`pyclnf.export.onnx_export`, with the same
input and output names:

* ``landmark_XX``: inputs ``area`` float32 ``(N, 1, A, A)`` (N in [1, 1024],
  A in [13, 75]; raw 0-255 intensities, ``A = w + 10``) and ``view`` int32
  ``(1,)``; output ``response`` ``(N, 1, w, w)`` (y, x).  Contrast-normalised
  im2col, mirroring (``reverse``) and OpenFace's sparse interpolation run in
  the graph; the view selects a stored expert by ``gather`` from the weight
  stacks ``W{l}_stack`` ``(S, in, out)`` / ``b{l}_stack`` ``(S, 1, out)``.
  Unlike the ONNX model, the network runs at *every* position and the even
  linear indices are then overwritten by the interpolation (same result,
  twice the arithmetic, no dynamic reshapes); this is not the speed path.
* ``fused_view{v}``: input ``features`` ``(K_v, P, 122)`` (P in [1, 2048];
  host im2col, mirrored items' patches flipped, item order of
  :func:`pyclnf.export.layout.cen_view_layout`); output ``values``
  ``(K_v, P)``.  Weights ``blk{b}_W{l}`` ``(count, in, out)``.
  CoreML's ``cond`` needs equal branch shapes, so views are separate
  packages instead of one model with a view input.
* ``fused_w{W}_view{v}``: input ``features`` ``(K_v, W*W, 122)``; output
  ``response`` ``(K_v, W, W)``; weights ``neuron_weights``, ``alpha2``,
  ``sigma`` (see :class:`pyclnf.export.layout.CCNFViewPack`).

Every package carries the layout as JSON in its user-defined metadata
``pyclnf.layout``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..formats.cen import LINEAR, RELU, SIGMOID
from ..patch_experts import PatchExpertSet, SUPPORT
from .layout import (LAYOUT_VERSION, N_FEATURES, cen_block_arrays, cen_landmark_layout, cen_slot_arrays,
                     cen_view_layout, ccnf_view_pack)
from .kinds import ScaleWriter, write_models

__all__ = ["SPEC_TARGET", "MAX_BATCH", "AREA_RANGE", "MAX_POSITIONS", "import_coremltools",
           "CoreMLWriter", "write_coreml_models", "write_ccnf_package", "coreml_package_versions"]

#: Deployment target of the exported ML Programs.
SPEC_TARGET = "macOS13"
#: Largest batch N of a per-landmark model.
MAX_BATCH = 1024
#: Range of the area side A of a per-landmark model (windows 3 to 65).
AREA_RANGE = (13, 75)
#: Largest number of sparse positions P of a fused CEN model.
MAX_POSITIONS = 2048


@contextlib.contextmanager
def _quiet():
    """Silence coremltools' import warnings (no native runtime off macOS) and
    its conversion progress bars, restoring its logger afterwards."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def import_coremltools():
    """Import coremltools quietly.

    Raises
    ------
    BackendUnavailableError
        coremltools is not installed.
    """
    try:
        with _quiet():
            import coremltools
    except ModuleNotFoundError as exc:
        from ..errors import BackendUnavailableError
        raise BackendUnavailableError(
            "exporting to CoreML needs the package 'coremltools': pip install 'pyclnf-accel[coreml]'") from exc
    return coremltools


def coreml_package_versions() -> Dict[str, str]:
    """Versions of the packages a CoreML export depends on."""
    return {"numpy": np.__version__, "coremltools": import_coremltools().__version__}


# --------------------------------------------------------------------------- MIL helpers
class _MIL:
    def __init__(self):
        ct = import_coremltools()
        from coremltools.converters.mil import Builder as mb
        from coremltools.converters.mil.mil import types, get_new_symbol
        self.ct, self.mb, self.types, self.sym = ct, mb, types, get_new_symbol

    def act(self, x, a: int):
        mb = self.mb
        if a == SIGMOID:
            return mb.sigmoid(x=x)
        if a == RELU:
            return mb.relu(x=x)
        if a == LINEAR:
            return x
        raise ValueError(f"unknown CEN activation {a}")

    def convert(self, prog, inputs, meta: dict, description: str, path: Path) -> None:
        ct = self.ct
        with _quiet(), warnings.catch_warnings():
            # coremltools drops a TemporaryDirectory of weights without closing it
            warnings.simplefilter("ignore", ResourceWarning)
            model = ct.convert(prog, convert_to="mlprogram", inputs=inputs,
                               compute_precision=ct.precision.FLOAT32,
                               minimum_deployment_target=getattr(ct.target, SPEC_TARGET),
                               pass_pipeline=ct.PassPipeline.EMPTY, skip_model_load=True)
            model.short_description = description
            model.user_defined_metadata["pyclnf.layout"] = json.dumps(meta, separators=(",", ":"))
            model.user_defined_metadata["pyclnf.layout_version"] = str(LAYOUT_VERSION)
            model.save(str(path))
            if getattr(model, "is_temp_package", False) and model.package_path:
                # coremltools removes its temporary copy only at exit; 300 of them add up
                shutil.rmtree(model.package_path, ignore_errors=True)


def _cen_landmark_package(mil: _MIL, experts: PatchExpertSet, scale: int, landmark: int, path: Path) -> None:
    mb, types, ct = mil.mb, mil.types, mil.ct
    lay = cen_landmark_layout(experts, scale, landmark)
    ws, bs = cen_slot_arrays(experts, lay)
    n = SUPPORT * SUPPORT
    onehot = np.zeros((n, 1, SUPPORT, SUPPORT), np.float32)
    for xx in range(SUPPORT):
        for yy in range(SUPPORT):
            onehot[xx * SUPPORT + yy, 0, yy, xx] = 1.0
    cross = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float32).reshape(1, 1, 3, 3)
    N, A = mil.sym(), mil.sym()

    @mb.program(input_specs=[mb.TensorSpec(shape=(N, 1, A, A), dtype=types.fp32),
                             mb.TensorSpec(shape=(1,), dtype=types.int32)],
                opset_version=getattr(ct.target, "iOS16"))
    def prog(area, view):
        slot = mb.gather(x=mb.const(val=lay.slot_of_view.astype(np.int32), name="slot_of_view"),
                         indices=view, axis=0, name="slot")
        flipf = mb.gather(x=mb.const(val=lay.flip_of_view.astype(np.float32), name="flip_of_view"),
                          indices=view, axis=0)
        flip = mb.greater(x=flipf, y=np.float32(0.5), name="flip")
        vis = mb.gather(x=mb.const(val=lay.visible_of_view.astype(np.float32), name="visible_of_view"),
                        indices=view, axis=0, name="visible")
        a = mb.select(cond=flip, a=mb.reverse(x=area, axes=[3]), b=area, name="area_oriented")
        cols = mb.conv(x=a, weight=mb.const(val=onehot, name="im2col_kernel"), pad_type="valid", name="cols")
        mean = mb.reduce_mean(x=cols, axes=[1], keep_dims=True)
        c = mb.sub(x=cols, y=mean)
        norm = mb.sqrt(x=mb.reduce_sum(x=mb.mul(x=c, y=c), axes=[1], keep_dims=True))
        norm = mb.select(cond=mb.equal(x=norm, y=np.float32(0)), a=np.float32(1), b=norm)
        xn = mb.real_div(x=c, y=norm, name="normalised")                        # (N, 121, y, x)
        h = mb.transpose(x=xn, perm=[0, 3, 2, 1])                                # (N, x, y, 121)
        h = mb.pad(x=h, pad=np.array([0, 0, 0, 0, 0, 0, 1, 0], np.int32), mode="constant", constant_val=1.0,
                   name="features")                                              # (N, x, y, 122)
        for layer, act in enumerate(lay.activations):
            wl = mb.gather(x=mb.const(val=ws[layer], name=f"W{layer}_stack"), indices=slot, axis=0)
            bl = mb.gather(x=mb.const(val=bs[layer], name=f"b{layer}_stack"), indices=slot, axis=0)
            h = mil.act(mb.add(x=mb.matmul(x=h, y=wl), y=bl), act)
        dense = mb.transpose(x=h, perm=[0, 3, 2, 1], name="dense")               # (N, 1, y, x)
        # OpenFace evaluates odd linear indices x*w+y (w odd: x+y odd) and sets the
        # others to the mean of their in-window 4-neighbours (all evaluated)
        w_dim = mb.sub(x=mb.slice_by_index(x=mb.shape(x=a), begin=[3], end=[4], squeeze_mask=[True]),
                       y=np.int32(SUPPORT - 1))
        r = mb.range_1d(start=np.int32(0), end=w_dim, step=np.int32(1))
        parity = mb.mod(x=mb.add(x=mb.expand_dims(x=r, axes=[1]), y=mb.expand_dims(x=r, axes=[0])),
                        y=np.int32(2))
        evaluated = mb.equal(x=parity, y=np.int32(1), name="evaluated")          # (w, w)
        k = mb.const(val=cross, name="cross_kernel")
        nsum = mb.conv(x=dense, weight=k, pad_type="custom", pad=[1, 1, 1, 1])
        cnt = mb.conv(x=mb.fill(shape=mb.shape(x=dense), value=1.0), weight=k, pad_type="custom", pad=[1, 1, 1, 1])
        resp = mb.select(cond=evaluated, a=dense, b=mb.real_div(x=nsum, y=cnt))
        resp = mb.select(cond=flip, a=mb.reverse(x=resp, axes=[3]), b=resp)
        return mb.mul(x=resp, y=vis, name="response")

    inputs = [ct.TensorType(name="area", shape=ct.Shape(shape=(ct.RangeDim(1, MAX_BATCH), 1,
                                                               ct.RangeDim(*AREA_RANGE), ct.RangeDim(*AREA_RANGE))),
                            dtype=np.float32),
              ct.TensorType(name="view", shape=(1,), dtype=np.int32)]
    meta = dict(lay.to_json(), kind="cen_landmark", scale=scale, patch_scaling=float(experts.patch_scaling[scale]))
    mil.convert(prog, inputs, meta, f"PyCLNF CEN expert, landmark {landmark}, patch scaling "
                f"{experts.patch_scaling[scale]:.2f}: area (N,1,A,A) -> response (N,1,A-10,A-10)", path)


def _cen_fused_package(mil: _MIL, experts: PatchExpertSet, scale: int, lay, path: Path) -> None:
    mb, types, ct = mil.mb, mil.types, mil.ct
    K = lay.n_items
    P = mil.sym()
    blocks = []
    for bi, b in enumerate(lay.blocks):
        ws, bs = cen_block_arrays(experts, scale, b)
        blocks.append((b, ws, bs))

    @mb.program(input_specs=[mb.TensorSpec(shape=(K, P, N_FEATURES), dtype=types.fp32)],
                opset_version=getattr(ct.target, "iOS16"))
    def prog(features):
        outs, start = [], 0
        for bi, (b, ws, bs) in enumerate(blocks):
            x = mb.slice_by_index(x=features, begin=[start, 0, 0], end=[start + b.n_items, 0, 0],
                                  end_mask=[False, True, True])
            start += b.n_items
            h = mb.reshape(x=x, shape=[b.count, -1, N_FEATURES])
            for layer, act in enumerate(b.activations):
                h = mb.add(x=mb.matmul(x=h, y=mb.const(val=ws[layer], name=f"blk{bi}_W{layer}")),
                           y=mb.const(val=bs[layer], name=f"blk{bi}_b{layer}"))
                h = mil.act(h, act)
            outs.append(mb.reshape(x=h, shape=[b.n_items, -1]))
        if len(outs) == 1:
            return mb.identity(x=outs[0], name="values")
        return mb.concat(values=outs, axis=0, name="values")

    inputs = [ct.TensorType(name="features", shape=ct.Shape(shape=(K, ct.RangeDim(1, MAX_POSITIONS), N_FEATURES)),
                            dtype=np.float32)]
    meta = dict(lay.to_json(), kind="cen_fused", scale=scale, patch_scaling=float(experts.patch_scaling[scale]))
    mil.convert(prog, inputs, meta, f"PyCLNF fused CEN experts, patch scaling {experts.patch_scaling[scale]:.2f}, "
                f"view {lay.view}: features ({K},P,122) -> values ({K},P)", path)


def _ccnf_package(mil: _MIL, experts: PatchExpertSet, scale: int, view: int, pack, path: Path) -> None:
    mb, types, ct = mil.mb, mil.types, mil.ct
    K, w = pack.landmarks.size, pack.window

    @mb.program(input_specs=[mb.TensorSpec(shape=(K, w * w, N_FEATURES), dtype=types.fp32)],
                opset_version=getattr(ct.target, "iOS16"))
    def prog(features):
        z = mb.matmul(x=features, y=mb.const(val=pack.weights, name="neuron_weights"))
        r = mb.matmul(x=mb.sigmoid(x=z), y=mb.const(val=pack.alpha2, name="alpha2"))
        o = mb.matmul(x=mb.const(val=pack.sigma, name="sigma"), y=r)
        o = mb.reshape(x=o, shape=[K, w, w])
        m = mb.minimum(x=mb.reduce_min(x=o, axes=[1, 2], keep_dims=True), y=np.float32(0))
        return mb.sub(x=o, y=m, name="response")

    inputs = [ct.TensorType(name="features", shape=(K, w * w, N_FEATURES), dtype=np.float32)]
    meta = {"kind": "ccnf_fused", "scale": scale, "view": view, "window": w,
            "patch_scaling": float(experts.patch_scaling[scale]), "landmarks": [int(l) for l in pack.landmarks]}
    mil.convert(prog, inputs, meta, f"PyCLNF fused CCNF experts, patch scaling {experts.patch_scaling[scale]:.2f}, "
                f"view {view}, window {w}: features ({K},{w * w},122) -> response ({K},{w},{w})", path)


def write_ccnf_package(experts: PatchExpertSet, scale: int, view: int, window: int, path: Path) -> None:
    """Write the fused CCNF package of one scale, view and window to ``path``
    (what :class:`CoreMLWriter` writes per view, for a window an export lacks)."""
    _ccnf_package(_MIL(), experts, scale, view, ccnf_view_pack(experts, scale, view, window), Path(path))


# --------------------------------------------------------------------------- driver
class CoreMLWriter(ScaleWriter):
    """Writes the CoreML packages of one scale (see the module docstring);
    views without any expert get no fused package (``None`` in the entry)."""

    def __init__(self):
        self.mil = _MIL()

    def write_cen_scale(self, experts, scale, folder, emit) -> dict:
        fused, views = [], []
        for v in range(experts.n_views(scale)):
            lay = cen_view_layout(experts, scale, v)
            views.append(lay.to_json())
            if lay.n_items == 0:
                fused.append(None)
                continue
            name = f"fused_view{v}.mlpackage"
            _cen_fused_package(self.mil, experts, scale, lay, folder / name)
            emit(folder / name)
            fused.append(name)
        landmarks = []
        for lm in range(experts.n_points):
            name = f"landmark_{lm:02d}.mlpackage"
            _cen_landmark_package(self.mil, experts, scale, lm, folder / name)
            emit(folder / name)
            landmarks.append(name)
        return {"fused": fused, "landmarks": landmarks, "views": views}

    def write_ccnf_scale(self, experts, scale, folder, windows, emit) -> dict:
        files = {}
        for w in windows:
            per_view = []
            for v in range(experts.n_views(scale)):
                pack = ccnf_view_pack(experts, scale, v, w)
                if pack.landmarks.size == 0:
                    per_view.append(None)
                    continue
                name = f"fused_w{w}_view{v}.mlpackage"
                _ccnf_package(self.mil, experts, scale, v, pack, folder / name)
                emit(folder / name)
                per_view.append(name)
            files[str(w)] = per_view
        return {"fused": files}


def write_coreml_models(experts: PatchExpertSet, folder, windows: Optional[Dict[int, Sequence[int]]] = None,
                        emit: Optional[Callable[[Path], None]] = None) -> List[dict]:
    """Write every CoreML package of ``experts`` into ``folder`` (no manifest); see
    :func:`pyclnf.export.kinds.write_models` for the parameters."""
    writer = CoreMLWriter()
    # coremltools runs gc.collect() on every conversion; freezing the objects
    # that exist now (the experts, ...) makes those collections cheap
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        return write_models(writer, experts, folder, windows, emit)
    finally:
        if freeze:
            gc.unfreeze()
