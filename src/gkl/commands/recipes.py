"""``gkl recipes list | show | copy``: the shipped recipes by name (the lookup is :mod:`gkl.recipes`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

from gkl.recipes import SUFFIX, copy_recipe, is_study, list_recipes, read_recipe, recipes_root, resolve_recipe, suggest
from gkl.utils.errors import InputError


def kind_of(path: Path) -> str:
    """``study``, or the run kind of a config (its own ``kind:`` or one of its bases')."""
    from gkl.config_schema import load_yaml

    data = read_recipe(path)
    return "study" if is_study(data) else str(load_yaml(path).get("kind", "?"))


def _resolved_text(path: Path) -> str:
    """A config validated with its bases merged (as ``--print-config`` prints it); a study's run commands."""
    if is_study(read_recipe(path)):
        from gkl.study.study_file import load_study

        study = load_study(path)
        return "\n".join(shlex.join(["gkl", *run.cli_args()]) for run in study.runs) + "\n"
    from gkl.config import load_config, to_dict

    return yaml.safe_dump(to_dict(load_config(path)), sort_keys=False)


def show_recipes(names: list[str], *, resolved: bool = False) -> str:
    """The text of each recipe (or its resolved config); several are separated by ``---`` and headed by their name."""
    parts = []
    for name in names:
        path = resolve_recipe(name)
        text = _resolved_text(path) if resolved else path.read_text(encoding="utf-8")
        parts.append(text if len(names) == 1 else f"# {name} ({path})\n{text}")
    return "---\n".join(parts)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``gkl recipes list | show | copy``."""
    p = sub.add_parser(
        "recipes",
        help="list, show or copy the shipped recipes (configs/) by name",
        description="The recipes shipped with gkl, by name (their path under configs/ without "
        ".yaml): gkl train NAME, gkl sweep studies/NAME. A local file path wins.",
    )
    actions = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    ls = actions.add_parser(
        "list",
        help="recipe names (and kinds) starting with PREFIX",
        description="Print every shipped recipe whose name starts with PREFIX, with its kind of run (or 'study').",
    )
    ls.add_argument(
        "prefix", nargs="?", default="", help="e.g. cifar100/kd/ (a plain string prefix; default: every recipe)"
    )
    ls.add_argument("--bases", action="store_true", help="also list the shared _*.yaml base files")
    show = actions.add_parser(
        "show",
        help="print recipes (the YAML file, or with --resolved the validated config)",
        description="Print recipes by name: the YAML file as shipped, or with --resolved the validated config.",
    )
    show.add_argument("names", nargs="+", metavar="NAME", help="recipe names or YAML paths")
    show.add_argument(
        "--resolved",
        action="store_true",
        help="the config with base: merged and every default filled in, as --print-config prints "
        "it (for a study: the command of every run)",
    )
    cp = actions.add_parser(
        "copy",
        help="copy a recipe to edit it (never overwrites)",
        description="Copy a recipe file to edit it, its relative base: (and a study's config:) paths made absolute "
        "so the copy still finds them; never overwrites.",
    )
    cp.add_argument("name", metavar="NAME", help="recipe name (gkl recipes list)")
    cp.add_argument(
        "dest",
        nargs="?",
        default=None,
        metavar="DEST",
        help="new file, or an existing directory (default: ./<recipe file name>)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """``gkl recipes``: list, show or copy; bad names are :class:`InputError` (exit 2)."""
    if args.action == "list":
        names = list_recipes(args.prefix, include_bases=args.bases)
        if not names:
            raise InputError(f"no recipe name starts with {args.prefix!r}{suggest(args.prefix, list_recipes())}")
        root = recipes_root()
        width = max(len(n) for n in names)
        for name in names:
            kind = "base" if name.rsplit("/", 1)[-1].startswith("_") else kind_of(root / f"{name}{SUFFIX}")
            print(f"{name:<{width}}  {kind}")
        return 0
    if args.action == "show":
        sys.stdout.write(show_recipes(args.names, resolved=args.resolved))
        return 0
    if args.action == "copy":
        target = copy_recipe(args.name, args.dest)
        print(f"copied {args.name} to {target}")
        return 0
    raise AssertionError(f"unhandled recipes action {args.action!r}")
