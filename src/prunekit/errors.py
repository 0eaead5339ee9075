"""Exception types. Every error a user can cause derives from :class:`PrunekitError`.

The CLI prints such errors as one line (no traceback); library users can catch the base class.
Messages name the offending thing and say how to fix it.
"""

from __future__ import annotations


class PrunekitError(Exception):
    """Base class of all errors caused by bad input (model, config, file, data)."""


class UnsupportedOpError(PrunekitError):
    """The tracer met an operation it has no handler for."""


class TraceError(PrunekitError):
    """The model does not run on the example inputs it was given to trace."""


class PlanError(PrunekitError):
    """A pruning plan is malformed or does not fit the model."""


class CheckpointError(PrunekitError):
    """A saved model or checkpoint is missing, corrupt or does not match."""


class ConfigError(PrunekitError):
    """A config, recipe or command-line value is invalid."""


class VerificationError(PrunekitError):
    """A pruned model does not compute what its soft mask computes (a prunekit bug)."""


class DataError(PrunekitError):
    """A dataset is missing or malformed."""


class PruneWarning(UserWarning):
    """A plan removed much less than asked (the reasons channels were kept are listed)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    r"""The first line of ``exc``'s message, at most ``limit`` characters (``""`` if it has none).

    Used where a foreign exception is re-raised as a one-line prunekit error: a traceback-sized
    message (torch's dispatcher errors run to dozens of lines) would drown the fix.

    Example:
        >>> first_line(RuntimeError("shapes differ\n  at conv1\n  ..."))
        'shapes differ'
    """
    return (str(exc).strip().splitlines() or [""])[0][:limit]
