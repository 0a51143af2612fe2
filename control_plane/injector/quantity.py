"""Kubernetes resource quantities (``500m``, ``128Mi``, ``1.5``, ``2e3``), parsed exactly.

The injector checks resource annotations before it writes them into a pod, so a typo is a
denial naming the annotation instead of a pod the API server rejects later, and so it can
compare a request with its limit (a request above the limit is an invalid pod).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["parse_quantity", "QUANTITY_FORM"]

# The grammar of k8s.io/apimachinery's resource.Quantity: a signed decimal number, then a
# binary-SI suffix, a decimal-SI suffix or a decimal exponent.
_QUANTITY = re.compile(r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10) ** 3,
            "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18}

QUANTITY_FORM = "a Kubernetes quantity such as 250m, 1, 1.5, 128Mi or 1G"


def parse_quantity(text: str) -> Decimal:
    """The value of ``text`` in base units (cores, bytes); ``ValueError`` if it is not a
    quantity, negative, or absurdly large."""
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected {QUANTITY_FORM}, got {text!r}")
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise ValueError(f"expected {QUANTITY_FORM}, got {text!r}") from None
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        value = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = number * _DECIMAL[suffix]
    elif suffix:
        exponent = int(suffix[1:])
        if abs(exponent) > 30:
            raise ValueError(f"expected {QUANTITY_FORM}, got {text!r} (exponent out of range)")
        value = number.scaleb(exponent)
    else:
        value = number
    if value < 0:
        raise ValueError(f"expected a quantity of at least 0, got {text!r}")
    if value >= Decimal(2) ** 63:
        raise ValueError(f"expected {QUANTITY_FORM} below 2^63, got {text!r}")
    return value
