"""Export OpenFace CEN and CCNF patch experts to ONNX (built with ``onnx.helper``).

Folder layout written by :func:`write_onnx_models` (one sub-folder per scale,
named after the patch scaling)::

    cen_0.25/weights.bin          every stored expert's weights once (float32, raw)
    cen_0.25/fused.onnx           all landmarks of a view in one call
    cen_0.25/landmark_00.onnx ... one model per landmark, every view
    ccnf_0.25/fused_w11.onnx      CCNF, one model per window size

Models (opset :data:`OPSET`; dynamic dimensions named in brackets)
-------------------------------------------------------------------
``cen_*/landmark_XX.onnx`` -- contrast-normalised im2col *inside* the graph.

* input ``area`` float32 ``[N, 1, A, A]``: raw grayscale areas of interest
  (0-255), ``A = w + 10``, ``w`` odd >= 3.
* input ``view`` int64 ``[1]``: view index of the scale.
* output ``response`` float32 ``[N, 1, w, w]`` indexed ``[.., y, x]``: the
  landmark's response at that view; OpenFace's mirrored experts are resolved
  in the graph (patch flipped in, response flipped out); zeros when the
  landmark has no expert at that view.

The view selects a stored expert with ``Gather`` from per-landmark weight
stacks (``Concat`` of slices of ``weights.bin``, folded by ONNX Runtime at
load), so the file itself holds only the graph.

``cen_*/fused.onnx`` -- the speed path; im2col on the host (the Numba kernel
:func:`pyclnf.backends._kernels.im2col_contrast_norm`).

* input ``features`` float32 ``[K, P, 122]``: normalised features of the K
  items of the view (``P = (w*w - 1) // 2`` sparse positions, patches of
  mirrored items already flipped), in the item order of
  :func:`pyclnf.export.layout.cen_view_layout` (stored in the manifest and in
  the model's ``pyclnf.layout`` metadata).
* input ``view`` int64 ``[1]``.
* output ``values`` float32 ``[K, P]``: network outputs at the sparse
  positions; the host interpolates the other positions
  (:func:`~pyclnf.backends._kernels.sparse_to_dense`) and flips mirrored
  items back.

A chain of ``If`` nodes picks the view's branch; each branch runs one batched
``MatMul`` per layer and block (weights stacked ``[count, in, out]``).

``ccnf_*/fused_wW.onnx`` -- CCNF for window ``W``; im2col on the host (dense).

* input ``features`` float32 ``[K, W*W, 122]`` (the plan's landmarks,
  ascending), input ``view`` int64 ``[1]``.
* output ``response`` float32 ``[K, W, W]`` ``[.., y, x]``: neuron sum
  ``sum 2*alpha*sigmoid(features @ w)``, CRF ``Sigma @ r``, minimum shifted
  to 0 if negative -- the full CCNF response.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..formats.cen import LINEAR, RELU, SIGMOID
from ..patch_experts import PatchExpertSet, SUPPORT
from .kinds import ScaleWriter, write_models
from .layout import (LAYOUT_VERSION, N_FEATURES, CENViewLayout, cen_block_arrays, cen_landmark_layout,
                     cen_view_layout, ccnf_view_pack)

__all__ = ["OPSET", "IR_VERSION", "ONNXWriter", "write_onnx_models", "build_ccnf_model",
           "onnx_package_versions"]

#: ONNX operator set of the exported models.
OPSET = 17
#: IR version matching :data:`OPSET` (readable by ONNX Runtime >= 1.13).
IR_VERSION = 8
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


def _onnx():
    try:
        import onnx
    except ModuleNotFoundError as exc:
        from ..errors import BackendUnavailableError
        raise BackendUnavailableError(
            "exporting to ONNX needs the 'onnx' package: pip install 'pyclnf-accel[onnx]'") from exc
    return onnx


def onnx_package_versions() -> Dict[str, str]:
    """Versions of the packages an ONNX export depends on."""
    out = {"numpy": np.__version__, "onnx": _onnx().__version__}
    try:
        import onnxruntime
        out["onnxruntime"] = onnxruntime.__version__
    except ModuleNotFoundError:
        pass
    return out


# --------------------------------------------------------------------------- graph helpers
class _Names:
    """Unique value/node names across a model and its subgraphs."""

    def __init__(self):
        self._count: Dict[str, int] = {}

    def __call__(self, base: str) -> str:
        n = self._count.get(base, 0)
        self._count[base] = n + 1
        return base if n == 0 else f"{base}_{n}"


class _Graph:
    """Accumulates nodes and initializers of one (sub)graph."""

    def __init__(self, names: _Names):
        self.onnx = _onnx()
        self.names = names
        self.nodes = []
        self.initializers = []

    def node(self, op: str, inputs: Sequence[str], base: Optional[str] = None, n_out: int = 1,
             outputs: Optional[Sequence[str]] = None, **attrs):
        base = base or op.lower()
        outs = list(outputs) if outputs is not None else [self.names(base) for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), outs, name=self.names(f"n_{base}"),
                                                     **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, value, base: str = "c", dtype=None) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.names(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def add_initializer(self, tensor) -> str:
        self.initializers.append(tensor)
        return tensor.name

    def activation(self, x: str, act: int) -> str:
        if act == SIGMOID:
            return self.node("Sigmoid", [x], "sigmoid")
        if act == RELU:
            return self.node("Relu", [x], "relu")
        if act == LINEAR:
            return x
        raise ValueError(f"unknown CEN activation {act}")

    def slice(self, x: str, start: int, end: int, axis: int, step: int = 1) -> str:
        return self.node("Slice", [x, self.const([start], "st", np.int64), self.const([end], "en", np.int64),
                                   self.const([axis], "ax", np.int64), self.const([step], "sp", np.int64)],
                         "slice")

    def flip_last(self, x: str, axis: int = 3) -> str:
        return self.slice(x, -1, _INT64_MIN, axis, -1)


class _WeightsFile:
    """Raw float32 arrays appended to one file, referenced as ONNX external data."""

    ALIGN = 64

    def __init__(self, path: Path):
        self.path = Path(path)
        self.location = self.path.name
        self._fh = open(self.path, "wb")
        self.offset = 0

    def append(self, arr: np.ndarray) -> int:
        arr = np.ascontiguousarray(arr, dtype="<f4")
        pad = (-self.offset) % self.ALIGN
        if pad:
            self._fh.write(b"\0" * pad)
            self.offset += pad
        start = self.offset
        self._fh.write(arr.tobytes())
        self.offset += arr.nbytes
        return start

    def tensor(self, name: str, offset: int, shape: Sequence[int]):
        onnx = _onnx()
        t = onnx.TensorProto()
        t.name = name
        t.data_type = onnx.TensorProto.FLOAT
        t.dims.extend(int(d) for d in shape)
        t.data_location = onnx.TensorProto.EXTERNAL
        nbytes = int(np.prod(shape)) * 4
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(nbytes))):
            entry = t.external_data.add()
            entry.key = key
            entry.value = value
        return t

    def close(self) -> None:
        self._fh.close()


def _model(graph_nodes, name, inputs, outputs, initializers, metadata: dict, doc: str):
    onnx = _onnx()
    graph = onnx.helper.make_graph(graph_nodes, name, inputs, outputs, initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="pyclnf", doc_string=doc)
    model.ir_version = IR_VERSION
    from .._version import __version__
    model.producer_version = __version__
    onnx.helper.set_model_props(model, {"pyclnf.layout": json.dumps(metadata, separators=(",", ":")),
                                        "pyclnf.layout_version": str(LAYOUT_VERSION)})
    return model


def _save(model, path: Path) -> None:
    # serialise through a file object so that onnx does not touch external data
    with open(path, "wb") as fh:
        _onnx().save_model(model, fh)


# --------------------------------------------------------------------------- CEN per landmark
def _im2col_nodes(g: _Graph, area: str) -> str:
    """area [N,1,A,A] -> contrast-normalised sparse features [N, P, 122]."""
    n = SUPPORT * SUPPORT
    onehot = np.zeros((n, 1, SUPPORT, SUPPORT), np.float32)
    for xx in range(SUPPORT):
        for yy in range(SUPPORT):
            onehot[xx * SUPPORT + yy, 0, yy, xx] = 1.0      # feature order column-major
    cols = g.node("Conv", [area, g.const(onehot, "im2col_kernel")], "cols")   # [N,121,w,w] (y, x)
    mean = g.node("ReduceMean", [cols], "mean", axes=[1], keepdims=1)
    c = g.node("Sub", [cols, mean], "centred")
    ss = g.node("ReduceSum", [g.node("Mul", [c, c], "sq"), g.const([1], "axes", np.int64)], "sumsq", keepdims=1)
    norm = g.node("Sqrt", [ss], "norm")
    zero = g.node("Equal", [norm, g.const(np.float32(0), "zero")], "norm_is_zero")
    norm = g.node("Where", [zero, g.const(np.float32(1), "one"), norm], "norm_safe")
    xn = g.node("Mul", [c, g.node("Reciprocal", [norm], "inv_norm")], "normalised")
    t = g.node("Transpose", [xn], "x_major", perm=[0, 3, 2, 1])        # [N, x, y, 121]
    flat = g.node("Reshape", [t, g.const([0, -1, n], "shape_flat", np.int64)], "flat")  # [N, w*w, 121]
    sparse = g.slice(flat, 1, _INT64_MAX, 1, 2)                           # odd linear indices
    return g.node("Pad", [sparse, g.const([0, 0, 1, 0, 0, 0], "pads", np.int64),
                          g.const(np.float32(1), "bias_one")], "features", mode="constant")


def _interleave(g: _Graph, even: str, odd: str, w3: str) -> str:
    """Two [N, P] maps -> [N, 1, w, w] (y, x) map with `odd` at odd linear indices."""
    e = g.node("Unsqueeze", [even, g.const([2], "ax2", np.int64)], "even")
    o = g.node("Unsqueeze", [odd, g.const([2], "ax2", np.int64)], "odd")
    pairs = g.node("Concat", [e, o], "pairs", axis=2)                               # [N, P, 2]
    flat = g.node("Reshape", [pairs, g.const([0, -1], "shape2", np.int64)], "inter")  # [N, 2P]
    flat = g.node("Pad", [flat, g.const([0, 0, 0, 1], "pad_end", np.int64), g.const(np.float32(0), "zf")],
                  "inter_full", mode="constant")                                    # [N, w*w]
    xy = g.node("Reshape", [flat, w3], "map_xy")                                    # [N, x, y]
    yx = g.node("Transpose", [xy], "map_yx", perm=[0, 2, 1])
    return g.node("Unsqueeze", [yx, g.const([1], "ax1", np.int64)], "map")


def _sparse_to_dense_nodes(g: _Graph, values: str, area: str) -> str:
    """values [N, P] (odd linear indices) -> [N, 1, w, w] with OpenFace's interpolation."""
    shape_a = g.node("Shape", [area], "area_shape")
    a_dim = g.node("Slice", [shape_a, g.const([3], "i3", np.int64), g.const([4], "i4", np.int64)], "a_dim")
    w = g.node("Sub", [a_dim, g.const([SUPPORT - 1], "ten", np.int64)], "w_dim")
    w3 = g.node("Concat", [g.const([0], "zero_dim", np.int64), w, w], "shape_w3", axis=0)
    vshape = g.node("Shape", [values], "values_shape")
    zeros = g.node("ConstantOfShape", [vshape], "zeros",
                   value=g.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
    ones = g.node("ConstantOfShape", [vshape], "ones",
                  value=g.onnx.numpy_helper.from_array(np.ones(1, np.float32)))
    dense = _interleave(g, zeros, values, w3)
    evaluated = g.node("Cast", [_interleave(g, zeros, ones, w3)], "evaluated", to=g.onnx.TensorProto.BOOL)
    cross = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float32).reshape(1, 1, 3, 3)
    k = g.const(cross, "cross")
    nsum = g.node("Conv", [dense, k], "neigh_sum", pads=[1, 1, 1, 1])
    ones_map = g.node("ConstantOfShape", [g.node("Shape", [dense], "map_shape")], "ones_map",
                      value=g.onnx.numpy_helper.from_array(np.ones(1, np.float32)))
    cnt = g.node("Conv", [ones_map, k], "neigh_count", pads=[1, 1, 1, 1])
    interp = g.node("Mul", [nsum, g.node("Reciprocal", [cnt], "inv_count")], "interp")
    return g.node("Where", [evaluated, dense, interp], "dense")


def _cen_landmark_model(experts: PatchExpertSet, scale: int, landmark: int, slot_tensors):
    """Per-landmark model; ``slot_tensors[l] = (w_tensors, b_tensors)`` per slot."""
    onnx = _onnx()
    lay = cen_landmark_layout(experts, scale, landmark)
    names = _Names()
    g = _Graph(names)
    area, view = "area", "view"
    slot = g.node("Gather", [g.const(lay.slot_of_view, "slot_of_view", np.int64), view], "slot", axis=0)
    flip = g.node("Gather", [g.const(lay.flip_of_view, "flip_of_view", np.bool_), view], "flip", axis=0)
    vis = g.node("Gather", [g.const(lay.visible_of_view.astype(np.float32), "visible_of_view"), view],
                 "visible", axis=0)
    a = g.node("Where", [flip, g.flip_last(area), area], "area_oriented")
    h = _im2col_nodes(g, a)
    for layer, act in enumerate(lay.activations):
        w_list, b_list = slot_tensors[layer]
        w_names = [g.add_initializer(t) for t in w_list]
        b_names = [g.add_initializer(t) for t in b_list]
        w_stack = w_names[0] if len(w_names) == 1 else g.node("Concat", w_names, f"W{layer}_stack", axis=0)
        b_stack = b_names[0] if len(b_names) == 1 else g.node("Concat", b_names, f"b{layer}_stack", axis=0)
        wl = g.node("Gather", [w_stack, slot], f"W{layer}", axis=0)     # [1, in, out]
        bl = g.node("Gather", [b_stack, slot], f"b{layer}", axis=0)     # [1, 1, out]
        h = g.node("Add", [g.node("MatMul", [h, wl], f"mm{layer}"), bl], f"pre{layer}")
        h = g.activation(h, act)
    values = g.node("Reshape", [h, g.const([0, -1], "shape_vals", np.int64)], "values")   # [N, P]
    dense = _sparse_to_dense_nodes(g, values, a)
    oriented = g.node("Where", [flip, g.flip_last(dense), dense], "response_oriented")
    g.node("Mul", [oriented, vis], outputs=["response"])
    F = onnx.TensorProto.FLOAT
    inputs = [onnx.helper.make_tensor_value_info("area", F, ["N", 1, "A", "A"]),
              onnx.helper.make_tensor_value_info("view", onnx.TensorProto.INT64, [1])]
    outputs = [onnx.helper.make_tensor_value_info("response", F, ["N", 1, "w", "w"])]
    meta = dict(lay.to_json(), kind="cen_landmark", scale=scale,
                patch_scaling=float(experts.patch_scaling[scale]))
    doc = (f"PyCLNF CEN patch expert, landmark {landmark}, patch scaling {experts.patch_scaling[scale]:.2f}, "
           f"all {experts.n_views(scale)} views. area [N,1,A,A] raw 0-255 -> response [N,1,w,w], w = A-10.")
    return _model(g.nodes, f"cen_landmark_{landmark}", inputs, outputs, g.initializers, meta, doc)


# --------------------------------------------------------------------------- CEN fused
def _empty_branch_output(g: _Graph, features: str, last_dim_axis: int = 2) -> str:
    empty = g.slice(features, 0, 0, 0)
    return g.node("ReduceSum", [empty, g.const([last_dim_axis], "axes", np.int64)], "empty_out", keepdims=0)


def _if_chain(g: _Graph, view: str, branch_builders: List[Callable[[_Graph], str]], output: str,
              out_rank: int) -> None:
    """Nested ``If`` nodes: branch ``v`` when ``view == v`` (the last one otherwise)."""
    onnx = _onnx()
    F = onnx.TensorProto.FLOAT

    def subgraph(build, name):
        sg = _Graph(g.names)
        out = build(sg)
        out_id = sg.node("Identity", [out], "branch_out")
        vi = onnx.helper.make_tensor_value_info(out_id, F, [None] * out_rank)
        return onnx.helper.make_graph(sg.nodes, name, [], [vi], sg.initializers)

    def chain(parent: _Graph, v: int, out_name: Optional[str]) -> str:
        if v == len(branch_builders) - 1:
            out = branch_builders[v](parent)
            if out_name is not None:
                return parent.node("Identity", [out], outputs=[out_name])
            return out
        cond = parent.node("Equal", [view, parent.const([v], "view_id", np.int64)], f"is_view{v}")
        then_g = subgraph(branch_builders[v], f"view{v}")
        else_g = subgraph(lambda sg: chain(sg, v + 1, None), f"after_view{v}")
        outs = [out_name] if out_name is not None else None
        return parent.node("If", [cond], f"view{v}_or_later", outputs=outs, then_branch=then_g,
                           else_branch=else_g)

    chain(g, 0, output)


def _cen_fused_model(experts: PatchExpertSet, scale: int, layouts: List[CENViewLayout], block_tensors):
    onnx = _onnx()
    names = _Names()
    g = _Graph(names)
    stack_names: Dict[str, Tuple[List[str], List[str]]] = {}
    for key, (w_list, b_list) in block_tensors.items():
        stack_names[key] = ([g.add_initializer(t) for t in w_list], [g.add_initializer(t) for t in b_list])

    def branch(lay: CENViewLayout):
        def build(sg: _Graph) -> str:
            if lay.n_items == 0:
                return _empty_branch_output(sg, "features")
            outs, start = [], 0
            for b in lay.blocks:
                x = sg.slice("features", start, start + b.n_items, 0)
                start += b.n_items
                h = sg.node("Reshape", [x, sg.const([b.count, -1, N_FEATURES], "shape_blk", np.int64)], "blk")
                w_names, b_names = stack_names[b.key()]
                for layer, act in enumerate(b.activations):
                    h = sg.node("Add", [sg.node("MatMul", [h, w_names[layer]], "mm"), b_names[layer]], "pre")
                    h = sg.activation(h, act)
                outs.append(sg.node("Reshape", [h, sg.const([b.n_items, -1], "shape_out", np.int64)], "vals"))
            return outs[0] if len(outs) == 1 else sg.node("Concat", outs, "values_v", axis=0)
        return build

    _if_chain(g, "view", [branch(l) for l in layouts], "values", 2)
    F = onnx.TensorProto.FLOAT
    inputs = [onnx.helper.make_tensor_value_info("features", F, ["K", "P", N_FEATURES]),
              onnx.helper.make_tensor_value_info("view", onnx.TensorProto.INT64, [1])]
    outputs = [onnx.helper.make_tensor_value_info("values", F, ["K", "P"])]
    meta = {"kind": "cen_fused", "scale": scale, "patch_scaling": float(experts.patch_scaling[scale]),
            "views": [l.to_json() for l in layouts]}
    doc = (f"PyCLNF fused CEN patch experts, patch scaling {experts.patch_scaling[scale]:.2f}: features "
           f"[K,P,122] of one view (item order in metadata pyclnf.layout) -> values [K,P] at odd linear "
           f"positions x*w+y.")
    return _model(g.nodes, "cen_fused", inputs, outputs, g.initializers, meta, doc)


def _write_cen_scale(experts: PatchExpertSet, scale: int, folder: Path, emit) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    layouts = [cen_view_layout(experts, scale, v) for v in range(experts.n_views(scale))]
    wf = _WeightsFile(folder / "weights.bin")
    block_tensors: Dict[str, Tuple[list, list]] = {}
    where: Dict[Tuple[int, int], Tuple[str, int]] = {}   # source -> (block key, index)
    block_offsets: Dict[str, Tuple[list, list]] = {}
    try:
        for lay in layouts:
            for b in lay.blocks:
                key = b.key()
                if key in block_tensors:
                    continue
                ws, bs = cen_block_arrays(experts, scale, b)
                w_off = [wf.append(a) for a in ws]
                b_off = [wf.append(a) for a in bs]
                idx = len(block_tensors)
                block_tensors[key] = ([wf.tensor(f"blk{idx}_W{l}", o, a.shape) for l, (o, a) in enumerate(zip(w_off, ws))],
                                      [wf.tensor(f"blk{idx}_b{l}", o, a.shape) for l, (o, a) in enumerate(zip(b_off, bs))])
                block_offsets[key] = ([(o, a.shape) for o, a in zip(w_off, ws)],
                                      [(o, a.shape) for o, a in zip(b_off, bs)])
                for j, s in enumerate(b.sources):
                    where.setdefault(s, (key, j))
    finally:
        wf.close()
    emit(folder / "weights.bin")
    _save(_cen_fused_model(experts, scale, layouts, block_tensors), folder / "fused.onnx")
    emit(folder / "fused.onnx")

    landmark_files = []
    for lm in range(experts.n_points):
        lay = cen_landmark_layout(experts, scale, lm)
        slot_tensors = []
        for layer in range(len(lay.activations)):
            w_list, b_list = [], []
            if lay.slots:
                for j, s in enumerate(lay.slots):
                    key, g_idx = where[s]
                    (wo, wshape), (bo, bshape) = block_offsets[key][0][layer], block_offsets[key][1][layer]
                    w_bytes = int(np.prod(wshape[1:])) * 4
                    b_bytes = int(np.prod(bshape[1:])) * 4
                    w_list.append(wf.tensor(f"W{layer}_slot{j}", wo + g_idx * w_bytes, (1,) + tuple(wshape[1:])))
                    b_list.append(wf.tensor(f"b{layer}_slot{j}", bo + g_idx * b_bytes, (1,) + tuple(bshape[1:])))
            else:
                onnx = _onnx()
                sizes = lay.layer_sizes
                w_list.append(onnx.numpy_helper.from_array(
                    np.zeros((1, sizes[layer], sizes[layer + 1]), np.float32), f"W{layer}_slot0"))
                b_list.append(onnx.numpy_helper.from_array(
                    np.zeros((1, 1, sizes[layer + 1]), np.float32), f"b{layer}_slot0"))
            slot_tensors.append((w_list, b_list))
        name = f"landmark_{lm:02d}.onnx"
        _save(_cen_landmark_model(experts, scale, lm, slot_tensors), folder / name)
        emit(folder / name)
        landmark_files.append(name)
    return {"fused": "fused.onnx", "weights": "weights.bin", "landmarks": landmark_files,
            "views": [l.to_json() for l in layouts]}


# --------------------------------------------------------------------------- CCNF
def build_ccnf_model(experts: PatchExpertSet, scale: int, window: int):
    """The fused CCNF model of one scale and window (an in-memory ``ModelProto``,
    weights embedded)."""
    onnx = _onnx()
    names = _Names()
    g = _Graph(names)
    packs = [ccnf_view_pack(experts, scale, v, window) for v in range(experts.n_views(scale))]
    consts = []
    for v, p in enumerate(packs):
        if p.landmarks.size == 0:
            consts.append(None)
            continue
        consts.append((g.const(p.weights, f"v{v}_neuron_weights"), g.const(p.alpha2, f"v{v}_alpha2"),
                       g.const(p.sigma, f"v{v}_sigma")))

    def branch(v: int):
        def build(sg: _Graph) -> str:
            if consts[v] is None:
                return sg.node("Reshape", [_empty_branch_output(sg, "features"),
                                           sg.const([0, window, window], "shape_empty", np.int64)], "empty_map")
            wn, a2, sig = consts[v]
            z = sg.node("MatMul", ["features", wn], "z")                      # [K, w*w, n]
            r = sg.node("MatMul", [sg.node("Sigmoid", [z], "act"), a2], "neuron_sum")   # [K, w*w, 1]
            o = sg.node("MatMul", [sig, r], "crf")                            # [K, w*w, 1]
            o = sg.node("Reshape", [o, sg.const([-1, window, window], "shape_map", np.int64)], "map")
            m = sg.node("ReduceMin", [o], "map_min", axes=[1, 2], keepdims=1)
            m = sg.node("Min", [m, sg.const(np.zeros((1, 1, 1), np.float32), "zero")], "neg_min")
            return sg.node("Sub", [o, m], "shifted")
        return build

    _if_chain(g, "view", [branch(v) for v in range(len(packs))], "response", 3)
    F = onnx.TensorProto.FLOAT
    inputs = [onnx.helper.make_tensor_value_info("features", F, ["K", window * window, N_FEATURES]),
              onnx.helper.make_tensor_value_info("view", onnx.TensorProto.INT64, [1])]
    outputs = [onnx.helper.make_tensor_value_info("response", F, ["K", window, window])]
    meta = {"kind": "ccnf_fused", "scale": scale, "window": window,
            "patch_scaling": float(experts.patch_scaling[scale]),
            "views": [{"view": v, "landmarks": [int(l) for l in p.landmarks]} for v, p in enumerate(packs)]}
    doc = (f"PyCLNF fused CCNF patch experts, patch scaling {experts.patch_scaling[scale]:.2f}, window "
           f"{window}: dense features [K,{window * window},122] (positions x*w+y) of one view -> response "
           f"[K,{window},{window}] (y, x) after the CRF.")
    return _model(g.nodes, f"ccnf_w{window}", inputs, outputs, g.initializers, meta, doc)


# --------------------------------------------------------------------------- driver
class ONNXWriter(ScaleWriter):
    """Writes the ONNX models of one scale (see the module docstring)."""

    def write_cen_scale(self, experts, scale, folder, emit) -> dict:
        return _write_cen_scale(experts, scale, folder, emit)

    def write_ccnf_scale(self, experts, scale, folder, windows, emit) -> dict:
        files = {}
        for w in windows:
            name = f"fused_w{w}.onnx"
            _save(build_ccnf_model(experts, scale, w), folder / name)
            emit(folder / name)
            files[str(w)] = name
        return {"fused": files}


def write_onnx_models(experts: PatchExpertSet, folder, windows: Optional[Dict[int, Sequence[int]]] = None,
                      emit: Optional[Callable[[Path], None]] = None) -> List[dict]:
    """Write every ONNX model of ``experts`` into ``folder`` (no manifest); see
    :func:`pyclnf.export.kinds.write_models` for the parameters."""
    return write_models(ONNXWriter(), experts, folder, windows, emit)
