"""Catalog rules: what a product, a SKU, a price band and a channel-exclusive SKU must be,
checked on every write (``editing``), all problems at once. The catalog is brand-wide: HQ
writes it (``catalog:write``), every signed-in caller reads it (``queries``). A SKU's cost
price is the brand's secret; what hides it is the API (``Sku.costPrice``), the queries hand it
to orders for gross margin.

Price rules, checked on every write:

* money is a non-negative amount in cents, at most ``MAX_AMOUNT``;
* a band's floor is at most its ceiling, and its list price (the channel's default price)
  lies inside it;
* a band whose range leaves out the suggested retail price must name a list price: an order
  line without a price is charged the channel's default price (list price, else the SRP),
  and that default must be sellable on the channel;
* a channel-exclusive SKU (线上专供款) has bands only for the channels it is sold on.

Codes are unique: the INSERT itself is the check (``ON CONFLICT DO NOTHING RETURNING``), so
two concurrent creations of one code give one row and one DUPLICATE_CODE, on both engines.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from api.auth.principal import Principal
from api.catalog.models import SalesChannel
from api.errors import DomainError, Problem


class CatalogErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    REQUIRED = "required"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    DUPLICATE_CODE = "duplicate_code"
    DUPLICATE_CHANNEL = "duplicate_channel"
    INVALID_AMOUNT = "invalid_amount"
    FLOOR_ABOVE_CEILING = "floor_above_ceiling"
    LIST_PRICE_OUTSIDE_BAND = "list_price_outside_band"
    # The band leaves out the suggested retail price and names no list price of its own.
    DEFAULT_PRICE_OUTSIDE_BAND = "default_price_outside_band"
    # A band for a channel an exclusive SKU is not sold on.
    CHANNEL_NOT_SOLD = "channel_not_sold"
    TOO_MANY = "too_many"


_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
_CURRENCY = re.compile(r"[A-Z]{3}")
CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("999999999999.99")  # Numeric(14, 2)
MAX_SKUS = 100  # per product: a product is one page of SKUs, never a connection
MAX_BANDS = len(SalesChannel)  # one per channel
MAX_NAME = 200
MAX_DESCRIPTION = 2000


@dataclass(frozen=True, slots=True)
class BandDraft:
    channel: SalesChannel
    floor: Decimal
    ceiling: Decimal
    list_price: Decimal | None = None


@dataclass(slots=True)
class SkuDraft:
    code: str
    name: str
    suggested_retail_price: Decimal
    cost_price: Decimal
    currency: str = "CNY"
    exclusive_channels: Sequence[SalesChannel] = ()  # empty: sold on every channel
    price_bands: Sequence[BandDraft] = ()


def require_hq(principal: Principal) -> None:
    if not principal.is_hq:
        raise DomainError.one(CatalogErrorCode.FORBIDDEN, "Only HQ staff manage the catalog.")


def check_text(
    problems: list[Problem], value: str, name: str, path: tuple[str, ...], limit: int
) -> None:
    if not value.strip():
        problems.append(Problem(CatalogErrorCode.REQUIRED, f"{name} must not be blank.", path))
    elif len(value) > limit:
        problems.append(
            Problem(CatalogErrorCode.INVALID, f"{name} is over {limit} characters.", path)
        )


def check_code(problems: list[Problem], code: str, path: tuple[str, ...]) -> None:
    if not _CODE.fullmatch(code):
        problems.append(
            Problem(
                CatalogErrorCode.INVALID,
                "A code is 1-64 letters, digits, '.', '_', '/' or '-', starting with a letter "
                "or digit.",
                path,
            )
        )


def check_money(problems: list[Problem], value: Decimal, name: str, path: tuple[str, ...]) -> bool:
    try:
        in_cents = value.is_finite() and value == value.quantize(CENT)
    except InvalidOperation:
        in_cents = False
    if not in_cents or not Decimal(0) <= value <= MAX_AMOUNT:
        problems.append(
            Problem(
                CatalogErrorCode.INVALID_AMOUNT,
                f"{name} must be an amount in cents from 0 to {MAX_AMOUNT}.",
                path,
            )
        )
        return False
    return True


def check_channels(
    problems: list[Problem], channels: Sequence[SalesChannel], path: tuple[str, ...]
) -> None:
    seen: set[SalesChannel] = set()
    for index, channel in enumerate(channels):
        if channel in seen:
            problems.append(
                Problem(
                    CatalogErrorCode.DUPLICATE_CHANNEL,
                    f"{channel.name} is listed twice.",
                    (*path, str(index)),
                )
            )
        seen.add(channel)


def check_bands(
    problems: list[Problem],
    bands: Sequence[BandDraft],
    *,
    srp: Decimal | None,
    exclusive: Sequence[SalesChannel],
    path: tuple[str, ...],
) -> None:
    """Every band on its own, and against the SKU's SRP (None: the SRP is itself invalid)
    and its exclusive channels."""
    if len(bands) > MAX_BANDS:
        problems.append(
            Problem(CatalogErrorCode.TOO_MANY, f"At most {MAX_BANDS} bands, one per channel.", path)
        )
        return
    seen: set[SalesChannel] = set()
    for index, band in enumerate(bands):
        at = (*path, str(index))
        if band.channel in seen:
            problems.append(
                Problem(
                    CatalogErrorCode.DUPLICATE_CHANNEL,
                    f"{band.channel.name} has two bands.",
                    (*at, "channel"),
                )
            )
        seen.add(band.channel)
        if exclusive and band.channel not in exclusive:
            problems.append(
                Problem(
                    CatalogErrorCode.CHANNEL_NOT_SOLD,
                    f"The SKU is exclusive to {', '.join(c.name for c in exclusive)}; it has no "
                    f"price on {band.channel.name}.",
                    (*at, "channel"),
                )
            )
        valid = check_money(problems, band.floor, "The floor", (*at, "floor"))
        valid &= check_money(problems, band.ceiling, "The ceiling", (*at, "ceiling"))
        if band.list_price is not None:
            valid &= check_money(problems, band.list_price, "The list price", (*at, "listPrice"))
        if not valid:
            continue
        if band.floor > band.ceiling:
            problems.append(
                Problem(
                    CatalogErrorCode.FLOOR_ABOVE_CEILING,
                    f"The floor {band.floor} is above the ceiling {band.ceiling}.",
                    (*at, "floor"),
                )
            )
        elif band.list_price is not None:
            if not band.floor <= band.list_price <= band.ceiling:
                problems.append(
                    Problem(
                        CatalogErrorCode.LIST_PRICE_OUTSIDE_BAND,
                        f"The list price {band.list_price} is outside {band.floor}-{band.ceiling}.",
                        (*at, "listPrice"),
                    )
                )
        elif srp is not None and not band.floor <= srp <= band.ceiling:
            problems.append(
                Problem(
                    CatalogErrorCode.DEFAULT_PRICE_OUTSIDE_BAND,
                    f"The suggested retail price {srp} is outside {band.floor}-{band.ceiling} "
                    f"on {band.channel.name}: give the band a list price.",
                    (*at, "listPrice"),
                )
            )


def check_sku(problems: list[Problem], draft: SkuDraft, path: tuple[str, ...]) -> None:
    check_code(problems, draft.code, (*path, "code"))
    check_text(problems, draft.name, "Name", (*path, "name"), MAX_NAME)
    if not _CURRENCY.fullmatch(draft.currency):
        problems.append(
            Problem(
                CatalogErrorCode.INVALID,
                "A currency is an ISO 4217 code, e.g. CNY.",
                (*path, "currency"),
            )
        )
    srp_valid = check_money(
        problems,
        draft.suggested_retail_price,
        "The suggested retail price",
        (*path, "suggestedRetailPrice"),
    )
    check_money(problems, draft.cost_price, "The cost price", (*path, "costPrice"))
    check_channels(problems, draft.exclusive_channels, (*path, "exclusiveChannels"))
    check_bands(
        problems,
        draft.price_bands,
        srp=draft.suggested_retail_price if srp_valid else None,
        exclusive=draft.exclusive_channels,
        path=(*path, "priceBands"),
    )
