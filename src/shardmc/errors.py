"""Exceptions raised for user mistakes (bad data, config or model) and for failed runs."""

from __future__ import annotations


class ShardMCInputError(ValueError):
    """Invalid data, configuration or model, detected before any sampling starts.

    The message names the field, what was expected and what was found.
    """


class ShardFailedError(RuntimeError):
    """A shard could not be sampled (after retries) and the run policy is to fail."""
