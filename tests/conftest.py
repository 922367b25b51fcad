"""Session hooks: start the suite's two long runs in the background (tests/background.py) when
a test that reads them is selected, and put those tests last so that the runs overlap the rest."""

from __future__ import annotations

import pytest
from background import STARTERS, start, stop_all


def _reads(item: pytest.Item) -> set[str]:
    """The background runs (fixture names of STARTERS) that `item` reads."""
    return set(getattr(item, "fixturenames", ())) & set(STARTERS)


@pytest.hookimpl(trylast=True)  # after -m / -k deselection
def pytest_collection_modifyitems(session, config, items):
    if config.option.collectonly:
        return
    for fixture in sorted(set().union(*(_reads(item) for item in items))):
        start(fixture)
    # stable sort: the tests that wait for a run go last, each part in its order
    items.sort(key=lambda item: bool(_reads(item)))


def pytest_sessionfinish(session, exitstatus):
    stop_all()
