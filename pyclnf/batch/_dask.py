"""The Dask side of :func:`pyclnf.batch.process` (imported only when Dask is
used): the embedded local cluster or a client of an existing one, one task
per input, results collected in the driver as they finish."""

from __future__ import annotations

import logging
import signal
import time
import uuid

import dask
from distributed import Client, Event, LocalCluster, Queue, WorkerPlugin, wait

from .driver import progress_bar, run_task

__all__ = ["IgnoreSigint", "WorkerLink", "local_cluster", "run_dask", "GRACE_S", "WORKER_CONFIG", "WORKER_ENV"]

#: Environment of the embedded cluster's workers: one core each, so the patch
#: experts' responses are not split over threads (``NUMBA_NUM_THREADS``) and
#: BLAS/OpenMP stay single-threaded (Dask's defaults for the latter).
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}

#: Seconds the driver waits, once stopped, for running tasks to finish their frame.
GRACE_S = 15.0
#: Seconds between a worker's exchanges with the driver (stop request, frames done).
LINK_S = 1.0


def _names(channel: str):
    return f"pyclnf-stop-{channel}", f"pyclnf-frames-{channel}"


class WorkerLink:
    """A task's link to the driver, through the scheduler and throttled to
    one exchange per :data:`LINK_S`: called with no argument it is the stop
    poll of :func:`pyclnf.batch.job.process_file` (True once the driver set
    the batch's Event, or when the scheduler cannot be reached); called with
    a frame count it is the ``on_frame`` callback, sending the frames done
    since the last exchange to the batch's Queue.
    """

    def __init__(self, channel: str):
        stop_name, queue_name = _names(channel)
        self.event, self.queue = Event(stop_name), Queue(queue_name)
        self.stopped, self.unsent, self.last = False, 0, float("-inf")

    def __call__(self, frames_done=None) -> bool:
        if frames_done is not None:
            self.unsent += 1
        now = time.monotonic()
        if now - self.last >= LINK_S:
            self.last = now
            self.flush()
            if not self.stopped:
                try:
                    self.stopped = self.event.is_set()
                except Exception:          # the scheduler went away: stop too
                    self.stopped = True
        return self.stopped

    def flush(self) -> None:
        """Send the frames not yet reported."""
        if self.unsent:
            try:
                self.queue.put(self.unsent)
            except Exception:
                pass
            self.unsent = 0


class IgnoreSigint(WorkerPlugin):
    """Workers of the embedded cluster ignore SIGINT: Ctrl-C in a terminal
    reaches the whole process group, and the driver alone decides (its tasks
    stop after their current frame, see :func:`run_dask`)."""

    def setup(self, worker) -> None:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:      # not the main thread of the worker process
            pass


#: Dask settings of the embedded cluster.  Dask's default
#: ``MALLOC_TRIM_THRESHOLD_=65536`` makes glibc map and unmap every large
#: temporary array; with it a worker tracked at about half the speed of the
#: same code in a plain process (bench_batch.py, 4 clips x 30 frames).  The
#: statistical profiler (a thread sampling the task's stack every 10 ms) is
#: off as well.
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                 "distributed.worker.profile.enabled": False}


def local_cluster(n_workers: int) -> LocalCluster:
    """The embedded cluster: ``n_workers`` single-threaded worker processes
    on 127.0.0.1 (environment :data:`WORKER_ENV`, settings
    :data:`WORKER_CONFIG`), quiet logs, the HTTP server on a free port."""
    with dask.config.set(WORKER_CONFIG):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR, env=dict(WORKER_ENV))


def run_dask(todo, out_dir, options, record, halt, progress, summary, scheduler, n) -> None:
    """Dask: the embedded local cluster (``n`` single-threaded worker
    processes) or an existing one (``scheduler``)."""
    client, cluster = _connect(scheduler, n)
    batch_id = uuid.uuid4().hex[:12]
    stop_name, queue_name = _names(batch_id)
    event = Event(stop_name, client=client)
    queue = Queue(queue_name, client=client)
    futures = _submit(client, todo, out_dir, options, batch_id)
    bar = progress_bar(len(todo), progress)
    frames = 0
    t0 = time.perf_counter()
    pending = set(futures)
    grace_end = None
    try:
        while pending:
            if grace_end is None and halt():
                summary.interrupted = True
                event.set()                    # running tasks stop after their frame
                grace_end = time.monotonic() + GRACE_S
            if grace_end is not None and time.monotonic() > grace_end:
                break
            done, pending = _wait_some(pending)
            frames += sum(queue.get(batch=True))
            bar.set_postfix(frames=frames, fps=f"{frames / (time.perf_counter() - t0):.1f}")
            for f in done:
                it, sig = futures[f]
                rec = _task_record(f, it)
                if rec["status"] == "interrupted":
                    continue
                record(it, sig, rec)
                bar.update(1)
        if pending:
            client.cancel(list(pending))
        summary.interrupted = summary.interrupted and len(summary.records) < len(todo)
    finally:
        bar.close()
        _disconnect(client, cluster, scheduler)


def _connect(scheduler, n: int):
    """``(client, cluster)``: the given client, a client of the scheduler at
    address ``scheduler``, or one of a new embedded cluster of ``n`` workers
    (``cluster`` is None unless embedded)."""
    if isinstance(scheduler, Client):
        return scheduler, None
    if scheduler:
        return Client(scheduler), None
    cluster = local_cluster(n)
    client = Client(cluster)
    client.register_plugin(IgnoreSigint(), name="pyclnf-ignore-sigint")
    return client, cluster


def _disconnect(client, cluster, scheduler) -> None:
    """Close what :func:`_connect` opened (never a client the caller gave)."""
    if cluster is not None:
        client.close()
        cluster.close()
    elif not isinstance(scheduler, Client):
        client.close()


def _submit(client, todo, out_dir, options, batch_id: str) -> dict:
    """Submit one task per ``(item, signature)`` of ``todo``; returns future -> (item, signature)."""
    futures = {}
    for k, (it, sig) in enumerate(todo):
        f = client.submit(run_task, it.source, it.rel, str(out_dir), options, batch_id,
                          key=f"pyclnf-batch-{batch_id}-{k}", pure=False)
        futures[f] = (it, sig)
    return futures


def _wait_some(pending):
    """``(done, pending)`` after waiting up to 0.5 s for a future to finish."""
    try:
        return wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
    except Exception as exc:           # TimeoutError (its class varies with versions)
        if "Timeout" not in type(exc).__name__:
            raise
        return (), pending


def _task_record(f, it) -> dict:
    """The manifest record a finished future returned, or a "failed" record
    for input ``it`` when its task raised or its worker died."""
    try:
        return f.result()
    except Exception as exc:
        what = ("a worker died while processing it" if type(exc).__name__ == "KilledWorker"
                else "the task failed")
        return {"input": it.source, "rel": it.rel, "worker": None, "output": f"{it.rel}.csv",
                "status": "failed", "frames": 0, "frames_ok": 0, "declared_frames": None,
                "seconds": 0.0, "error": f"{what}: {type(exc).__name__}: {exc}",
                "outputs": [], "csv_bytes": None}
