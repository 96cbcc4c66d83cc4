"""The vectorised fast paths of etl/plan.py agree with their plain-Python definitions."""

from __future__ import annotations

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from etl.plan import idempotency_key, idempotency_keys

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))


@given(st.lists(st.tuples(st.none() | text, st.none() | text), min_size=1, max_size=20))
def test_vectorised_keys_equal_the_definition(idents: list[tuple[str | None, str | None]]) -> None:
    df = pl.DataFrame(idents, schema={"order_id": pl.String, "capture_reference": pl.String},
                      orient="row")
    expected = [idempotency_key(o, r) for o, r in idents]  # type: ignore[arg-type]
    assert idempotency_keys(df).to_list() == expected


plain = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"),
                                       blacklist_characters='"\\'))


@given(st.lists(st.tuples(st.none() | plain, st.none() | plain), min_size=1, max_size=20))
def test_vectorised_keys_without_escapes_equal_the_definition(
        idents: list[tuple[str | None, str | None]]) -> None:
    df = pl.DataFrame(idents, schema={"order_id": pl.String, "capture_reference": pl.String},
                      orient="row")
    expected = [idempotency_key(o, r) for o, r in idents]  # type: ignore[arg-type]
    assert idempotency_keys(df).to_list() == expected
