"""The documentation site builds strictly: every link resolves, every command it names exists, the command line
reference is generated from the commands (issue #26)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = Path(sys.executable).parent / "mkdocs"


def build(docs: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(MKDOCS), "build", "--strict", "-f", str(docs / "mkdocs.yml"), "-d", str(site)],
                          capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1",
                                                                            "PATH": str(MKDOCS.parent)})


def test_the_site_builds_strictly_with_the_generated_command_reference(tmp_path):
    from depmesh.cli import main

    done = build(ROOT / "docs", tmp_path / "site")
    assert done.returncode == 0, done.stderr
    reference = (tmp_path / "site" / "cli" / "index.html").read_text()
    for group in main.commands:  # every command of the command line has its section, generated
        assert f"depmesh {group}" in reference, group
    assert "--catalog" in reference and "--rescore" in reference
    architecture = (tmp_path / "site" / "architecture" / "index.html").read_text()
    assert "L3 the registry" in architecture and 'class="mermaid"' in architecture


@pytest.mark.parametrize("planted, named", [
    ("See [the missing page](guides/nowhere.md).", "guides/nowhere.md"),
    ("Promote with `depmesh release promot 3 --reason go`.", "depmesh release promot"),
    ("```bash\npython3 -m uv run depmesh release promote 3 --reasn go\n```", "--reasn"),
])
def test_a_broken_link_or_a_stale_command_fails_the_build(tmp_path, planted, named):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("site", "__pycache__"))
    page = docs / "content" / "concepts.md"
    page.write_text(page.read_text() + "\n\n" + planted + "\n")
    done = build(docs, tmp_path / "site")
    assert done.returncode != 0
    assert named in done.stderr


def test_the_readme_names_only_commands_that_exist_and_stays_short():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    readme = (ROOT / "README.md").read_text()
    assert hooks.stale(readme) == []
    assert len(readme.splitlines()) < 250
    assert len(hooks._commands(readme)) >= 5  # the tour's commands were found (so the check above checked them)
