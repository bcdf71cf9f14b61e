"""Every ``gkl ...`` command in the code blocks of README.md and docs/*.md still parses, and runs where it
can without data: a run verb with a shipped config prints its config (``--print-config``), a command with
``--dry-run`` runs it, ``gkl recipes list|show`` runs, anything else shows ``--help``. A renamed verb,
option, recipe or config key fails here (in-process, no subprocess)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gkl.cli import build_parser, main, parse_args, run_commands

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
#: shell operators that end one command of a line
OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&", "2>&1"}
#: fenced blocks in these languages hold code, not shell commands
CODE_LANGUAGES = {"python", "py", "python3", "yaml", "yml", "json", "toml", "text", "txt", "ini"}
#: shell syntax a doc uses for a family of commands (a loop variable, a glob, a brace list), or a name the
#: reader fills in (RUN_DIR, STUDY, <config>): the command is parsed and its --help shown, not run
PLACEHOLDER = re.compile(r"[$*?{<>]|^[A-Z][A-Z0-9_]+$")
#: "the rest of the line as above" in a doc's command
ELISIONS = {"...", "\u2026"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def shell_blocks(text: str) -> list[list[str]]:
    """The lines of every fenced block that is not in a programming or data language."""
    blocks, lines, language = [], None, ""
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence:
            if lines is None:
                lines, language = [], fence.group(2).lower()
            else:
                if language not in CODE_LANGUAGES:
                    blocks.append(lines)
                lines = None
            continue
        if lines is not None:
            lines.append(line)
    return blocks


def gkl_commands(text: str) -> list[list[str]]:
    """The arguments of every ``gkl ...`` command (also ``.venv/bin/gkl``, after ``VAR=value`` or an operator)."""
    found = []
    for block in shell_blocks(text):
        logical, pending = [], ""
        for line in block:  # join backslash continuations
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            logical.append(pending + line)
            pending = ""
        for line in logical:
            text_line = line.strip().removeprefix("$ ")
            try:
                tokens = shlex.split(text_line, comments=True)
            except ValueError:
                continue
            segment: list[str] = []
            for token in [*tokens, ";"]:
                if token not in OPERATORS:
                    segment.append(token)
                    continue
                start = 0
                while start < len(segment) and ASSIGNMENT.match(segment[start]):
                    start += 1
                if start < len(segment) and (segment[start] == "gkl" or segment[start].endswith("/gkl")):
                    found.append(segment[start + 1 :])
                segment = []
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    commands = {}
    for path in DOCS:
        for argv in gkl_commands(path.read_text(encoding="utf-8")):
            commands.setdefault(shlex.join(argv), (path.name, argv))
    return sorted(commands.values(), key=lambda item: (item[0], item[1]))


COMMANDS = documented_commands()


def test_the_docs_hold_gkl_commands_and_the_parser_finds_them() -> None:
    sample = "```bash\nOMP_NUM_THREADS=1 gkl sweep s.yaml --jobs 2 | tail  # note\n"
    sample += ".venv/bin/gkl demo \\\n  --quick\n```\n"
    sample += "```python\ngkl = GKLLoss()\n```\n"
    assert gkl_commands(sample) == [["sweep", "s.yaml", "--jobs", "2"], ["demo", "--quick"]]
    assert [bool(PLACEHOLDER.search(t)) for t in ("RUN_DIR", "<config>", "runs/x", "a=$s", "data.root=/D")] == [
        True,
        True,
        False,
        True,
        False,
    ]
    verbs = {argv[0] for _, argv in COMMANDS if argv}
    assert {"distill", "evaluate", "recipes", "sweep"} <= verbs, verbs


def _verb_path(argv: list[str]) -> list[str]:
    """The command and, for a command with sub-commands (gkl recipes list), its sub-command."""
    _, subs = build_parser()
    parser = subs.get(argv[0]) if argv else None
    if parser is not None and parser._subparsers is not None and len(argv) > 1:
        return argv[:2]
    return argv[:1]


def _has_option(argv: list[str], option: str) -> bool:
    _, subs = build_parser()
    parser = subs.get(argv[0])
    return parser is not None and option in parser._option_string_actions


@pytest.mark.parametrize(("doc", "argv"), COMMANDS, ids=[f"{doc}: gkl {shlex.join(a)}" for doc, a in COMMANDS])
def test_documented_command_parses_and_runs_without_data(
    doc: str, argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert argv, f"{doc}: a bare 'gkl' command"
    argv = [token for token in argv if token not in ELISIONS]
    try:
        parsed = parse_args(argv)  # every verb and option of the documented line exists
    except SystemExit as stop:
        raise AssertionError(f"{doc}: gkl {shlex.join(argv)}: {capsys.readouterr().err.strip()}") from stop
    monkeypatch.chdir(ROOT)  # relative config paths are the checkout's, as the docs assume
    placeholder = any(PLACEHOLDER.search(token) for token in argv)
    verb = argv[0]
    if verb in run_commands() and not placeholder:
        from gkl.recipes import resolve_recipe

        resolve_recipe(parsed.config)  # a renamed recipe fails here
        status = main([*argv, "--print-config"])
    elif _has_option(argv, "--dry-run") and not placeholder:
        status = main([*argv, "--dry-run"] if "--dry-run" not in argv else argv)
    elif _verb_path(argv) in (["recipes", "list"], ["recipes", "show"]):
        status = main(argv)
    else:
        with pytest.raises(SystemExit) as shown:
            main([*_verb_path(argv), "--help"])
        status = shown.value.code
    captured = capsys.readouterr()
    assert status == 0, f"{doc}: gkl {shlex.join(argv)}: {captured.err.strip()[-2000:]}"
