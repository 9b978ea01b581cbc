"""Pure helpers: visible tokens, probability bars, the status bar's job text."""

from __future__ import annotations

from tui.messages import JobView
from tui.text import bar, visible_token
from tui.widgets.status_bar import jobs_text


def test_visible_token():
    assert visible_token(" f") == "·f"
    assert visible_token("\n    ") == "↵····"
    assert visible_token("\t") == "→"
    assert visible_token("") == "∅"
    assert visible_token("self") == "self"


def test_bar():
    assert bar(1.0, 4) == "████"
    assert bar(0.0, 4) == "    "
    assert bar(0.5, 4) == "██  "
    assert bar(1 / 16, 2) == "▏ "  # one eighth of one of two cells
    assert bar(2.0, 3) == "███" and bar(-1, 3) == "   "
    assert all(len(bar(p / 100, 7)) == 7 for p in range(101))


def test_jobs_text():
    assert jobs_text(()) == "no jobs"
    assert jobs_text((JobView("1", "sleep", 0.35),)) == "job: sleep 35%"
    assert jobs_text((JobView("1", "sleep", 0.5), JobView("2", "predict"))) == "2 jobs: sleep 50%, predict"
