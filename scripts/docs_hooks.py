"""mkdocs hook (mkdocs.yml ``hooks:``): pages generated from the code at build time.

The ROS node page's parameter table is not a copy: the marker below is replaced by
``spec_table()`` of mobilesam_ros/live/config.py, the one table the node declares and
validates its parameters from (config/segment.yaml is generated from it too).
test/test_docs.py checks the page keeps the marker and holds no hand-written table.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARAMETERS_PAGE = "ros-node.md"
PARAMETERS_MARKER = ("<!-- parameters: generated at build time from spec_table() in "
                     "mobilesam_ros/live/config.py (scripts/docs_hooks.py) -->")


def _spec_table() -> str:
    if str(REPO) not in sys.path:  # the clone's package, installed or not
        sys.path.insert(0, str(REPO))
    from mobilesam_ros.live.config import spec_table

    return spec_table()


def render(page: str, markdown: str) -> str:
    """The page's markdown with its generated parts filled in."""
    if page != PARAMETERS_PAGE:
        return markdown
    if markdown.count(PARAMETERS_MARKER) != 1:
        raise ValueError(f"docs/{PARAMETERS_PAGE} must hold the parameter-table marker exactly once: "
                         f"{PARAMETERS_MARKER}")
    return markdown.replace(PARAMETERS_MARKER, _spec_table())


def on_page_markdown(markdown, page, config, files):  # mkdocs' hook signature
    return render(page.file.src_uri, markdown)
