"""The documentation's links lead somewhere: every relative link in the README and docs/ names
a file of this repository (pages moved between them once)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_names_an_existing_file():
    broken = []
    for page in _pages():
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme():
    readme = ROOT.joinpath("README.md").read_text()
    unlinked = [p.name for p in _pages()[1:] if f"(docs/{p.name})" not in readme]
    assert unlinked == []


def test_the_readme_starts_with_the_two_commands():
    text = ROOT.joinpath("README.md").read_text()
    block = text.split("```")[1].strip().splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make main", "make test"]
