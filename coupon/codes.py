"""Coupon codes people can read aloud and type at a till.

Layout: a 75-bit number, ``shard << 65 | random``, written as 15 Crockford base32 digits
(most significant first, so the first two characters are the shard), then one Crockford
check symbol (the number mod 37), grouped in fours: ``"07F1-E0YT-KZ4D-B0VG"`` (shard 7).

- shard: 10 bits (0..1023; 16 used today), so the till reaches the user-coupon partition
  directly from the code, with no scatter query.
- random: 65 bits from ``secrets``, so a code needs no database round trip to be made.
- check symbol: 37 is prime and larger than the base, so every single-character
  substitution and every transposition of two adjacent different characters changes the
  number mod 37 and is caught before any lookup.

Guessing: the check symbol is no secret, so only the 65 random bits protect a code.
With N = 10**7 live codes all in one shard (the worst case), a random well-formed guess
hits a live code with probability N / 2**65 = 1e7 / 3.69e19 ≈ 2.7e-13 (≈ 1.7e-14 spread
over 16 shards), far below 1e-9. Collisions between generated codes are as unlikely:
among 10**8 codes of one shard, about 10**16 / 2**66 ≈ 1.4e-4 expected pairs, and the
unique index on the code catches that one.
"""

import secrets
from dataclasses import dataclass

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford base32: digits and letters without I, L, O, U."""
CHECK_ALPHABET = ALPHABET + "*~$=U"
"""Crockford's 37 check symbols."""

SHARD_BITS = 10
RANDOM_BITS = 65
SHARD_COUNT = 1 << SHARD_BITS
BODY_LENGTH = (SHARD_BITS + RANDOM_BITS) // 5  # 15 digits
CODE_LENGTH = BODY_LENGTH + 1  # plus the check symbol
GROUP = 4
_MAX_INPUT = 64  # nobody types more; longer input is refused before any work

_RANDOM_MASK = (1 << RANDOM_BITS) - 1
_ALIASES = {"O": 0, "I": 1, "L": 1}  # Crockford's decoding of look-alikes
_DIGITS = {c: i for i, c in enumerate(ALPHABET)} | _ALIASES
_CHECKS = {c: i for i, c in enumerate(CHECK_ALPHABET)} | _ALIASES


class CodeError(ValueError):
    """Text that is not a well-formed coupon code. ``code`` is the stable error code
    (``invalid_code``); ``reason`` says why: ``wrong_length``, ``bad_character`` or
    ``bad_check``. A well-formed code may still name no coupon."""

    code = "invalid_code"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedCode:
    """A well-formed coupon code: its ``shard`` (0..1023), its random ``payload``
    (65 bits) and its ``canonical`` spelling (upper case, grouped, as ``new_code``
    writes it) to look up and store."""

    shard: int
    payload: int
    canonical: str


# Digits are written ten bits (two digits) at a time from a table and read by int(text, 32) (digits 0-9a-v)
# after translating Crockford's alphabet: far cheaper than a loop in Python, and a claim makes a code once
# and the claim consumer reads it once more.
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # the two digits of every 10-bit value
_BASE32 = b"0123456789abcdefghijklmnopqrstuv"
# Every byte that is no Crockford digit (nor one of its look-alikes) becomes "!", which int() refuses.
_FROM_CROCKFORD = bytes(_BASE32[_DIGITS[chr(b)]] if chr(b) in _DIGITS else ord("!") for b in range(256))


def _group(text: str) -> str:
    return "-".join(text[i : i + GROUP] for i in range(0, len(text), GROUP))


def _format(value: int) -> str:
    p = _PAIRS
    text = (
        ALPHABET[value >> 70]
        + p[(value >> 60) & 1023] + p[(value >> 50) & 1023] + p[(value >> 40) & 1023] + p[(value >> 30) & 1023]
        + p[(value >> 20) & 1023] + p[(value >> 10) & 1023] + p[value & 1023]
        + CHECK_ALPHABET[value % 37]
    )  # fmt: skip
    return f"{text[0:4]}-{text[4:8]}-{text[8:12]}-{text[12:16]}"


def _body_value(body: str) -> int:
    """The number 15 Crockford digits spell; ``CodeError`` naming the first character that is none."""
    raw = body.encode().translate(_FROM_CROCKFORD)
    if b"!" in raw:
        position = raw.index(b"!") + 1
        raise CodeError("bad_character", f"character {position} is not valid")
    return int(raw, 32)


def new_code(shard: int) -> str:
    """A fresh random coupon code in canonical form for ``shard`` (0..1023), made
    locally with 65 bits from ``secrets``. Raises ``ValueError`` for a shard out of
    range."""
    if not isinstance(shard, int) or isinstance(shard, bool):
        raise TypeError("shard must be an integer")
    if not 0 <= shard < SHARD_COUNT:
        raise ValueError(f"shard must be between 0 and {SHARD_COUNT - 1}")
    return _format(shard << RANDOM_BITS | secrets.randbits(RANDOM_BITS))


def parse_code(text: str) -> ParsedCode:
    """Read a code as a person typed it: case-insensitive, dashes and spaces ignored,
    O read as 0 and I/L as 1. Returns the shard, payload and canonical spelling, or
    raises ``CodeError`` for a wrong length, a character outside the alphabet, or a
    check symbol that does not match (a typo), without any lookup."""
    value = _value(text)
    return ParsedCode(
        shard=value >> RANDOM_BITS,
        payload=value & _RANDOM_MASK,
        canonical=_format(value),
    )


def _value(text: str) -> int:
    """The number a code spells, checked as :func:`parse_code` checks it."""
    if not isinstance(text, str):
        raise CodeError("bad_character", "a coupon code must be text")
    if len(text) > _MAX_INPUT:
        raise CodeError("wrong_length", "a coupon code has 16 characters")
    # ASCII only: str.upper() maps some non-ASCII letters ("ı", "ﬀ") onto ASCII ones.
    if not text.isascii():
        raise CodeError("bad_character", "a coupon code uses only letters and digits")
    compact = "".join(text.replace("-", "").split()).upper()
    if len(compact) != CODE_LENGTH:
        raise CodeError("wrong_length", f"a coupon code has {CODE_LENGTH} characters")
    value = _body_value(compact[:BODY_LENGTH])
    check = _CHECKS.get(compact[BODY_LENGTH])
    if check is None:
        raise CodeError("bad_character", f"character {CODE_LENGTH} is not valid")
    if check != value % 37:
        raise CodeError("bad_check", "the code has a typo")
    return value


def shard_of(code: str) -> int:
    """The shard a code was made for; raises ``CodeError`` like ``parse_code`` (which also spells the code
    out again: the claim consumer checks every code's shard and needs nothing else)."""
    return _value(code) >> RANDOM_BITS
