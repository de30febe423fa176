"""docs/usage.md against the program it documents: every option of `sparsert --help` and of
each subcommand's `--help` is in the doc's tables with the default the parser has (and what
`auto` means, where the help says), no table lists an option the program lacks, and the
`inspect` example is the output the bundled matrix gives."""
import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sparsert_triton.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "usage.md").read_text()

#: The doc sections (level-3 headings, matched by prefix) that document each command's options
SECTIONS = {
    "inspect": ("Matrix files", "`sparsert inspect"),
    "emit": ("Matrix files", "`sparsert emit", "Schedule options"),
    "bench": ("Matrix files", "`sparsert bench", "Schedule options"),
    "tune": ("Matrix files", "`sparsert tune"),
    "cache": ("`sparsert cache",),
}


def sections() -> dict:
    """Level-3 heading -> its text."""
    parts = re.split(r"^### ", DOC, flags=re.M)[1:]
    return {p.split("\n", 1)[0]: p for p in parts}


def documented(command: str) -> dict:
    """Option -> default cell, from the option tables of the command's sections."""
    out = {}
    for title, text in sections().items():
        if not any(title.startswith(prefix) for prefix in SECTIONS[command]):
            continue
        for line in text.splitlines():
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if len(cells) == 3 and cells[0].startswith("`-"):
                for flag in re.findall(r"`(--?[a-z][\w-]*)", cells[0]):
                    out[flag] = (cells[1], cells[2])
    return out


def subparsers() -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, dict(sub.choices)


def default_text(action) -> str:
    """The default as the doc writes it: off for a switch, '-' for none (or the default the
    help states, where the parser leaves it to the library), numbers as %g."""
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if action.default is None:
        m = re.search(r"\(default (\S+?)\)", action.help or "")
        return m.group(1) if m else "-"
    if isinstance(action.default, float):
        return f"{action.default:g}"
    return str(action.default)


def auto_clause(help_text: str):
    """'auto: ...' of a help text, up to its closing parenthesis or the next ';' outside
    parentheses; None if the help states none."""
    help_text = (help_text or "").replace("%%", "%")
    i = help_text.find("auto:")
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(help_text)):
        ch = help_text[j]
        depth += ch == "("
        if ch == ")":
            depth -= 1
        if depth < 0 or (depth == 0 and ch == ";"):
            return help_text[i:j]
    return help_text[i:]


def squash(s: str) -> str:
    return re.sub(r"\s+", " ", s.replace("`", "").replace("\\|", "|"))


def test_every_command_has_a_section():
    parser, commands = subparsers()
    assert set(commands) == set(SECTIONS)
    titles = list(sections())
    for name in commands:
        assert any(t.startswith(f"`sparsert {name}") for t in titles), name
    # the top-level help lists the same commands
    top = subprocess.run([sys.executable, "-m", "sparsert_triton", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60).stdout
    assert set(re.findall(r"^    (\w+) ", top, re.M)) == set(commands)


@pytest.mark.parametrize("command", sorted(SECTIONS))
def test_every_option_is_documented_with_its_default(command):
    _, commands = subparsers()
    p = commands[command]
    doc = documented(command)
    options = [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    for action in options:
        flag = max(action.option_strings, key=len)
        assert flag in doc, f"docs/usage.md: sparsert {command} {flag} is not documented"
        default, meaning = doc[flag]
        assert default == default_text(action), \
            f"docs/usage.md: sparsert {command} {flag} default {default!r}, the program has " \
            f"{default_text(action)!r}"
        clause = auto_clause(action.help)
        if clause:
            assert squash(clause) in squash(meaning), \
                f"docs/usage.md: sparsert {command} {flag} should say {clause!r}"
    # and nothing the program lacks (the shared tables: in some command)
    flags = {f for a in options for f in a.option_strings}
    own = next(t for t in sections() if t.startswith(f"`sparsert {command}"))
    for line in sections()[own].splitlines():
        if line.startswith("| `-"):
            for flag in re.findall(r"`(--?[a-z][\w-]*)", line.split("|")[1]):
                assert flag in flags, f"docs/usage.md documents sparsert {command} {flag}"
    for action in p._actions:       # positional choices (cache list|clear) are named
        if not action.option_strings and action.choices:
            assert all(f"`{c}`" in sections()[own] for c in action.choices)


def test_shared_tables_list_only_real_options():
    _, commands = subparsers()
    every = {f for p in commands.values() for a in p._actions for f in a.option_strings}
    for title in ("Matrix files", "Schedule options"):
        for line in sections()[title].splitlines():
            if line.startswith("| `-"):
                for flag in re.findall(r"`(--?[a-z][\w-]*)", line.split("|")[1]):
                    assert flag in every, f"docs/usage.md {title}: {flag} is no option"


def test_inspect_example_is_what_the_program_prints(capsys, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    block = re.search(r"```\n\$ sparsert inspect (.*?)\n(.*?)```", DOC, re.S)
    args, expected = block.group(1).split(), block.group(2).splitlines()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(ROOT / "data")
    assert main(["inspect", *args]) == 0
    got = capsys.readouterr().out.splitlines()
    for line in expected:
        if line.strip() == "...":
            continue
        if line.endswith(", ...)"):      # an abridged plan: the start of the printed one
            assert any(g.startswith(line[:-len("...)")]) for g in got), line
        else:
            assert line in got, line
