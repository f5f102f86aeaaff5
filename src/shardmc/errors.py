"""Exceptions raised for user mistakes (bad data, config or model) and for failed runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ShardMCInputError(ValueError):
    """Invalid data, configuration or model, detected before any sampling starts.

    The message names the field, what was expected and what was found.
    """


#: A remedy for a failed run: (fit() keyword, value, what it does).
Remedy = tuple[str, Any, str]


class ShardFailedError(RuntimeError):
    """A shard could not be sampled (after retries) and the run policy is to fail.

    ``remedies``: options worth trying, named as :func:`shardmc.fit` keywords; ``str()``
    names them so, and :meth:`hint` names them for the command line (``run.<key>``).
    """

    def __init__(self, message: str, remedies: Sequence[Remedy] = ()) -> None:
        self.message = message
        self.remedies = tuple(remedies)
        super().__init__(message + self.hint("python"))

    def hint(self, interface: str = "python") -> str:
        """The remedies in the words of ``interface``: "python" (fit keywords) or "cli"
        (``--set run.<key>=<value>`` and the config key)."""
        if not self.remedies:
            return ""
        if interface == "cli":
            parts = [f"--set run.{key}={_yaml(value)} {what} (config: run: {key}: "
                     f"{_yaml(value)})" for key, value, what in self.remedies]
        else:
            parts = [f"fit(..., {key}={value!r}) {what}" for key, value, what in self.remedies]
        return "\n(" + "; ".join(parts) + ")"


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
