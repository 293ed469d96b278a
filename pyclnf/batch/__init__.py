"""Processing many inputs: the per-file code path (:mod:`pyclnf.batch.job`,
shared with ``pyclnf run``) and input discovery, output naming and sharding
(:mod:`pyclnf.batch.inputs`)."""
