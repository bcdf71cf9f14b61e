"""Recipes by name: the shipped ``configs/`` tree, from a checkout or from the installed wheel.

A recipe's name is its path under ``configs/`` without ``.yaml`` (``cifar100/kd/res32x4_res8x4``,
``studies/kl_family``). The wheel carries the tree as ``gkl/recipes/`` (pyproject.toml), so
``gkl train cifar100/kd/res32x4_res8x4`` works from any directory; a local file given by its path
always wins over a recipe of the same name. Files whose name starts with ``_`` are shared
``base:`` files, not recipes of their own; a study (``gkl sweep``) is a YAML mapping with
``settings`` and no ``kind``. The command ``gkl recipes list | show | copy`` is :mod:`gkl.commands.recipes`.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from gkl.utils.errors import ConfigError, InputError

__all__ = ["recipes_root", "resolve_recipe", "list_recipes", "recipe_name", "is_study", "copy_recipe", "suggest"]

SUFFIX = ".yaml"
#: a prefix some users type out of habit (the checkout's directory name): ``configs/cifar100/...``
CHECKOUT_DIR = "configs"


def recipes_root() -> Path:
    """The directory of the recipes: ``gkl/recipes/`` of an installed wheel, else the checkout's ``configs/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "recipes", here.parents[1] / CHECKOUT_DIR):
        if candidate.is_dir():
            return candidate
    raise InputError(
        f"no recipes found: neither {here / 'recipes'} (installed package) nor "
        f"{here.parents[1] / CHECKOUT_DIR} (checkout) exists; reinstall gkl"
    )


def recipe_name(path: Path, root: Path | None = None) -> str:
    """The name of the recipe file ``path`` (its path under the recipes root, without ``.yaml``)."""
    root = recipes_root() if root is None else root
    return path.resolve().relative_to(root.resolve()).with_suffix("").as_posix()


def list_recipes(prefix: str = "", *, include_bases: bool = False) -> list[str]:
    """Sorted recipe names starting with ``prefix``; ``_*.yaml`` base files only with ``include_bases``."""
    root = recipes_root()
    names = (recipe_name(p, root) for p in root.rglob(f"*{SUFFIX}") if include_bases or not p.name.startswith("_"))
    return sorted(n for n in names if n.startswith(_strip(prefix)))


def _strip(name: str) -> str:
    """``configs/a/b.yaml`` and ``a/b.yaml`` name the recipe ``a/b``."""
    name = name.replace("\\", "/")
    if name.startswith(f"{CHECKOUT_DIR}/"):
        name = name[len(CHECKOUT_DIR) + 1 :]
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name


def suggest(name: str, known: list[str]) -> str:
    """``; did you mean a, b?``: recipes with the same file name, else close spellings of the name or file name."""
    stem = name.rsplit("/", 1)[-1]
    close = [k for k in known if k.rsplit("/", 1)[-1] == stem][:5]
    close = close or difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if not close:
        stems = difflib.get_close_matches(stem, sorted({k.rsplit("/", 1)[-1] for k in known}), n=3, cutoff=0.75)
        close = [k for k in known if k.rsplit("/", 1)[-1] in stems][:5]
    return f"; did you mean {', '.join(close)}?" if close else ""


def resolve_recipe(name_or_path: str | Path, *, under: str | None = None) -> Path:
    """The file of a local path or of a recipe name; an existing local file wins.

    ``under`` is a directory of recipes also tried (``gkl sweep kl_family`` finds ``studies/kl_family``).
    An unknown name is a :class:`ConfigError` (an :class:`InputError`, as for any missing config file)
    that suggests close names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = _strip(str(name_or_path))
    root = recipes_root()
    for candidate in (name, f"{under}/{name}" if under else None):
        if candidate and not Path(candidate).is_absolute() and ".." not in Path(candidate).parts:
            found = root / f"{candidate}{SUFFIX}"
            if found.is_file():
                return found
    hint = suggest(name, list_recipes()) or "; `gkl recipes list` lists the recipes"
    raise ConfigError(f"not found: {name_or_path} is neither a file nor a recipe name{hint}")


def read_recipe(path: Path) -> Any:
    """The parsed YAML of a recipe file (a recipe is ours: bad YAML here is a bug, not input)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def is_study(data: Any) -> bool:
    """A study file (``gkl sweep``) is a mapping with ``settings`` and without ``kind``."""
    return isinstance(data, dict) and "settings" in data and "kind" not in data


def _absolute(ref: str, where: Path) -> str:
    return str((where.parent / ref).resolve())


def _leading_comments(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def copyable_text(path: Path) -> str:
    """The text of a recipe with its relative references (``base:``; a study's ``config:``) made absolute.

    A config's single-line ``base:`` is rewritten in place, so its comments stay; a study is
    written back from its data under its leading comment block.
    """
    text = path.read_text(encoding="utf-8")
    data = read_recipe(path)
    if is_study(data):
        if "config" in data:
            data["config"] = _absolute(str(data["config"]), path)
        for setting in (data.get("settings") or {}).values():
            if isinstance(setting, dict) and "config" in setting:
                setting["config"] = _absolute(str(setting["config"]), path)
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
        return "\n".join([*_leading_comments(text), body])
    base = data.get("base") if isinstance(data, dict) else None
    if base is None:
        return text
    bases = [base] if isinstance(base, str) else list(base)
    new = (
        json.dumps(_absolute(bases[0], path))
        if isinstance(base, str)
        else json.dumps([_absolute(b, path) for b in bases])
    )
    text, count = re.subn(r"^base:[ \t]*\S[^\n]*$", f"base: {new}", text, count=1, flags=re.MULTILINE)
    if count == 1 and yaml.safe_load(text).get("base") == json.loads(new):
        return text
    data["base"] = json.loads(new)  # a block-style list: write the data back (comments are lost)
    return "\n".join(
        [
            *_leading_comments(path.read_text(encoding="utf-8")),
            yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120),
        ]
    )


def copy_recipe(name: str, dest: str | Path | None = None) -> Path:
    """Copy a recipe to ``dest`` (default ``./<file name>``, into it if a directory); never overwrites."""
    source = resolve_recipe(name)
    target = Path(dest) if dest is not None else Path(source.name)
    if target.is_dir():
        target = target / source.name
    text = copyable_text(source)
    try:
        with target.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise InputError(f"{target} already exists; gkl recipes copy never overwrites (choose another DEST)") from None
    except FileNotFoundError:
        raise InputError(f"{target}: the directory {target.parent} does not exist") from None
    return target
