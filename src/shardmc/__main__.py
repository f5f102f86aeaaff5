"""``python -m shardmc``: the ``shardmc`` command line (:mod:`shardmc.workflow.cli`)."""

from shardmc.workflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
