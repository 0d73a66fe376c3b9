"""Money in the API: a Decimal amount with its ISO 4217 currency, never a float."""

from __future__ import annotations

from decimal import Decimal

import strawberry


@strawberry.type(description="An amount of money: a decimal amount and its ISO 4217 currency.")
class Money:
    amount: Decimal = strawberry.field(description='Exact decimal, e.g. "19.90".')
    currency: str = strawberry.field(description="ISO 4217 code, e.g. CNY.")

    @classmethod
    def of(cls, amount: Decimal | None, currency: str) -> Money | None:
        """Money for an optional amount: None stays None (a field that does not apply)."""
        return None if amount is None else cls(amount=amount, currency=currency)


__all__ = ["Money"]
