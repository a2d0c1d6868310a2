"""PriceLevels (one side of the simulator's book) keeps its sorted prices exactly as a SortedDict
would, whatever the sequence of sets and deletes; the dict mutators that would bypass the list refuse."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedDict

from bfsx.sim.book import Level, PriceLevels

OPS = st.lists(st.tuples(st.booleans(), st.integers(-50, 50)), max_size=200)
BOUND = st.one_of(st.none(), st.integers(-60, 60))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(ops=OPS, lo=BOUND, hi=BOUND, inclusive=st.tuples(st.booleans(), st.booleans()), reverse=st.booleans())
def test_price_levels_behave_as_a_sorted_dict(ops: list[tuple[bool, int]], lo: int | None, hi: int | None,
                                              inclusive: tuple[bool, bool], reverse: bool) -> None:
    mine, ref = PriceLevels(), SortedDict()
    for put, price in ops:
        if put:
            level = Level()
            mine[price] = level
            ref[price] = level
        elif price in ref:
            del mine[price]
            del ref[price]
    assert mine.prices() == list(ref.keys()) and dict(mine) == dict(ref)
    assert mine.irange(lo, hi, inclusive, reverse) == list(ref.irange(lo, hi, inclusive, reverse))
    if ref:
        assert mine.peekitem(0) == ref.peekitem(0) and mine.peekitem(-1) == ref.peekitem(-1)


def test_the_mutators_that_would_bypass_the_price_list_refuse() -> None:
    side = PriceLevels()
    side[100] = Level()
    for call in (lambda: side.pop(100), side.popitem, lambda: side.setdefault(101, Level()),
                 lambda: side.update({102: Level()}), side.clear):
        with pytest.raises(TypeError):
            call()
    assert side.prices() == [100] and list(side) == [100]
