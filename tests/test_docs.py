"""The house as documented matches the house as built: docs/architecture.md and the README's module
map name every module of the package where it stands, and neither names a file that is gone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "otel_s3_bridge"
PACKAGES = ("receive", "decode", "enrich", "govern", "deliver", "lake", "config", "cli")
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()
README = (ROOT / "README.md").read_text()


def _modules() -> list[Path]:
    return sorted(path.relative_to(PACKAGE) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py")


def _module_map() -> str:
    """The README's map of the package: the code block under Development that starts with it."""
    development = README.split("## Development", 1)[1]
    return next(block for block in development.split("```")[1::2] if block.lstrip().startswith("otel_s3_bridge/"))


def _package_lines(text: str, package: str, marker: str) -> str:
    """The lines of `text` about `package`: those naming it, and in the module map those that follow
    until the next entry."""
    lines, taken, inside = text.splitlines(), [], False
    for line in lines:
        entry = re.match(r"^  (\S+)", line)
        if entry:
            inside = entry.group(1) == marker
        if marker in line or inside:
            taken.append(line)
    return "\n".join(taken)


@pytest.mark.parametrize("document", ["docs/architecture.md", "README.md module map"])
def test_every_module_is_named_where_it_stands(document):
    text = ARCHITECTURE if document.startswith("docs") else _module_map()
    missing = []
    for module in _modules():
        package = module.parts[0] if len(module.parts) > 1 else None
        where = text if package is None else _package_lines(text, package, f"{package}/")
        if package not in (None, *PACKAGES):
            missing.append(f"{module} (a package the documents do not know)")
        elif not re.search(rf"(?<![\w.]){re.escape(module.name)}\b", where):
            missing.append(str(module))
    assert not missing, f"{document} does not name: {', '.join(missing)}"


def test_no_document_names_a_file_that_is_gone():
    named = set()
    for path in [ROOT / "README.md", ROOT / "docs" / "architecture.md", *sorted((ROOT / "deploy").rglob("*.sql"))]:
        text = path.read_text()
        named |= {match for match in re.findall(r"otel_s3_bridge/[\w/]+\.(?:py|proto)", text)}
        named |= {match for match in re.findall(r"\btests/test_\w+\.py", text)}
        named |= {f"otel_s3_bridge/{match}" for match in
                  re.findall(rf"`((?:{'|'.join(PACKAGES)})/[\w/]+\.py)`", text)}
    gone = sorted(name for name in named
                  if not (ROOT / name).exists() and not (ROOT / "proto" / name).exists())
    assert not gone, f"named but not in the tree: {gone}"
