"""Deprecated: renamed :mod:`shardmc.accuracy` (accuracy of a posterior against reference
draws). This alias keeps ``shardmc.validate.compare`` and its siblings working for one
release and warns on import."""

import warnings
from typing import Any

from shardmc import accuracy as _accuracy

warnings.warn("shardmc.validate is renamed shardmc.accuracy; the old name goes in the next "
              "release", DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    return getattr(_accuracy, name)
