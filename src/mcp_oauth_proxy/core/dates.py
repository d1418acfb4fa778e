"""Times as pages show them, computed from the seconds alone: the core reads
no clock and imports no time module (tests/core/test_purity.py)."""

from __future__ import annotations

_DAY = 86400
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(year: int) -> bool:
    # The Gregorian rule.
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def utc_minute(seconds: int) -> str:
    """A Unix time (seconds, not before 1970) as ``YYYY-MM-DD HH:MM UTC``."""
    days, rest = divmod(seconds, _DAY)
    year = 1970
    while days >= (length := 366 if _is_leap(year) else 365):
        days -= length
        year += 1
    month = 1
    for month_days in _MONTH_DAYS:
        length = month_days + (month == 2 and _is_leap(year))
        if days < length:
            break
        days -= length
        month += 1
    hour, minute = rest // 3600, rest % 3600 // 60
    return f"{year:04d}-{month:02d}-{days + 1:02d} {hour:02d}:{minute:02d} UTC"
