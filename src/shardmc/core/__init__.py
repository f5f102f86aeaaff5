"""The CMC engine: shard the data, sample every shard's tempered posterior, combine.

``engine`` (``shardmc.fit``) drives the rest: ``sharding`` and ``tempering`` (the shard
target), ``sampling`` and ``nuts`` (per-shard NUTS), ``exclusion`` (failed shards),
``diagnostics`` and ``heterogeneity`` (per-shard and cross-shard statistics),
``posterior`` (the result) with ``diagnosis`` (its findings in words), ``refine`` (the
importance correction), ``params`` (latent-site layout), ``input_checks`` and
``progress``. Importing it has no side effects. Map of the package: docs/architecture.md.
"""
