"""Typed errors. The command line prints ``str(error)`` on one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DecathlonError(Exception):
    """An expected problem the user can fix: bad input, missing file, missing interpreter."""


class DataError(DecathlonError):
    """A dataset file is missing, corrupt, or does not match the published facts."""


class DownloadError(DataError):
    """A dataset could not be downloaded."""


class BudgetError(DecathlonError):
    """``budgets.toml`` (or a budget option) is wrong."""


class PluginError(DecathlonError):
    """An adapter plugin is missing, clashes with another, or is malformed."""


class EnvironmentBuildError(DecathlonError):
    """An adapter environment could not be built."""


class LeaderboardError(DecathlonError):
    """A leaderboard CSV is malformed."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""
