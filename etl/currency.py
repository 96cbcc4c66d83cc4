"""ISO 4217 currencies: which codes exist and how many minor-unit digits each has.

Backed by the ``iso4217`` package (the published ISO table). Used to convert major-unit decimals
to integer minor units exactly (``--amounts major``, CSV settlement reports) and to validate the
``currency`` column.
"""

from __future__ import annotations

from iso4217 import Currency

# Codes with no minor unit in ISO (gold, SDR, testing code …) have exponent None: they are not
# payment currencies, so they are left out rather than guessed.
EXPONENTS: dict[str, int] = {
    c.code: c.exponent for c in Currency if c.exponent is not None  # type: ignore[attr-defined]
}
DEFAULT_EXPONENT = 2


def exponent(code: str | None) -> int:
    """The minor-unit exponent of ``code``; 2 for a code the table does not know."""
    return EXPONENTS.get((code or "").upper(), DEFAULT_EXPONENT)
