from decimal import Decimal

import pytest

from control_plane.injector.quantity import parse_quantity


@pytest.mark.parametrize("text, value", [
    ("100m", Decimal("0.1")), ("1", Decimal(1)), ("1.5", Decimal("1.5")), (".5", Decimal("0.5")),
    ("128Mi", Decimal(128 << 20)), ("1Gi", Decimal(1 << 30)), ("1G", Decimal(10**9)), ("2k", Decimal(2000)),
    ("2e3", Decimal(2000)), ("1E-3", Decimal("0.001")), ("500u", Decimal("0.0005")), ("0", Decimal(0)), ("+2", Decimal(2)),
])
def test_quantities_parse_to_base_units(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "100 m", "1mi", "1KB", "-1", "Mi", "1e", "1e999", "2Ei0"])
def test_non_quantities_are_rejected_with_the_expected_form(text):
    with pytest.raises(ValueError) as err:
        parse_quantity(text)
    assert "quantity" in str(err.value)


def test_the_binary_suffix_is_larger_than_the_decimal_one():
    assert parse_quantity("1Mi") > parse_quantity("1M")
