"""base62 uids with LaminDB's lengths and version suffixes."""

from __future__ import annotations

import hashlib
import secrets

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VERSION_SUFFIX_LENGTH = 4


def base62(n: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(n))


def uid_from_text(text: str, length: int) -> str:
    """A deterministic uid: the same text gives the same uid everywhere."""
    value = int.from_bytes(hashlib.md5(text.encode()).digest(), "big")
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 62)
        chars.append(BASE62[rem])
    return "".join(chars)


def new_uid(length: int, versioned: bool = False) -> str:
    """A random uid; a versioned one ends in the 4-char version ``0000``."""
    if versioned:
        return base62(length - VERSION_SUFFIX_LENGTH) + "0" * VERSION_SUFFIX_LENGTH
    return base62(length)


def next_version_uid(uid: str, taken_suffixes) -> str:
    """The uid of the version after the highest in ``taken_suffixes`` of the same stem."""
    highest = max((_decode(s) for s in taken_suffixes), default=0)
    return uid[:-VERSION_SUFFIX_LENGTH] + _encode(highest + 1)


def version_number(uid: str) -> int:
    """The version a versioned uid's 4-char suffix encodes (0 for ``...0000``)."""
    return _decode(uid[-VERSION_SUFFIX_LENGTH:])


def _decode(suffix: str) -> int:
    value = 0
    for ch in suffix:
        value = value * 62 + BASE62.index(ch)
    return value


def _encode(value: int) -> str:
    chars = []
    for _ in range(VERSION_SUFFIX_LENGTH):
        value, rem = divmod(value, 62)
        chars.append(BASE62[rem])
    if value:
        raise OverflowError("more than 62**4 versions of one artifact")
    return "".join(reversed(chars))
