"""The README's figures stay near what the project measures (issue 23 item 15): a test count that
is off by more than 2x from `pytest --collect-only -q` fails here, as does a time figure in the
README's first section that does not say how it was measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
README = PROJECT_ROOT / "README.md"


def readme_test_count(text: str) -> int:
    """The README's count of the test suite: "runs the test suite: <N> tests"."""
    counts = [int(n) for n in re.findall(r"runs the test suite: (\d+) tests\b", text.replace("\n", " "))]
    assert len(counts) == 1, f"expected one 'runs the test suite: <N> tests' in README.md, found {counts}"
    return counts[0]


def collected_tests() -> int:
    """`pytest --collect-only -q`'s count for this checkout."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    match = re.search(r"^(\d+) tests? collected", result.stdout, re.MULTILINE)
    assert match, result.stdout[-2000:] + result.stderr[-2000:]
    return int(match.group(1))


def within_twice(stated: float, measured: float) -> bool:
    return measured / 2 <= stated <= measured * 2


def test_within_twice():
    assert within_twice(655, 679) and within_twice(400, 679) and not within_twice(300, 679) and not within_twice(1400, 679)
    assert readme_test_count("and runs the test suite: 682 tests (`pytest`); 636 tests took 249 s") == 682


@pytest.mark.slow
def test_the_readme_test_count_is_within_2x_of_the_collected_count():
    stated, measured = readme_test_count(README.read_text()), collected_tests()
    assert within_twice(stated, measured), f"README.md says {stated} tests, pytest collects {measured}"


def test_the_readme_times_say_how_they_were_measured():
    """Every `N minutes` / `N s` of the README's opening section sits in a sentence that names the
    commit it was measured on and the machine load (from `uptime`), or says that the measurement
    did not record them ("load not recorded")."""
    opening = README.read_text().split("\n## ", 1)[0]
    sentences = re.split(r"(?<=[.;])\s", opening.replace("\n", " "))
    timed = [s for s in sentences if re.search(r"\b\d+(?:\.\d+)? ?(?:minutes?|min|s)\b", s)]
    assert timed, "no time figure found in the README's opening section"
    for sentence in timed:
        assert re.search(r"\bload\b", sentence) and re.search(r"commit (?:[0-9a-f]{7}|not recorded)", sentence), sentence
