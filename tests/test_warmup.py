"""compile_all() leaves nothing for a fit, a detection or a track to compile."""

import cv2
import numpy as np

from pyclnf import CLNF
from pyclnf._warmup import compile_all, kernel_signatures


def _compiled():
    return {d.__name__: set(d.signatures) for d, _ in kernel_signatures(fused=True)}


def test_compile_all_covers_fit_detection_and_track(model_dir, shared_dir):
    compile_all()
    before = _compiled()
    # every kernel of the list is compiled for the listed signature
    for dispatcher, sig in kernel_signatures():
        assert tuple(sig) in {tuple(s) for s in dispatcher.signatures}, dispatcher.__name__
    img = cv2.imread(str(shared_dir / "data/openface-samples/sample1.jpg"))
    assert img is not None
    for model in ("clnf", "ceclm"):
        det = CLNF(model_dir=model_dir, model=model, backend="numba")
        det.detect_and_fit(img)
        det.fit(img, (100.0, 100.0, 200.0, 200.0))
        frames = list(det.track([img, img]))
        assert len(frames) == 2
    after = _compiled()
    new = {name: after[name] - before[name] for name in after if after[name] - before[name]}
    # exact: any new specialisation would be compiled during the first fit
    assert new == {}


def test_compile_all_reports_each_kernel():
    times = compile_all()
    assert set(times) == {d.__name__ for d, _ in kernel_signatures()}
    assert all(np.isfinite(t) and t >= 0 for t in times.values())
