"""A pytest plugin: a run that skipped tests for missing system packages ends with one line naming them.

Skip reasons name their packages as ``(apt-get install [-y] PKG ...)``; ``make test`` runs without the packages
``.ci/run`` installs first, so this says in one line what a README-only user lacks. Loaded by tests/conftest.py.
"""

from __future__ import annotations

import re

import pytest

_APT = re.compile(r"apt-get install ([^)\];]+)")
_BRACES = re.compile(r"^(.*)\{([^{}]*)\}(.*)$")


def apt_packages(words: str) -> list[str]:
    """Package names in an apt-get argument list, options dropped and ``a-{x,y}`` brace-expanded, in order."""
    packages: list[str] = []
    for word in words.split():
        if word.startswith("-") or word.startswith("$") or word.startswith('"'):
            continue
        braces = _BRACES.match(word)
        expanded = [f"{braces[1]}{x}{braces[3]}" for x in braces[2].split(",")] if braces else [word]
        packages += [p for p in expanded if p not in packages]
    return packages


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = 0
    packages: list[str] = []
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        wanted = [p for m in _APT.finditer(reason) for p in apt_packages(m[1])]
        if wanted:
            skipped += 1
            packages += [p for p in wanted if p not in packages]
    if skipped:
        terminalreporter.write_line(
            f"{skipped} test(s) skipped for missing system packages; to run them as CI does (.ci/run): "
            f"sudo apt-get install -y {' '.join(packages)}"
        )
