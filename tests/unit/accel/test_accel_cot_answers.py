"""final_number: the last number of an answer text, normalised for comparison."""

import pytest

from sagellm.accel.cot import final_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She pays 3 * 2 = 6 dollars.\nThe answer is 18.", "18"),
        ("Total: 1,200.00 dollars", "1200"),
        ("It drops by -4.50 degrees", "-4.5"),
        ("no digits here", None),
        ("0.25 of 8 is 2", "2"),
    ],
)
def test_final_number(text, expected):
    assert final_number(text) == expected
