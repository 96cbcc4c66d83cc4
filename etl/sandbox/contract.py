"""The capture request contract as the sandbox enforces it: plain Python checks over the limits in
``schemas/limits.py`` (one table shared with the validator, so the two never disagree).

Kept free of frameworks on purpose: it runs on every capture of the benchmark's hot path.
``check_capture_body`` returns ``None`` for a valid body, else a ``Problem`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.limits import (
    CAPTURE_STRING_LIMITS,
    LINE_STRING_LIMITS,
    LINE_TYPES,
    MAX_AMOUNT,
    MAX_ORDER_LINES,
    MAX_SHIPPING_INFO,
    PRODUCT_IDENTIFIER_LIMITS,
    SHIPPING_INFO_LIMITS,
    SHIPPING_METHODS,
)

_LINE_TYPES = frozenset(LINE_TYPES)
_SHIPPING_METHODS = frozenset(SHIPPING_METHODS)
MAX_TAX_RATE = 10_000  # two implicit decimals: 100 %


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a body is refused: the HTTP status, the API's error code and one message."""

    status: int
    error_code: str
    message: str


class _Bad(Exception):
    def __init__(self, field: str, why: str, status: int = 400,
                 code: str = "BAD_VALUE") -> None:
        super().__init__(field)
        self.problem = Problem(status, code, f"Bad value: {field} ({why})")


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass but not a JSON integer


def _int(obj: dict[str, Any], key: str, field: str, lo: int, hi: int,
         required: bool = False) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _Bad(field, "required")
        return None
    if not _is_int(value):
        raise _Bad(field, "must be an integer")
    if not lo <= value <= hi:
        raise _Bad(field, f"must be between {lo} and {hi}")
    return value  # type: ignore[no-any-return]


def _strings(obj: dict[str, Any], limits: dict[str, int], prefix: str, status: int = 400,
             code: str = "BAD_VALUE") -> None:
    for key, limit in limits.items():
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _Bad(prefix + key, "must be a string")
        if len(value) > limit:
            raise _Bad(prefix + key, f"longer than {limit} characters", status, code)


def _check_line(line: object, i: int) -> int:
    """Check one order line; return its total_amount."""
    p = f"order_lines[{i}]."
    if not isinstance(line, dict):
        raise _Bad(f"order_lines[{i}]", "must be an object")
    if not isinstance(line.get("name"), str):
        raise _Bad(p + "name", "required")
    _strings(line, LINE_STRING_LIMITS, p)
    qty = _int(line, "quantity", p + "quantity", 0, MAX_AMOUNT, required=True)
    # Negative unit_price / total_amount are allowed: discount lines (api.md).
    price = _int(line, "unit_price", p + "unit_price", -MAX_AMOUNT, MAX_AMOUNT, required=True)
    total = _int(line, "total_amount", p + "total_amount", -MAX_AMOUNT, MAX_AMOUNT, required=True)
    discount = _int(line, "total_discount_amount", p + "total_discount_amount", 0, MAX_AMOUNT) or 0
    _int(line, "tax_rate", p + "tax_rate", 0, MAX_TAX_RATE)
    _int(line, "total_tax_amount", p + "total_tax_amount", -MAX_AMOUNT, MAX_AMOUNT)
    kind = line.get("type")
    if kind is not None and kind not in _LINE_TYPES:
        raise _Bad(p + "type", f"must be one of {', '.join(LINE_TYPES)}")
    ids = line.get("product_identifiers")
    if ids is not None:
        if not isinstance(ids, dict):
            raise _Bad(p + "product_identifiers", "must be an object")
        _strings(ids, PRODUCT_IDENTIFIER_LIMITS, p + "product_identifiers.")
    assert qty is not None and price is not None and total is not None
    if total != qty * price - discount:
        raise _Bad(p + "total_amount", "must equal quantity * unit_price - total_discount_amount")
    return total


def _check_shipping(info: object, i: int) -> None:
    p = f"shipping_info[{i}]."
    if not isinstance(info, dict):
        raise _Bad(f"shipping_info[{i}]", "must be an object")
    # api.md § Errors: a shipping_info field that is too long is a 422, not a 400.
    _strings(info, SHIPPING_INFO_LIMITS, p, 422, "UNPROCESSABLE_ENTITY")
    method = info.get("shipping_method")
    if method is not None and method not in _SHIPPING_METHODS:
        raise _Bad(p + "shipping_method", f"must be one of {', '.join(SHIPPING_METHODS)}")


def _array(body: dict[str, Any], field: str, most: int) -> list[Any]:
    """An optional array field: absent is empty; not an array, or too long, is a problem."""
    items = body.get(field)
    if items is None:
        return []
    if not isinstance(items, list):
        raise _Bad(field, "must be an array")
    if len(items) > most:
        raise _Bad(field, f"more than {most} items")
    return items


def check_capture_body(body: object, *, check_line_sum: bool = True) -> Problem | None:
    """``None`` if ``body`` (parsed JSON) honours the capture contract, else the first problem.

    ``check_line_sum``: refuse lines that do not add up to ``captured_amount``. The provider's
    docs are silent on it (api.md); the sandbox is strict by default so client bugs show.
    """
    try:
        if not isinstance(body, dict):
            raise _Bad("body", "must be a JSON object")
        amount = _int(body, "captured_amount", "captured_amount", 0, MAX_AMOUNT, required=True)
        _strings(body, CAPTURE_STRING_LIMITS, "")
        _int(body, "shipping_delay", "shipping_delay", 0, 2**31 - 1)
        lines = _array(body, "order_lines", MAX_ORDER_LINES)
        total = sum(_check_line(line, i) for i, line in enumerate(lines))
        if check_line_sum and lines and total != amount:
            raise _Bad("captured_amount",
                       f"{amount} is not the sum of order_lines total_amount ({total})")
        for i, info in enumerate(_array(body, "shipping_info", MAX_SHIPPING_INFO)):
            _check_shipping(info, i)
    except _Bad as bad:
        return bad.problem
    return None
