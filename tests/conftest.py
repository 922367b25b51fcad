"""Session hooks: start the suite's two long runs in the background (tests/background.py) when
a test that reads them is selected, and put those tests last so that the runs overlap the rest."""

from __future__ import annotations

import pytest
from background import STARTERS, start, stop_all


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(trylast=True)  # after -m / -k deselection
def pytest_collection_modifyitems(session, config, items):
    if config.option.collectonly:
        return
    needed = sorted({_module(item) for item in items} & set(STARTERS))
    for module in needed:
        start(module)
    # stable sort: the order within each part is kept
    items.sort(key=lambda item: _module(item) in STARTERS)


def pytest_sessionfinish(session, exitstatus):
    stop_all()
