"""Opaque global ids: base64url("Type:pk"). Clients must treat them as opaque strings."""

from __future__ import annotations

import base64
import binascii
import enum

from api.errors import DomainError, InputError

# Primary keys are INTEGER columns: a larger number cannot name a row, and PostgreSQL would
# refuse it as a parameter (an internal error) rather than find nothing.
MAX_PK = 2**31 - 1


def encode_id(type_name: str, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode().rstrip("=")


def decode_id(global_id: str) -> tuple[str, int]:
    """Split a global id into (type name, primary key); InputError when it is not one.

    Only the encoding ``encode_id`` gives is an id: base64 decoding forgives padding, stray
    characters and unused bits, and int() reads zero-padded and non-ASCII digits, so
    ``Customer:0001``, ``Customer:١`` and a padded spelling would all name customer 1. One
    object has one id (caches, audit entries and clients compare them as strings).
    """
    try:
        raw = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
        type_name, _, digits = raw.partition(":")
        if not type_name or not digits.isdigit() or not 0 < int(digits) <= MAX_PK:
            raise ValueError
        if encode_id(type_name, int(digits)) != global_id:
            raise ValueError
        return type_name, int(digits)
    except (binascii.Error, UnicodeError, ValueError):
        raise InputError(f"Invalid ID: {global_id!r}.") from None


def decode_id_of(global_id: str, type_name: str) -> int:
    """The primary key of a ``type_name`` id; InputError for a malformed id or another type."""
    found, pk = decode_id(global_id)
    if found != type_name:
        raise InputError(f"Expected a {type_name} ID; got an ID of another type: {global_id!r}.")
    return pk


def input_pk(global_id: str, type_name: str, *path: str, invalid: enum.Enum) -> int:
    """The primary key of an id given in a mutation's input; a malformed id or one of another
    type is a payload error with the domain's ``invalid`` code on that field (``path``)."""
    try:
        return decode_id_of(global_id, type_name)
    except InputError as error:
        raise DomainError.one(invalid, str(error), *path) from None
