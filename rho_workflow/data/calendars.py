"""Time parameters on CF calendars: reference units, dates and offsets (cftime).

A time parameter is held as a number in ``"<unit> since <date>"`` units (``unit`` one of
seconds, minutes, hours, days) on one of the CF calendars, exactly as a CF time coordinate
is: the store and the output carry both ``units`` and ``calendar``, so xarray decodes them to
the same dates. Values of such a parameter (sampling grids, tables) may be given as

* dates: ``"2090-06-01"``, ``"2090-06-01 12:00"`` (validated in the calendar: 2090-02-30
  exists only in the 360-day calendar);
* offsets with units: ``{values: [0, 6], units: "months since 2090-01-01"}``, or units
  without a reference (``"years"``) counted from the parameter's own reference date.
  Seconds to days and weeks are exact in every calendar; ``months`` and ``years`` are the
  calendar's own: whole numbers step the calendar (the same day k months later), fractions
  are allowed where months or years have a fixed length (360-day: 30-day months, 360-day
  years; noleap/365_day and all_leap/366_day: fixed years).
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from rho_workflow.errors import RhoWorkflowError

__all__ = ["CALENDARS", "CalendarError", "time_units_problem", "is_time_units", "parse_date",
           "to_time_offsets"]

CALENDARS = ("standard", "gregorian", "proleptic_gregorian", "julian", "noleap", "365_day",
             "all_leap", "366_day", "360_day")
#: units a time parameter may be held in (cftime decodes these in every calendar)
EXACT_UNITS = {"seconds": 1 / 86400, "second": 1 / 86400, "s": 1 / 86400, "minutes": 1 / 1440,
               "minute": 1 / 1440, "min": 1 / 1440, "hours": 1 / 24, "hour": 1 / 24, "h": 1 / 24,
               "days": 1.0, "day": 1.0, "d": 1.0}
OFFSET_UNITS = {**EXACT_UNITS, "weeks": 7.0, "week": 7.0}
CALENDAR_UNITS = ("months", "month", "years", "year")
_FIXED_YEAR = {"360_day": 360, "noleap": 365, "365_day": 365, "all_leap": 366, "366_day": 366}
_DATE = re.compile(r"^\s*(-?\d{1,4})-(\d{1,2})-(\d{1,2})"
                   r"(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d*)?))?)?\s*(?:Z|UTC)?\s*$")


class CalendarError(RhoWorkflowError, ValueError):
    """A time value, reference unit or calendar that cannot be used."""


def is_time_units(units: Any) -> bool:
    """True for a time reference such as ``"days since 2090-01-01"``."""
    return isinstance(units, str) and "since" in units.split()


def _split(units: str) -> tuple[str, str]:
    unit, _, ref = units.strip().partition(" since ")
    return unit.strip().lower(), ref.strip()


def parse_date(text: str, calendar: str) -> Any:
    """A ``cftime.datetime`` of ``text`` (``YYYY-MM-DD[ hh:mm[:ss]]``) in ``calendar``."""
    import cftime

    match = _DATE.match(str(text))
    if match is None:
        raise CalendarError(f"date {text!r} must be written YYYY-MM-DD or YYYY-MM-DD hh:mm[:ss]")
    y, mo, d, h, mi, sec = match.groups()
    seconds = float(sec or 0)
    try:
        return cftime.datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0),
                               int(seconds), int(round((seconds % 1) * 1e6)), calendar=calendar)
    except ValueError as exc:
        raise CalendarError(f"date {text!r} does not exist in the {calendar!r} calendar ({exc})"
                            ) from None


def time_units_problem(units: str, calendar: str | None) -> str | None:
    """Why ``units``/``calendar`` cannot hold a time parameter (None when they can)."""
    calendar = calendar or "standard"
    if calendar not in CALENDARS:
        return (f"calendar {calendar!r} must be one of the CF calendars {list(CALENDARS)}")
    if not is_time_units(units):
        return (f"units {units!r} must be a time reference '<unit> since <date>' such as "
                "'days since 2000-01-01'")
    unit, ref = _split(units)
    if unit not in EXACT_UNITS:
        return (f"units {units!r}: {unit!r} has no fixed length in every calendar, so files "
                "could not be decoded to the same dates (rule: a time parameter is held in "
                "seconds, minutes, hours or days since a date; months and years are accepted "
                "for sampling values only); fix: write e.g. 'days since " + (ref or "2000-01-01")
                + "'")
    try:
        parse_date(ref, calendar)
    except CalendarError as exc:
        return f"units {units!r}: reference {exc}"
    return None


def _months_later(ref: Any, months: int) -> Any:
    total = ref.year * 12 + (ref.month - 1) + months
    try:
        return ref.replace(year=total // 12, month=total % 12 + 1)
    except ValueError as exc:
        raise CalendarError(f"{months} months after {ref} is not a date of its calendar ({exc})"
                            ) from None


def _offset_date(value: float, unit: str, ref: Any, calendar: str) -> Any:
    """The date ``value`` ``unit`` after ``ref``."""
    import datetime

    if unit in OFFSET_UNITS:
        return ref + datetime.timedelta(days=value * OFFSET_UNITS[unit])
    months = value * (12 if unit.startswith("year") else 1)
    if float(months).is_integer():
        return _months_later(ref, int(months))
    if calendar == "360_day":
        return ref + datetime.timedelta(days=months * 30)
    if unit.startswith("year") and calendar in _FIXED_YEAR:
        return ref + datetime.timedelta(days=value * _FIXED_YEAR[calendar])
    raise CalendarError(f"{value:g} {unit} is not a whole number, and {unit} have no fixed "
                        f"length in the {calendar!r} calendar; give whole {unit}, or days")


def to_time_offsets(values: Sequence[Any], given_units: str | None, units: str,
                    calendar: str | None, where: str) -> list[float]:
    """Numbers in the parameter's ``units`` (``"days since ..."``) on ``calendar`` of
    ``values``: dates as text, or offsets in ``given_units`` (see the module docstring).

    Raises
    ------
    CalendarError
        A value, unit or date that does not exist; the message names ``where``, the value,
        the rule and the fix.
    """
    import cftime

    calendar = calendar or "standard"
    problem = time_units_problem(units, calendar)
    if problem:
        raise CalendarError(f"{where}: {problem}")
    target_unit, target_ref = _split(units)
    ref_date = parse_date(target_ref, calendar)
    if given_units is not None:
        unit, ref_text = _split(given_units) if is_time_units(given_units) else \
            (given_units.strip().lower(), "")
        if unit not in OFFSET_UNITS and unit not in CALENDAR_UNITS:
            raise CalendarError(
                f"{where}.units: value {given_units!r} is not a time offset unit (rule: one of "
                f"{sorted(set(OFFSET_UNITS) | set(CALENDAR_UNITS))}, optionally 'since "
                "<date>'); fix: e.g. 'days', 'months since 2090-01-01' or give dates")
        try:
            ref = parse_date(ref_text, calendar) if ref_text else ref_date
        except CalendarError as exc:
            raise CalendarError(f"{where}.units: {exc}") from None
    out = []
    for v in values:
        try:
            if isinstance(v, str):
                date = parse_date(v, calendar)
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise CalendarError(f"value {v!r} must be a date such as '2090-06-01' or a "
                                    "finite number")
            elif given_units is None:
                out.append(float(v))  # already in the parameter's units
                continue
            else:
                date = _offset_date(float(v), unit, ref, calendar)
        except CalendarError as exc:
            raise CalendarError(f"{where}: {exc}; fix: give dates of the {calendar!r} "
                                f"calendar or offsets, e.g. {{values: [0, 6], units: "
                                f"'months since {target_ref}'}}") from None
        out.append(float(cftime.date2num(date, units, calendar=calendar)))
    return out
