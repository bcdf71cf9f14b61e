"""Tagged unions of settings classes: one class per method, chosen by a tag key.

A base settings class sets ``variant_key`` (e.g. ``"method"``) and implements
``variants()`` (tag value -> class). ``gkl.config_schema`` picks the class from the
tag before checking the other keys, so a key the chosen method does not use is an
error naming it, and the saved config holds exactly the chosen class's fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gkl.utils.errors import ConfigError


def select_variant(base: type, data: dict[str, Any], owner: str) -> type:
    """The variant class of ``base`` named by ``data[base.variant_key]`` (or the base's default)."""
    tag = base.variant_key
    table = base.variants()
    choice = data.get(tag, getattr(base, tag))
    if not isinstance(choice, str) or choice not in table:
        raise ConfigError(f"{owner}.{tag}: expected one of {list(table)}, got {choice!r}")
    chosen = table[choice]
    own = {f.name for f in dataclasses.fields(chosen)}
    others = {f.name for cls in table.values() for f in dataclasses.fields(cls)}
    for key in data:
        if key not in own and key in others:
            raise ConfigError(
                f"{owner}.{key}: not a setting of {owner}.{tag} {choice!r} "
                f"(its settings: {', '.join(sorted(own))})"
            )
    return chosen


def build_variant(base: type, owner: str, tag_value: str, **kwargs: Any) -> Any:
    """Construct the variant named ``tag_value`` from keyword settings (errors name the key)."""
    data = {base.variant_key: tag_value, **kwargs}
    chosen = select_variant(base, data, owner)
    names = {f.name for f in dataclasses.fields(chosen) if f.init}
    for key in data:
        if key not in names:
            raise ConfigError(f"{owner}.{key}: unknown setting (valid: {', '.join(sorted(names))})")
    return chosen(**data)


def drop_unused_keys(base: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the keys of other variants that the chosen variant does not use.

    For configs recorded before settings were split per method, which listed every
    method's settings although only the chosen method's were used.
    """
    table = base.variants()
    choice = data.get(base.variant_key, getattr(base, base.variant_key))
    if choice not in table:
        return dict(data)
    own = {f.name for f in dataclasses.fields(table[choice])}
    others = {f.name for cls in table.values() for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in own or k not in others}
