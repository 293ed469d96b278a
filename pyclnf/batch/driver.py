"""``pyclnf.batch.process``: many inputs on every core of this machine (an
embedded local Dask cluster), on an existing dask.distributed cluster, or in
this process; resumable, sharded, failures isolated and recorded.

Each input is one task, :func:`run_task`, which runs the single-file code
path (:func:`pyclnf.batch.job.process_file`) with the detector the worker
process keeps (:func:`pyclnf.batch.job.detector`: models load once per
worker).  The driver alone writes the manifest (:mod:`pyclnf.batch.manifest`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from .inputs import Item, discover, shard
from .job import COMPLETE, FileOptions, InterruptFlag, detector, process_file
from .manifest import Manifest, is_done, signature

__all__ = ["BatchSummary", "process", "run_task", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'pyclnf-accel[batch]' (dask and distributed)"
#: Seconds between a worker's checks of the driver's stop request.
STOP_POLL_S = 1.0



@dataclass
class BatchSummary:
    """The outcome of :func:`process`.

    Attributes
    ----------
    items : list of Item
        This part's inputs.
    records : list of dict
        Manifest records written by this run (one per input processed).
    skipped : list of dict
        Manifest records of inputs skipped as done by an earlier run.
    interrupted : bool
        Stopped by Ctrl-C (or ``stop``) before every input was processed.
    seconds : float
        Wall time.
    out_dir : Path
    """

    items: List[Item]
    records: List[dict] = field(default_factory=list)
    skipped: List[dict] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    out_dir: Optional[Path] = None

    def counts(self) -> Dict[str, int]:
        """Inputs per status (this run's records and the skipped ones)."""
        c: Dict[str, int] = {}
        for r in self.records + self.skipped:
            c[r["status"]] = c.get(r["status"], 0) + 1
        return c

    @property
    def frames(self) -> int:
        """Frames processed by this run."""
        return sum(r["frames"] for r in self.records)

    @property
    def exit_code(self) -> int:
        """0 when every input has status ``ok``, 130 when interrupted, else 1."""
        if self.interrupted:
            return 130
        done = self.records + self.skipped
        return 0 if len(done) == len(self.items) and all(r["status"] == "ok" for r in done) else 1

    def line(self) -> str:
        """The one-line summary."""
        c = self.counts()
        parts = [f"{n} {s.replace('_', ' ')}" for s, n in sorted(c.items(), key=lambda kv: -kv[1])]
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        left = len(self.items) - len(self.records) - len(self.skipped)
        return (f"pyclnf batch: {len(self.items)} input(s): {', '.join(parts) or 'none done'}"
                + (f", {left} not done (interrupted)" if left else "")
                + (f"; {len(self.skipped)} skipped as done earlier" if self.skipped else "")
                + f"; {self.frames} frame(s) in {self.seconds:.1f} s ({fps:.1f} frames/s) -> {self.out_dir}")


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(source: str, rel: str, out_dir: str, options: FileOptions, channel: Optional[str] = None,
             *, stop: Optional[Callable[[], bool]] = None, on_frame=None) -> dict:
    """Process one input (a task on a worker, or in the driver with one worker).

    Never raises for a bad input: the record's ``status`` and ``error`` say
    what went wrong.  A task stopped by the driver (the distributed Event
    named ``stop_event``, or ``stop``) leaves no output and returns status
    ``interrupted``.

    Parameters
    ----------
    source, rel, out_dir, options
        The input, its output name (:class:`Item`), the output folder, the
        per-file options.
    channel : str, optional
        On a Dask worker: the batch's id, naming the distributed Event the
        driver sets to stop and the Queue the frame counts go to.
    stop, on_frame : callable, optional
        In the driver's process: the stop poll and the per-frame callback.

    Returns
    -------
    dict
        The manifest fields the worker knows (see :mod:`pyclnf.batch.manifest`).
    """
    base = Item(source, rel).base(out_dir)
    if channel is not None:           # on a Dask worker: the driver's stop request, frame counts to it
        from ._dask import WorkerLink
        stop = on_frame = WorkerLink(channel)
    stop = stop or (lambda: False)
    rec = {"input": source, "rel": rel, "worker": _worker_name(), "output": f"{rel}.csv", "frames": 0,
           "frames_ok": 0, "declared_frames": None, "seconds": 0.0, "error": None, "outputs": [],
           "csv_bytes": None}
    if stop():                        # queued when the batch was stopped
        rec["status"] = "interrupted"
        return rec
    try:
        res = process_file(detector(options), source, base, options, stop=stop, on_frame=on_frame)
    except Exception as exc:          # a bug or a model problem: isolate it
        rec.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        return rec
    finally:
        if hasattr(on_frame, "flush"):
            on_frame.flush()
    if res.status == "interrupted":
        part = Path(f"{base}.csv.part")
        if part.exists():
            part.unlink()
    rec.update(status=res.status, frames=res.frames, frames_ok=res.frames_ok,
               declared_frames=res.declared_frames, seconds=round(res.seconds, 3),
               error=res.error or (res.messages[0] if res.messages else None),
               outputs=[Path(os.path.relpath(p, out_dir)).as_posix() for p in res.outputs])
    if res.status in COMPLETE:
        rec["csv_bytes"] = Path(f"{base}.csv").stat().st_size
    return rec


def progress_bar(total: int, enabled: bool):
    """The batch's one progress display: files done (ETA), frames and fps as postfix."""
    from tqdm import tqdm
    return tqdm(total=total, unit="file", disable=True if not enabled else None, dynamic_ncols=True,
                desc="pyclnf batch")


def process(inputs: Sequence[Union[str, os.PathLike]], out_dir, options: Optional[FileOptions] = None, *,
            workers: Optional[int] = None, scheduler=None, num_parts: int = 1, part_id: int = 0,
            resume: bool = True, progress: bool = True, stop: Optional[Callable[[], bool]] = None,
            on_record: Optional[Callable[[dict], None]] = None) -> BatchSummary:
    """Process many inputs into ``out_dir``, mirroring their relative paths.

    Parameters
    ----------
    inputs : sequence of str or PathLike
        Files, folders (searched recursively) and text files listing paths
        (see :func:`pyclnf.batch.inputs.discover`).
    out_dir : str or Path
        Output folder; also holds the manifest ``batch.jsonl``.
    options : FileOptions, optional
        The per-file options (those of ``pyclnf run``).
    workers : int, optional
        Worker processes of the embedded local Dask cluster (one thread
        each); default: one per core.  1 runs in this process (no Dask
        needed).
    scheduler : str or distributed.Client, optional
        Address (``tcp://host:port``) of an existing dask.distributed
        scheduler, or a client; default ``$DASK_SCHEDULER_ADDRESS``.
    num_parts, part_id : int
        Process only part ``part_id`` of ``num_parts`` disjoint, stable parts.
    resume : bool
        Skip inputs whose manifest record says their outputs are complete
        and made from the input as it is now, with these options.
    progress : bool
        Show a progress bar on stderr (a terminal only).
    stop : callable() -> bool, optional
        Polled by the driver; True stops the batch as Ctrl-C does.
    on_record : callable(record), optional
        Called with each manifest record as it is written.

    Returns
    -------
    BatchSummary

    Notes
    -----
    The embedded cluster starts worker processes with ``spawn``: a script
    that calls :func:`process` must do so under ``if __name__ == "__main__":``.

    Raises
    ------
    ImportError
        More than one worker or a scheduler was asked for and dask.distributed
        is not installed (the message says how to install it).
    ValueError
        Bad ``num_parts`` / ``part_id`` / ``workers``.
    """
    t0 = time.perf_counter()
    options, out_dir = _absolute_paths(options or FileOptions(), out_dir)
    manifest, summary, todo = _plan(inputs, out_dir, options, num_parts, part_id, resume)
    scheduler = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    n = _worker_count(workers)
    record = _recorder(manifest, summary, options.fingerprint(), on_record)
    _run_todo(todo, manifest, out_dir, options, record, stop, progress, summary, scheduler, n)
    summary.seconds = time.perf_counter() - t0
    return summary


def _absolute_paths(options: FileOptions, out_dir):
    """``options`` with an absolute model folder and the created, absolute ``out_dir``."""
    if options.model_dir is not None:
        options = dataclasses.replace(options, model_dir=os.path.abspath(options.model_dir))
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    return options, out_dir


def _plan(inputs, out_dir: Path, options: FileOptions, num_parts: int, part_id: int, resume: bool):
    """Discover this part's inputs and open its manifest.

    Returns ``(manifest, summary, todo)``: ``summary`` already lists the
    inputs skipped as done (when ``resume``), ``todo`` holds ``(item,
    signature)`` for the others."""
    items = shard(discover(inputs, images=options.images), num_parts, part_id)
    manifest = Manifest(out_dir, num_parts, part_id)
    summary = BatchSummary(items, out_dir=out_dir)
    fp = options.fingerprint()
    todo = []
    for it in items:
        sig = signature(it.source)
        rec = manifest.latest.get(it.rel)
        if resume and is_done(rec, sig, fp, out_dir):
            summary.skipped.append(rec)
        else:
            todo.append((it, sig))
    return manifest, summary, todo


def _worker_count(workers: Optional[int]) -> int:
    """``workers``, checked, or one per core when None."""
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    return workers or os.cpu_count() or 1


def _recorder(manifest: Manifest, summary: BatchSummary, fp, on_record) -> Callable:
    """``record(item, signature, rec)``: stamp a finished input's record and
    write it to the manifest, the summary and ``on_record``."""
    def record(it: Item, sig, rec: dict) -> None:
        rec.update(signature=sig, options=fp, finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        manifest.append(rec)
        summary.records.append(rec)
        if on_record:
            on_record(rec)
    return record


def _run_todo(todo, manifest, out_dir, options, record, stop, progress, summary, scheduler, n) -> None:
    """Run ``todo`` here (one worker, no scheduler) or on Dask until done or
    halted (Ctrl-C or ``stop``); closes ``manifest`` in any case."""
    try:
        with InterruptFlag() as flag:
            halt = (lambda: flag() or stop()) if stop else flag
            if not todo:
                pass
            elif scheduler is None and n == 1:
                _run_here(todo, out_dir, options, record, halt, progress, summary)
            else:
                try:
                    from ._dask import run_dask
                except ImportError as exc:
                    raise ImportError(f"pyclnf batch needs dask.distributed for {n} workers or a scheduler: "
                                      f"{INSTALL_HINT}; --workers 1 runs without it") from exc
                run_dask(todo, out_dir, options, record, halt, progress, summary, scheduler, n)
    finally:
        manifest.close()


def _run_here(todo, out_dir, options, record, halt, progress, summary) -> None:
    """One worker: this process, input after input, progress per frame."""
    bar = progress_bar(len(todo), progress)
    frames = [0]
    t0 = time.perf_counter()

    def on_frame(_):
        frames[0] += 1
        if frames[0] % 10 == 0:
            bar.set_postfix(frames=frames[0], fps=f"{frames[0] / (time.perf_counter() - t0):.1f}")
    try:
        for it, sig in todo:
            rec = run_task(it.source, it.rel, str(out_dir), options, stop=halt, on_frame=on_frame)
            if rec["status"] == "interrupted":
                summary.interrupted = True
                return
            record(it, sig, rec)
            bar.update(1)
        summary.interrupted = False
    finally:
        bar.close()
