"""Processing many inputs.

- :func:`process` (``pyclnf batch``): every core of this machine, or a
  dask.distributed cluster; outputs mirror the inputs' relative paths; a
  manifest ``batch.jsonl`` records every input and lets a rerun skip what is
  done (:mod:`pyclnf.batch.driver`, :mod:`pyclnf.batch.manifest`).
- :func:`discover`, :func:`shard`: inputs and their output names, disjoint
  stable parts (:mod:`pyclnf.batch.inputs`).
- :func:`process_file`: the per-file code path, shared with ``pyclnf run``
  (:mod:`pyclnf.batch.job`).

Dask is needed only for more than one worker: ``pip install 'pyclnf-accel[batch]'``.
"""

from .driver import BatchSummary, process, run_task
from .inputs import Item, discover, shard
from .job import FileOptions, FileResult, process_file

__all__ = ["BatchSummary", "FileOptions", "FileResult", "Item", "discover", "process", "process_file",
           "run_task", "shard"]
