"""Errors that perfsim raises on purpose.

Every invalid input is reported as a :class:`ConfigError` that names the field, the value
and what is allowed, in one sentence.  The CLI prints it on one line and exits with status 2;
the Python API lets it propagate.  Nothing else in perfsim should reach a user as a traceback.
"""

from __future__ import annotations

from typing import Any, cast


class PerfsimError(Exception):
    """Base class of all errors perfsim raises deliberately."""


class ConfigError(PerfsimError, ValueError):
    """An invalid parameter: ``field`` got ``value``, and ``allowed`` says what would do.

    >>> str(ConfigError("rate_bps", -1, "a number > 0"))
    'rate_bps: got -1; allowed: a number > 0'
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}: got {value!r}; allowed: {allowed}")

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, Any, str]]:
        # picklable, so an error raised in a worker process reaches the CLI intact
        return (type(self), (self.field, self.value, self.allowed))


class RoutingError(PerfsimError):
    """A packet or a configuration asks for a path that does not exist (e.g. ``none`` mode)."""


def check_number(
    field: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    integer: bool = False,
) -> float:
    """Return ``value`` if it is a finite number inside ``[low, high]``, else raise ConfigError.

    ``low_inclusive=False`` makes the lower bound strict (``> low``), the common case for rates.
    """
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if integer else "a number"
        raise ConfigError(field, value, f"{kind}{_range_text(low, high, low_inclusive)}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(field, value, f"a finite number{_range_text(low, high, low_inclusive)}")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and value > high
    if too_low or too_high:
        kind = "an integer" if integer else "a number"
        raise ConfigError(field, value, f"{kind}{_range_text(low, high, low_inclusive)}")
    return cast(float, value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _range_text(low: float | None, high: float | None, low_inclusive: bool) -> str:
    lo = "" if low is None else (f" >= {_num(low)}" if low_inclusive else f" > {_num(low)}")
    hi = "" if high is None else f" <= {_num(high)}"
    if lo and hi:
        return f"{lo} and{hi}"
    return lo or hi
