"""What an adapter's options may be: each numeric option's range, each named option's choices,
and the one check of them, with one wording for every adapter.

An adapter declares a table of :class:`Range` and :class:`Choice` rows and calls
:func:`check_table` from its ``check_options``; checks across options (one that rules out
another) stay with the adapter. This module is imported inside adapter environments, so it runs
on Python 3.9 with the standard library alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class Range:
    """A numeric option's values: from ``low`` to ``high`` (``above``/``under`` when the bound
    itself is out), a whole number where ``whole``. ``zero`` says what 0 means; where ``low`` is
    above 0, 0 is allowed besides the range (``folds``: 0 = off, or 2 or more)."""

    key: str
    low: float = -math.inf
    high: float = math.inf
    whole: bool = False
    above: bool = False
    under: bool = False
    zero: str = ""

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        number: float
        if isinstance(value, int):  # compared as it is: float() overflows past 1e308
            number, whole = value, True
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                return False
            whole = number.is_integer()  # False for NaN and the infinities
        if self.zero and self.low > 0 and number == 0:
            return True
        if self.whole and not whole:
            return False
        low_ok = number > self.low if self.above else number >= self.low
        high_ok = number < self.high if self.under else number <= self.high
        return low_ok and high_ok  # False for NaN

    def words(self) -> str:
        """The range in words: ``a whole number of 1 or more``, ``a number from 0 to under 1``."""
        kind = "a whole number" if self.whole else "a number"
        low = _number(self.low) + (f" ({self.zero})" if self.zero and self.low == 0 else "")
        high = _number(self.high)
        if math.isinf(self.high):
            span = f"above {low}" if self.above else f"of {low} or more"
        elif math.isinf(self.low):
            span = f"under {high}" if self.under else f"of {high} or less"
        else:
            start = f"above {low} and" if self.above else f"from {low} to"
            end = "under" if self.under else "at most" if self.above else ""
            span = " ".join(part for part in (start, end, high) if part)
        words = f"{kind} {span}"
        return f"0 ({self.zero}) or {words}" if self.zero and self.low > 0 else words


@dataclass(frozen=True)
class Choice:
    """A named option's values: one of ``values`` (any letter case where ``any_case``);
    ``note`` says why the others are out."""

    key: str
    values: tuple[str, ...]
    any_case: bool = False
    note: str = ""

    def allows(self, value: Any) -> bool:
        if self.any_case and isinstance(value, str):
            value = value.lower()
        return value in self.values

    def words(self) -> str:
        words = f"one of {', '.join(self.values)}"
        return f"{words} ({self.note})" if self.note else words


Rule = Union[Range, Choice]


def check_table(options: Mapping[str, Any], table: Iterable[Rule]) -> None:
    """Raise ``ValueError`` (one line: ``option KEY: VALUE is not WORDS``) for the first option
    of ``table`` whose value in ``options`` the table refuses."""
    for rule in table:
        value = options[rule.key]
        if not rule.allows(value):
            raise ValueError(f"option {rule.key}: {value!r} is not {rule.words()}")


def _number(value: float) -> str:
    return f"{value:g}"
