"""From a face detector's box to the box :meth:`pyclnf.CLNF.fit` expects.

``fit`` places OpenFace's mean shape so that its 68 landmarks span the box
tightly (``PDM::CalcParams``): from the jaw line to the eyebrows, narrower
and lower than a face detector's box around the whole face.  OpenFace turns
its MTCNN boxes into such boxes with a fixed correction
(:data:`CLNF_BOX_CORRECTION`: ``x += -0.0075 w``,
``y += 0.2459 h``, ``w *= 1.0323``, ``h *= 0.7751``); other detectors whose
boxes enclose the face the way MTCNN's do (dlib, RetinaFace, MediaPipe)
need the same correction, else the fit starts too high and too large.
"""

from __future__ import annotations

import numpy as np

#: OpenFace's correction of a face box for CLNF initialisation, (dx, dy, fw, fh):
#: ``x += dx w``, ``y += dy h``, ``w *= fw``, ``h *= fh``
CLNF_BOX_CORRECTION = (-0.0075, 0.2459, 1.0323, 0.7751)

#: accepted box layouts
BOX_FORMATS = ("xywh", "xyxy")


def correct_face_boxes(boxes_xywh) -> np.ndarray:
    """OpenFace's correction of face boxes for CLNF initialisation.

    Parameters
    ----------
    boxes_xywh : (n, 4) array
        Face boxes (x, y, width, height) in pixels.

    Returns
    -------
    (n, 4) ndarray of float64
        The boxes the 68 landmarks should span, rounded to float32 as OpenFace.
    """
    b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    dx, dy, fw, fh = CLNF_BOX_CORRECTION
    out = np.stack([b[:, 2] * dx + b[:, 0], b[:, 3] * dy + b[:, 1], fw * b[:, 2], fh * b[:, 3]], axis=1)
    return out.astype(np.float32).astype(np.float64)


def face_box_to_fit_box(box, box_format: str = "xywh") -> tuple:
    """The box to give :meth:`pyclnf.CLNF.fit` for a face detector's box.

    Parameters
    ----------
    box : 4 numbers
        The detector's box around the face, pixels: ``(x, y, width, height)``
        or, with ``box_format="xyxy"``, ``(x1, y1, x2, y2)``.
    box_format : {"xywh", "xyxy"}

    Returns
    -------
    (x, y, width, height) : tuple of float
        The landmark box ``fit`` expects.

    Raises
    ------
    ValueError
        Unknown ``box_format``, not 4 finite values, or an empty box.

    Examples
    --------
    >>> [round(v, 2) for v in face_box_to_fit_box((100, 80, 200, 200))]
    [98.5, 129.18, 206.46, 155.02]
    """
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format must be one of {BOX_FORMATS}, got {box_format!r}")
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.size != 4 or not np.all(np.isfinite(b)):
        raise ValueError(f"box must be 4 finite numbers, got {box!r}")
    if box_format == "xyxy":
        b = np.array([b[0], b[1], b[2] - b[0], b[3] - b[1]])
    if b[2] <= 0 or b[3] <= 0:
        raise ValueError(f"box has no area: {box!r} ({box_format})")
    return tuple(float(v) for v in correct_face_boxes(b)[0])
