"""The conflict tests work in the orders tests' shop (see tests/orders/conftest.py)."""

from tests.orders.conftest import shop

__all__ = ["shop"]
