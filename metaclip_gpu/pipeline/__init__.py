"""The curation pipeline, its stages in the order data flows: `read` -> `match` -> `count` ->
`balance` (`balance_per_image` for worldwide curation) -> `write`, run by one orchestrator,
`run.curate`, in process or on a dask cluster (`cluster`); the run directory's state in
`rundir`, `manifest`, `checksums` and `run_lock`."""
