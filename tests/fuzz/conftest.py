"""Hypothesis profiles for the fuzz suite and the per-target count of executed examples.

Profiles (``HYPOTHESIS_PROFILE`` picks one; ``CI=true`` picks ``ci``, otherwise ``fuzz``):

- ``fuzz``: random inputs each run, sized so the whole directory takes about a minute
  on two cores;
- ``ci``: the same budget, derandomized, so a CI run is reproducible;
- ``deep``: ten times the examples, for a long local run before a release.

No example database is kept and Hypothesis' own files go to a temporary directory that
is removed at the end, so a run leaves nothing in the repository. A failure prints the
reproducing example (and the ``@reproduce_failure`` blob) instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

from tests.fuzz.budget import BASE_EXAMPLES
from tests.fuzz.counts import COUNTS

_HOME = tempfile.mkdtemp(prefix="sidemesh-hypothesis-")
set_hypothesis_home_dir(_HOME)

_COMMON = {
    "database": None,
    # In-process parsers must answer within this (a hang fails); network tests set None.
    "deadline": timedelta(seconds=5),
    # Generating whole documents and messages is slower than Hypothesis expects.
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    "print_blob": True,
}
settings.register_profile("fuzz", max_examples=BASE_EXAMPLES, **_COMMON)
settings.register_profile("ci", max_examples=BASE_EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile("deep", max_examples=BASE_EXAMPLES * 10, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI", "").lower() in ("1", "true") else "fuzz")
settings.load_profile(PROFILE)


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not COUNTS:
        return
    width = max(len(target) for target in COUNTS)
    terminalreporter.section(f"fuzz cases run (Hypothesis profile {PROFILE!r})")
    for target, count in sorted(COUNTS.items()):
        terminalreporter.write_line(f"{target:<{width}}  {count:>7,}")
    terminalreporter.write_line(f"{'total':<{width}}  {sum(COUNTS.values()):>7,}")
