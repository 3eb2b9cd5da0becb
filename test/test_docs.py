"""The documentation site (mkdocs.yml, docs/): the node's parameter table is generated
from the code at build time, and the build fails on a broken link or anchor.

The full build runs in CI (.ci/run: ``mkdocs build --strict``); here the hook that
generates the table is checked, and a copy of the site is built with a broken link and
with a broken anchor to show that each fails the build.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "scripts" / "docs_hooks.py")
docs_hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_hooks)


def test_the_parameter_table_is_generated_from_the_code():
    from mobilesam_ros.live.config import PARAMETERS, spec_table

    page = (REPO / "docs" / docs_hooks.PARAMETERS_PAGE).read_text(encoding="utf-8")
    assert page.count(docs_hooks.PARAMETERS_MARKER) == 1
    # no hand-written copy beside the generated table
    copied = [row for row in spec_table().splitlines()[2:] if row in page]
    assert not copied, copied
    rendered = docs_hooks.render(docs_hooks.PARAMETERS_PAGE, page)
    assert spec_table() in rendered and docs_hooks.PARAMETERS_MARKER not in rendered
    assert all(f"| `{p.name}` |" in rendered for p in PARAMETERS)
    assert docs_hooks.render("cli.md", "text") == "text"


def test_a_page_without_the_marker_fails_the_build():
    with pytest.raises(ValueError, match="marker exactly once"):
        docs_hooks.render(docs_hooks.PARAMETERS_PAGE, "# The ROS 2 node\n\nno table\n")


def _build(tmp_path: Path, page: str, appended: str) -> subprocess.CompletedProcess:
    """mkdocs build --strict of a copy of the site with ``appended`` added to a page."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[test]')")
    site = tmp_path / "site"
    shutil.copytree(REPO / "docs", site / "docs")
    (site / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "docs_hooks.py", site / "scripts" / "docs_hooks.py")
    shutil.copy(REPO / "mkdocs.yml", site / "mkdocs.yml")
    with (site / "docs" / page).open("a", encoding="utf-8") as f:
        f.write(appended)
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "out")],
                          cwd=site, capture_output=True, text=True, timeout=300)


def test_the_site_builds_and_a_broken_link_or_anchor_fails_it(tmp_path):
    ok = _build(tmp_path / "ok", "cli.md", "\n")
    assert ok.returncode == 0, ok.stderr[-3000:]
    link = _build(tmp_path / "link", "cli.md", "\nSee [nothing](no-such-page.md).\n")
    assert link.returncode != 0 and "no-such-page.md" in link.stderr, link.stderr[-3000:]
    anchor = _build(tmp_path / "anchor", "cli.md", "\nSee [the node](ros-node.md#no-such-section).\n")
    assert anchor.returncode != 0 and "no-such-section" in anchor.stderr, anchor.stderr[-3000:]
    own = _build(tmp_path / "own", "cli.md", "\nSee [above](#no-such-heading).\n")
    assert own.returncode != 0 and "no-such-heading" in own.stderr, own.stderr[-3000:]


def test_the_readme_links_into_the_docs_resolve():
    """README.md is outside the site, so mkdocs does not check its links: this does."""
    import re

    markdown_toc = pytest.importorskip("markdown.extensions.toc")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 10, links
    for target, anchor in links:
        path = REPO / target
        assert path.is_file(), target
        if anchor:
            headings = re.findall(r"^#{1,6} (.+)$", path.read_text(encoding="utf-8"), re.M)
            slugs = {markdown_toc.slugify(h, "-") for h in headings}
            assert anchor in slugs, f"README links to {target}#{anchor}, which has no such heading"
