from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kimaki._backoff import Backoff


def test_doubles_up_to_the_cap_with_jitter_downwards() -> None:
    backoff = Backoff(initial=0.5, cap=30.0)
    longest = [round(backoff.delay(n, 1.0), 6) for n in range(1, 9)]
    assert longest == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    shortest = [round(backoff.delay(n, 0.0), 6) for n in range(1, 9)]
    assert shortest == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]


@given(
    attempt=st.integers(min_value=-5, max_value=10_000),
    random=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_every_delay_is_between_the_jittered_bounds(attempt: int, random: float) -> None:
    backoff = Backoff(initial=1.0, cap=60.0, jitter=0.25)
    delay = backoff.delay(attempt, random)
    assert 0.75 <= delay <= 60.0
    ceiling = min(60.0, 2.0 ** min(max(attempt - 1, 0), 10))  # 2**10 is past the cap
    assert 0.75 * ceiling <= delay <= ceiling
