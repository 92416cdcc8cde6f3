"""MkDocs hook: every `depmesh ...` command a page names must exist in the command line as it is now.

A stale command (a group or subcommand renamed or removed, an option that no longer exists) is logged as a
warning, and `mkdocs build --strict` turns warnings into a failed build.
"""

from __future__ import annotations

import logging
import re
import shlex

import click

log = logging.getLogger("mkdocs.plugins.depmesh")
# where commands are written: code spans, and the lines of bash or console code blocks
SPAN = re.compile(r"`([^`\n]+)`")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
# a command: `depmesh release promote 3 --reason x`, also after `uv run` and at the start of a shell line
COMMAND = re.compile(r"(?:^|\$ |&& |; )(?:DEPMESH_\w+=\S+ )*(?:python3 -m )?(?:uv run (?:--locked )?)?depmesh ([^#|;&]*)")


def _commands(text: str) -> list[str]:
    found = []
    for block in BLOCK.finditer(text):
        shell = block.group(1) in ("bash", "sh", "console")
        for line in block.group(2).splitlines():
            if shell or line.startswith("$ "):  # elsewhere only a prompt's line is a command (the rest is output)
                found += [m.group(1) for m in COMMAND.finditer(line.strip())]
    prose = BLOCK.sub("", text)
    for span in SPAN.finditer(prose):
        found += [m.group(1) for m in COMMAND.finditer(span.group(1).strip())]
    return found


def _words(text: str) -> list[str]:
    text = text.replace("\\", " ")  # a table cell's escaped pipe ends the command before it
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def stale(text: str) -> list[str]:
    """Why each command named in ``text`` does not exist (empty: all do)."""
    from depmesh.cli import main

    problems = []
    for written in _commands(text):
        words = [w for w in _words(written) if w]
        command: click.Command = main
        path = ["depmesh"]
        for word in words:
            if word.startswith("-"):
                name = word.split("=", 1)[0]
                known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
                if name not in known and not re.fullmatch(r"-\d.*", name) and "..." not in word:
                    problems.append(f"`{' '.join(path)} {name}`: no such option")
                continue
            if isinstance(command, click.Group):
                sub = command.commands.get(word)
                if sub is None:
                    if word.isupper() or "\\" in word or "..." in word or word.startswith(("[", "<")):
                        break  # a placeholder (GROUP, ...) where a subcommand goes
                    problems.append(f"`{' '.join(path)} {word}`: no such command")
                    break
                command, path = sub, [*path, word]
            # arguments of a command are not checked: they are values
    return problems


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 - MkDocs' hook signature
    for problem in stale(markdown):
        log.warning("%s names a stale command: %s", page.file.src_path, problem)
    return markdown
