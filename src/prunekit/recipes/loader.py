"""Load a recipe file in either format (native or Intel Distiller), detected or forced.

Example:
    >>> recipe = load_recipe("examples/recipes/distiller/resnet18_agp_fine.yaml")
    >>> recipe.source.format
    'distiller'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prunekit.errors import ConfigError
from prunekit.recipes._source import read_yaml
from prunekit.recipes.distiller import looks_like_distiller, not_a_schedule, validate_distiller
from prunekit.recipes.native import Recipe, validate_native

Format = Literal["auto", "native", "distiller"]
FORMATS: tuple[str, ...] = ("auto", "native", "distiller")


def load_recipe(path: str | Path, format: str = "auto", *, skip_quantizers: bool = False) -> Recipe:
    """Load a recipe.

    Args:
        path: a ``.yaml`` (or ``.json`` native) recipe file.
        format: ``native``, ``distiller`` or ``auto`` (Distiller when the file has
            ``lr_schedulers``/``extensions``/``quantizers`` sections, ``class:`` entries or
            ``instance_name`` policies; native otherwise).
        skip_quantizers: run the pruning part of a Distiller schedule that also quantizes (the
            quantizers are dropped, with a note in ``recipe.notes``) instead of refusing it.

    Returns:
        The native :class:`Recipe` (``recipe.source.format`` says which format it came from).

    Raises:
        ConfigError: unknown ``format`` or any problem in the file (``file:line: …``).
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown recipe format {format!r}; use one of {', '.join(FORMATS)}")
    data, source = read_yaml(path)  # JSON is YAML, so .json recipes load the same way
    if format == "distiller" or (format == "auto" and looks_like_distiller(data)):
        return validate_distiller(data, source, skip_quantizers=skip_quantizers)
    if format == "auto" and isinstance(data, dict) and data and not set(data) & _RECIPE_KEYS:
        raise not_a_schedule(data, source.filename)
    return validate_native(data, source)


#: every top-level key of either format (a file with none of them is neither)
_RECIPE_KEYS = {
    *Recipe.model_fields,
    "pruners",
    "regularizers",
    "lr_schedulers",
    "extensions",
    "quantizers",
    "policies",
}
