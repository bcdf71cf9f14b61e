"""Tagged unions of settings classes: one class per method, chosen by a tag key.

A union node is a settings class that defines ``variant_key`` (e.g. ``"method"``) and
``variants()`` (tag value -> class) in its own body. A chosen class may itself be a node
with a second tag (SSL: ``algorithm``, then ``consistency``); the classes at the end of
the chain are the leaves that get built. A node may also define
``generic_variant() -> class``: the class for any other identifier-like tag value
(a logit loss registered in :mod:`gkl.losses` by name; the name is checked against the
registry when the objective is built, since the settings layer imports no loss code).
``gkl.config_schema`` picks the leaf from the tags before checking the other keys, so a
key the chosen method does not use is an error naming it, and the saved config holds
exactly the chosen class's fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeGuard

from gkl.utils.errors import ConfigError


class UnionNode(Protocol):
    """What a union node class defines (``generic_variant`` is optional, checked with hasattr)."""

    variant_key: ClassVar[str]

    @classmethod
    def variants(cls) -> Mapping[str, type]: ...


def is_union(cls: type) -> TypeGuard[type[UnionNode]]:
    """Whether ``cls`` is a union node (defines its own ``variant_key`` and ``variants``)."""
    return "variant_key" in vars(cls) and "variants" in vars(cls)


def _generic(node: type[UnionNode]) -> type | None:
    """The node's ``generic_variant()`` class, or None when it has none."""
    make = getattr(node, "generic_variant", None)
    return None if make is None else make()


def _children(node: type[UnionNode]) -> list[type]:
    table = dict(node.variants())
    generic = _generic(node)
    return list(table.values()) + ([generic] if generic is not None else [])


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _subtree_fields(cls: type) -> set[str]:
    if is_union(cls):
        return set().union(*(_subtree_fields(child) for child in _children(cls) if child is not cls))
    return _field_names(cls)


def _renamed(node: type[UnionNode]) -> dict[str, str]:
    return vars(node).get("renamed_tags", {})


def _choose(node: type[UnionNode], data: dict[str, Any], owner: str) -> tuple[type, str, Any] | None:
    """The child of ``node`` named by its tag in ``data`` (None when the tag is not valid).

    A tag value the node lists in ``renamed_tags`` (old name -> new name) is a ConfigError naming the new one.
    """
    tag = node.variant_key
    table = node.variants()
    choice = data.get(tag, getattr(node, tag))
    if isinstance(choice, str) and choice in _renamed(node):
        raise ConfigError(f"{owner}.{tag}: {choice!r} is now called {_renamed(node)[choice]!r}")
    if isinstance(choice, str) and choice in table:
        return table[choice], tag, choice
    generic = _generic(node)
    if generic is not None and isinstance(choice, str) and choice.isidentifier():
        return generic, tag, choice
    return None


def _tag_error(node: type[UnionNode], data: dict[str, Any], owner: str) -> ConfigError:
    tag = node.variant_key
    choice = data.get(tag, getattr(node, tag))
    extra = " or the name of a registered logit loss" if hasattr(node, "generic_variant") else ""
    return ConfigError(f"{owner}.{tag}: expected one of {list(node.variants())}{extra}, got {choice!r}")


def select_variant(base: type, data: dict[str, Any], owner: str) -> type:
    """The leaf class of union ``base`` named by the tags in ``data`` (or the nodes' defaults).

    A key that belongs to another variant is a ConfigError naming the deepest tag that excludes it.
    """
    node = base
    levels: list[tuple[type[UnionNode], type, str, Any]] = []
    while is_union(node):
        picked = _choose(node, data, owner)
        if picked is None:
            raise _tag_error(node, data, owner)
        child, tag, choice = picked
        levels.append((node, child, tag, choice))
        if child is node:
            break
        node = child
    own = _field_names(node)
    for key in data:
        if key in own:
            continue
        excluded_by = None
        for level_node, child, tag, choice in levels:
            siblings = [c for c in _children(level_node) if c is not child]
            if any(key in _subtree_fields(s) for s in siblings):
                excluded_by = (tag, choice)
        if excluded_by is not None:
            tag, choice = excluded_by
            raise ConfigError(
                f"{owner}.{key}: not a setting of {owner}.{tag} {choice!r} (its settings: {', '.join(sorted(own))})"
            )
    return node


def build_variant(base: type[UnionNode], owner: str, tag_value: str, **kwargs: Any) -> Any:
    """Construct the variant named ``tag_value`` from keyword settings (errors name the key)."""
    data = {base.variant_key: tag_value, **kwargs}
    return build_leaf(base, owner, data)


def build_leaf(base: type, owner: str, data: dict[str, Any]) -> Any:
    """Construct the leaf of union ``base`` that ``data``'s tags name (errors name the key)."""
    chosen = select_variant(base, data, owner)
    names = {f.name for f in dataclasses.fields(chosen) if f.init}
    for key in data:
        if key not in names:
            raise ConfigError(f"{owner}.{key}: unknown setting (valid: {', '.join(sorted(names))})")
    return chosen(**data)


class UnionConstructor:
    """Mixin of a union node: calling the node builds the leaf its tags name.

    ``SegmentationSettings(method="kd", kd_term="gkl", alpha=2.0)`` returns a
    :class:`~gkl.settings.segmentation.SegKDGKLSettings`; a key of another variant is a
    ConfigError naming it. The node sets ``section`` (the config section, for messages).
    """

    section: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        section = cls.section
        leaf = select_variant(cls, kwargs, section) if is_union(cls) and not args else cls
        return super().__new__(leaf)


def drop_unused_keys(base: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the keys of other variants that the chosen variant does not use.

    For configs recorded before settings were split per method, which listed every
    method's settings although only the chosen method's were used (and, for SSL, left
    the unused ones null). A renamed tag value (``renamed_tags``) is replaced by its new name.
    """
    node, data = base, dict(data)
    while is_union(node):
        old = data.get(node.variant_key)
        if isinstance(old, str) and old in _renamed(node):
            data[node.variant_key] = _renamed(node)[old]
        picked = _choose(node, data, "")
        if picked is None:
            return dict(data)
        child = picked[0]
        if child is node:
            break
        node = child
    own = _field_names(node)
    others = _subtree_fields(base)
    return {k: v for k, v in data.items() if k in own or k not in others}
