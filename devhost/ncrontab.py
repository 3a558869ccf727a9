"""NCRONTAB schedules as the Functions timer trigger reads them: six fields, seconds first.

    {second} {minute} {hour} {day} {month} {day-of-week}

Each field takes ``*``, a number, a range ``a-b``, a list ``a,b``, and steps ``*/n`` or ``a-b/n``.
Day-of-week is 0-6 with 0 = Sunday (7 is accepted for Sunday too).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = ("second", "minute", "hour", "day", "month", "day-of-week")


def _field(text: str, low: int, high: int, name: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"{name}: step must be at least 1")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = int(base)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise ValueError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Schedule:
        fields = text.split()
        if len(fields) != 6:
            raise ValueError(f"NCRONTAB needs six fields (seconds first), got {len(fields)}: {text!r}")
        parsed = [_field(f, low, high, name) for f, (low, high), name in zip(fields, _BOUNDS, _NAMES, strict=True)]
        weekdays = frozenset(d % 7 for d in parsed[5])
        return cls(parsed[0], parsed[1], parsed[2], parsed[3], parsed[4], weekdays)

    def matches(self, moment: datetime) -> bool:
        return (
            moment.second in self.seconds
            and moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.day in self.days
            and moment.month in self.months
            and (moment.isoweekday() % 7) in self.weekdays
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first whole second after ``moment`` that the schedule fires on."""
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = candidate + timedelta(days=366 * 5)
        while candidate < limit:
            if candidate.month not in self.months:
                candidate = (candidate.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
                continue
            if candidate.day not in self.days or (candidate.isoweekday() % 7) not in self.weekdays:
                candidate = candidate.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if candidate.minute not in self.minutes:
                candidate = candidate.replace(second=0) + timedelta(minutes=1)
                continue
            if candidate.second not in self.seconds:
                candidate += timedelta(seconds=1)
                continue
            return candidate
        raise ValueError("the schedule never fires")
