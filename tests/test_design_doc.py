"""docs/design.md stays true to the tree: its layout names every module of langclip/ and nothing that is not there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "langclip"


def layout_block() -> str:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def documented_files() -> set[str]:
    """Paths under langclip/ the layout names. A line is ``NAMES  description``, indented two spaces per folder
    level; NAMES is one name or a comma-separated list; a folder line (``name/``) may list its files in the
    description, which may continue on lines indented to the description column."""
    files, folders, listing = set(), [], False
    for line in layout_block().splitlines()[2:]:  # after "langclip/"
        indent = len(line) - len(line.lstrip())
        if indent >= 20:  # a description continued
            if listing:
                files.update("/".join(folders + [name]) for name in re.findall(r"\w+\.py", line))
            continue
        names, _, description = line.strip().partition("  ")
        folders = folders[: indent // 2 - 1]
        if names.endswith("/"):
            folders.append(names.rstrip("/"))
            listing = bool(re.match(r"\s*\w+\.py", description))
            if listing:
                files.update("/".join(folders + [name]) for name in re.findall(r"\w+\.py", description))
            continue
        listing = False
        files.update("/".join(folders + [name.strip()]) for name in names.split(",") if name.strip().endswith(".py"))
    return files


def test_the_layout_names_every_module_and_only_existing_ones():
    documented = documented_files()
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
              if p.name != "__init__.py" and "metrics" not in p.parts and "__pycache__" not in p.parts}
    actual.add("__init__.py")
    missing = sorted(actual - documented)
    stale = sorted(f for f in documented if not (PACKAGE / f).exists())
    assert not missing, f"docs/design.md's layout does not name {missing}"
    assert not stale, f"docs/design.md's layout names {stale}, which do not exist"
