"""Signing keys for access tokens, with rotation.

The key file is a JWKS with private keys. The first key signs; every key verifies, so
rotating is: put a new key first, keep the old one until the last token it signed has
expired (the access-token lifetime), then drop it. `/.well-known/jwks.json` publishes the
public halves for resource servers that verify tokens themselves.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from joserfc.jwk import ECKey, KeySet, KeySetSerialization

ALGORITHM = "ES256"


def generate_key() -> ECKey:
    return ECKey.generate_key(
        "P-256",
        parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": ALGORITHM},
        private=True,
    )


class KeyRing:
    def __init__(self, key_set: KeySet) -> None:
        if not key_set.keys:
            raise ValueError("a key ring needs at least one key")
        signing = key_set.keys[0]
        if not isinstance(signing, ECKey):  # a key file can hold any kind of key
            raise ValueError(f"the first key signs ({ALGORITHM}): it must be an EC key")
        self.key_set = key_set
        self.signing_key = signing

    @classmethod
    def generate(cls) -> KeyRing:
        return cls(KeySet([generate_key()]))

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        return cls(KeySet.import_key_set(json.loads(text)))

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        """Load the key file; create one with a fresh key when there is none (dev default)."""
        if path.exists():
            return cls.from_json(path.read_text(encoding="utf-8"))
        ring = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(ring.to_json())
        return ring

    def to_json(self) -> str:
        return json.dumps(self.key_set.as_dict(private=True))

    def public_jwks(self) -> KeySetSerialization:
        return self.key_set.as_dict(private=False)
