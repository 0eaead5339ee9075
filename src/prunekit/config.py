"""The one base of prunekit's typed configurations.

Every settings object (:class:`~prunekit.train.TrainConfig`,
:class:`~prunekit.pipeline.PruneConfig`, :class:`~prunekit.methods.slimming.SlimmingConfig`,
the sections of a native recipe) derives from :class:`Config`, so they share one set of rules:

* unknown keys are errors naming the key and listing the known ones;
* ``None`` for any key means "use the default" (a YAML ``null``, or a CLI flag left unset);
* no silent type coercion (``"0.1"`` is not a float; an int is accepted where a float is asked);
* a bad value raises one :class:`~prunekit.errors.ConfigError` naming the field.

Example:
    >>> class Demo(Config):
    ...     what: ClassVar[str] = "demo option"
    ...     lr: float = 0.1
    >>> Demo.from_dict({"lr": None}).lr
    0.1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from prunekit.errors import ConfigError


class Config(BaseModel):
    """Base of typed settings: strict, unknown keys forbidden, ``None`` means default.

    Subclasses set :attr:`what` (e.g. ``"training option"``) for error messages.
    """

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)
    #: what one field is called in error messages
    what: ClassVar[str] = "option"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe(exc, type(self))) from None

    # Nested inside another model (a recipe's ``training:``), pydantic validates this section
    # itself and reports the error at its path; marking this __init__ as pydantic's own keeps
    # it from being called there (it only converts the error type for direct construction).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @model_validator(mode="before")
    @classmethod
    def _none_means_default(cls, data: Any) -> Any:
        return drop_nones(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Any:
        """Build from a plain mapping (a YAML section, saved JSON); ``None`` → all defaults."""
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"{cls.what}s must be a mapping, got {type(data).__name__}")
        return cls(**dict(data or {}))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able mapping of every field."""
        return self.model_dump(mode="json")

    def given(self) -> set[str]:
        """Names of the fields set explicitly (not left to their default)."""
        return set(self.model_fields_set)


def drop_nones(data: Any) -> Any:
    """``data`` without its ``None`` values when it is a mapping (else unchanged).

    Run before validation, it lets pydantic fill in the declared default of a field given as
    ``None`` — the rule of every prunekit settings object, also those not derived from
    :class:`Config`.

    Example:
        >>> drop_nones({"lr": None, "epochs": 3})
        {'epochs': 3}
    """
    if isinstance(data, Mapping):
        return {k: v for k, v in data.items() if v is not None}
    return data


def describe(exc: ValidationError, cls: type[Config]) -> str:
    """One line naming every bad field of ``cls`` in ``exc``, with the fix."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            known = ", ".join(cls.model_fields)
            parts.append(f"unknown {cls.what} {loc!r}; known: {known}")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{cls.what} {loc!r}: {msg} (got {err.get('input')!r})")
    return "; ".join(parts)
