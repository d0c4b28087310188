"""The statutory clock of a data-subject request (UK GDPR Art. 12(3), as the ICO reads it), as pure functions.

The clock starts on the day the request arrives, or on the day the person's identity is verified when that was
needed. The request is due on the corresponding calendar date of the next month (the month's last day when it has
no such date), later by the days the clock was paused (waiting for the person's clarification), and on the next
working day when that date is a weekend or a bank holiday. An extension, once, runs to the same date three months
after the start. Days are UK days (Europe/London), and bank holidays are the `holidays` library's for the region
(CONSENTD_HOLIDAYS_REGION, `GB-ENG` by default: England and Wales share them).
"""

import calendar
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

UK = ZoneInfo("Europe/London")
DEFAULT_REGION = "GB-ENG"
# Art. 12(3): one month, extendable by two further months.
MONTHS = 1
EXTENDED_MONTHS = 3


def uk_day(moment: datetime) -> date:
    """The day `moment` falls on in the UK."""
    return moment.astimezone(UK).date()


def add_months(day: date, months: int) -> date:
    """The corresponding calendar date `months` later; the last day of that month when it has no such date
    (31 January -> 28 or 29 February)."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@lru_cache(maxsize=8)
def _bank_holidays(region: str) -> holidays.HolidayBase:
    country, _, subdivision = region.partition("-")
    return holidays.country_holidays(country, subdiv=subdivision or None)


def check_region(region: str) -> str:
    """`region` if the holidays library knows it (a country code, then optionally "-" and a subdivision); ValueError."""
    try:
        _bank_holidays(region)
    except NotImplementedError as exc:
        raise ValueError(f"unknown holidays region {region!r}: a country code, optionally -subdivision (GB-ENG)") from exc
    return region


def is_working_day(day: date, region: str) -> bool:
    return day.weekday() < 5 and day not in _bank_holidays(region)


def next_working_day(day: date, region: str) -> date:
    """`day` itself when it is a working day, else the first working day after it."""
    while not is_working_day(day, region):
        day += timedelta(days=1)
    return day


def due(clock_started: date, *, paused_days: int, region: str, months: int = MONTHS) -> date:
    """The day a request whose clock started on `clock_started` must be answered by."""
    return next_working_day(add_months(clock_started, months) + timedelta(days=paused_days), region)


def paused_between(since: date, until: date) -> int:
    """The days the clock stood still, paused on `since` and resumed on `until` (resumed the same day: none)."""
    return max(0, (until - since).days)
