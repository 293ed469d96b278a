"""The header shared by OpenFace's CCNF and CEN patch-expert files:
patch scaling, view count, view centres and visibilities."""

from __future__ import annotations

import numpy as np

from .binary import ALL_TYPES, BinaryReader, BinaryWriter


def read_patch_header(r: BinaryReader):
    """Read ``float64 scaling; int32 n_views; n_views x centre; n_views x visibility``.

    Returns
    -------
    scaling : float
    centers : (n_views, 3) array, degrees, file dtype
    visibilities : (n_views, n_points) array, file dtype
    """
    scaling = r.float64("patch scaling")
    if not 0 < scaling < 100:
        raise r.error("a patch scaling in (0, 100)", found=repr(scaling), offset=0)
    n_views = r.count("view count", 1, 1000)
    centers = []
    for v in range(n_views):
        at = r.offset
        c = r.mat(f"view {v} centre", types=ALL_TYPES)
        if c.size != 3 or np.abs(c.astype(np.float64)).max() > 360:
            raise r.error(f"view {v} centre: 3 angles in [-360, 360] degrees",
                          found=f"shape {c.shape}", offset=at)
        centers.append(c)
    vis = [r.mat(f"view {v} visibility", types=ALL_TYPES, shape=(None, 1))
           for v in range(n_views)]
    n_points = vis[0].shape[0]
    if n_points == 0 or any(v.shape != (n_points, 1) for v in vis):
        raise r.error(f"visibilities of shape ({max(n_points, 1)}, 1) for every view")
    return scaling, np.stack([c.reshape(3) for c in centers]), np.stack([v.reshape(-1) for v in vis])


def write_patch_header(w: BinaryWriter, scaling, centers_deg, visibilities) -> None:
    """Inverse of :func:`read_patch_header`."""
    w.f64(scaling)
    w.i32(len(centers_deg))
    for c in centers_deg:
        w.mat(np.asarray(c).reshape(3, 1))
    for v in visibilities:
        w.mat(np.asarray(v).reshape(-1, 1))


class ViewLayoutMixin:
    """Properties shared by :class:`~pyclnf.formats.cen.CENScale` and
    :class:`~pyclnf.formats.ccnf.CCNFScale` (fields ``centers_deg``,
    ``visibilities``, ``experts``)."""

    @property
    def centers(self) -> np.ndarray:
        """(n_views, 3) float64 view centres in radians."""
        return self.centers_deg.astype(np.float64) * np.pi / 180.0

    @property
    def n_views(self) -> int:
        return len(self.experts)

    @property
    def n_points(self) -> int:
        return self.visibilities.shape[1]
