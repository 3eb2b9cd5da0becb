"""Each test module that talks DDS has its own domain range (ros_harness.DOMAIN_RANGES)
and takes its domain from it, so a node left over from one module, or a second run on
the same machine, never answers another module's client."""

from __future__ import annotations

import re
from pathlib import Path

from ros_harness import DOMAIN_RANGES

HERE = Path(__file__).resolve().parent
TALKS_DDS = re.compile(r"\bClient\(|\bros_environment\(|ROS_DOMAIN_ID")


def test_ranges_are_disjoint_and_valid_domain_ids():
    seen: dict[int, str] = {}
    for module, ids in DOMAIN_RANGES.items():
        assert len(ids) > 0 and ids.start >= 1 and ids.stop <= 233, module  # Fast DDS: 0..232
        for domain in ids:
            assert domain not in seen, f"{module} and {seen[domain]} share domain {domain}"
            seen[domain] = module


def test_every_dds_test_module_takes_its_domain_from_its_range():
    modules = {p.stem for p in HERE.glob("test_*.py") if TALKS_DDS.search(p.read_text())}
    modules.discard(Path(__file__).stem)
    assert modules, "no DDS test modules found"
    for module in sorted(modules):
        text = (HERE / f"{module}.py").read_text()
        assert module in DOMAIN_RANGES, f"{module} talks DDS but has no range in ros_harness.DOMAIN_RANGES"
        assert "domain_for(__name__)" in text, f"{module} must take its domain from domain_for(__name__)"
    assert set(DOMAIN_RANGES) <= modules, set(DOMAIN_RANGES) - modules  # no stale entries
