"""The statutory clock against the ICO's worked examples, and its rules one by one."""

from datetime import UTC, date, datetime

import pytest

from app.services.requests import deadlines

ENG = "GB-ENG"


@pytest.mark.parametrize(
    ("started", "due"),
    [
        # The ICO's examples: the corresponding calendar date of the next month...
        (date(2025, 9, 3), date(2025, 10, 3)),
        # ... or the last day of that month when it has no such date (and in a leap year, the 29th).
        (date(2025, 1, 30), date(2025, 2, 28)),
        (date(2025, 1, 31), date(2025, 2, 28)),
        (date(2024, 1, 30), date(2024, 2, 29)),
        (date(2024, 1, 31), date(2024, 2, 29)),
        # Across the year's end.
        (date(2025, 12, 10), date(2026, 1, 12)),  # 10 January 2026 is a Saturday
        # A due date on a Saturday or a Sunday moves to the Monday.
        (date(2026, 9, 3), date(2026, 10, 5)),
        (date(2026, 9, 4), date(2026, 10, 5)),
        # On a bank holiday, to the next working day: Christmas, Boxing Day (Saturday: observed on the Monday 28th).
        (date(2026, 11, 25), date(2026, 12, 29)),
        # Easter Monday 2026 is 6 April; Good Friday 3 April.
        (date(2026, 3, 3), date(2026, 4, 7)),
        (date(2026, 3, 6), date(2026, 4, 7)),
    ],
)
def test_the_due_date_is_the_corresponding_day_of_the_next_month_on_a_working_day(started, due):
    assert deadlines.due(started, paused_days=0, region=ENG) == due


def test_a_pause_moves_the_due_date_by_its_days():
    assert deadlines.due(date(2025, 9, 3), paused_days=5, region=ENG) == date(2025, 10, 8)
    assert deadlines.paused_between(date(2025, 9, 10), date(2025, 9, 15)) == 5
    assert deadlines.paused_between(date(2025, 9, 10), date(2025, 9, 10)) == 0


def test_an_extension_runs_to_three_months_from_the_start():
    assert deadlines.due(date(2025, 9, 3), paused_days=0, region=ENG, months=3) == date(2025, 12, 3)
    assert deadlines.due(date(2025, 11, 30), paused_days=0, region=ENG, months=3) == date(2026, 3, 2)  # 28 Feb: Saturday
    assert deadlines.due(date(2025, 9, 3), paused_days=4, region=ENG, months=3) == date(2025, 12, 8)


def test_the_day_is_the_uk_day_and_the_holidays_the_regions():
    # 23:30 UTC on 31 March 2025 is already 1 April in London (summer time).
    assert deadlines.uk_day(datetime(2025, 3, 31, 23, 30, tzinfo=UTC)) == date(2025, 4, 1)
    assert deadlines.uk_day(datetime(2025, 1, 31, 23, 30, tzinfo=UTC)) == date(2025, 1, 31)
    # 2 January is a bank holiday in Scotland, not in England.
    assert deadlines.is_working_day(date(2026, 1, 2), ENG)
    assert not deadlines.is_working_day(date(2026, 1, 2), "GB-SCT")
    assert deadlines.check_region("GB-SCT") == "GB-SCT"
    with pytest.raises(ValueError, match="unknown holidays region"):
        deadlines.check_region("XX-YY")
