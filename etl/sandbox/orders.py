"""The order book file of ``bulkcapture sandbox --orders FILE``: CSV or JSON, by suffix.

Columns / keys: ``order_id`` and ``order_amount`` (minor units) are required; ``purchase_currency``,
``status``, ``fraud_status``, ``expires_at`` (ISO 8601), ``created_at``, ``purchase_country``,
``merchant_reference1``, ``merchant_reference2`` are optional. JSON is a list of objects or
``{"orders": [...]}``. Returns keyword dicts for ``SandboxState.add_order``.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etl.errors import InputError
from etl.sandbox.state import FRAUD_STATUSES, ORDER_STATUSES

_OPTIONAL_TEXT = ("purchase_currency", "purchase_country", "merchant_reference1",
                  "merchant_reference2")
_FIX = "each order needs order_id and order_amount (integer minor units)"


def _timestamp(value: object, where: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{where}: {value!r} is not an ISO 8601 date-time.") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_order(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """One order book entry as ``add_order`` keywords; ``InputError`` naming ``where`` if bad."""
    order_id = str(raw.get("order_id") or "").strip()
    if not order_id:
        raise InputError(f"{where}: order_id is missing: {_FIX}.")
    try:
        amount = int(str(raw.get("order_amount", "")).strip())
    except ValueError as exc:
        raise InputError(f"{where}: order_amount {raw.get('order_amount')!r} is not an integer "
                         f"(minor units): {_FIX}.") from exc
    spec: dict[str, Any] = {"order_id": order_id, "order_amount": amount}
    for key in _OPTIONAL_TEXT:
        if raw.get(key) not in (None, ""):
            spec[key] = str(raw[key])
    for key, allowed in (("status", ORDER_STATUSES), ("fraud_status", FRAUD_STATUSES)):
        value = raw.get(key)
        if value in (None, ""):
            continue
        if str(value).upper() not in allowed:
            raise InputError(f"{where}: {key} {value!r} is not one of {', '.join(allowed)}.")
        spec[key] = str(value).upper()
    for key in ("expires_at", "created_at"):
        ts = _timestamp(raw.get(key), where)
        if ts is not None:
            spec[key] = ts
    return spec


def load_orders(path: Path) -> list[dict[str, Any]]:
    """Read an order book file (``.csv`` or ``.json``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read order book {path}: {exc.strerror}: check the path given "
                         "to --orders.") from exc
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"order book {path} is not valid JSON ({exc}): fix the file.") from exc
        rows = data.get("orders") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InputError(f"order book {path} must hold a list of objects (or "
                             '{"orders": [...]}).')
    elif suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        raise InputError(f"order book {path} has an unknown format: use a .csv or .json file.")
    return [parse_order(row, f"order book {path}, entry {i}") for i, row in enumerate(rows, 1)]
