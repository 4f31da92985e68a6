"""The documentation's relative links point at files that exist (README.md, docs/, every folder's README)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER_PAGES = [*ROOT.glob("*/README.md"), *ROOT.glob("*/*/README.md")]
# The project's own pages: not those of tool caches and build outputs (.pytest_cache/README.md, build/...)
PAGES = sorted(
    [ROOT / "README.md", *ROOT.glob("docs/*.md")]
    + [
        p
        for p in FOLDER_PAGES
        if not any(part.startswith(".") or part == "build" for part in p.relative_to(ROOT).parts)
    ]
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target) and ![alt](target)


def relative_links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold commands, not links
    targets = (match.group(1) for match in LINK.finditer(text))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]  # not https:, mailto:, #anchor


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page):
    missing = [
        t for t in relative_links(page.read_text(encoding="utf-8")) if not (page.parent / t.split("#")[0]).exists()
    ]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_files_named_in_pyproject_exist():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    named = re.findall(r"\b((?:docs|training|space|benchmarks)/[\w./-]+\.(?:md|txt|py|json))", text)
    assert named and all((ROOT / name).is_file() for name in named), named
