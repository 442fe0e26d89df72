"""Readable coupon codes: format, check symbol, normalisation, randomness."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coupon import codes as coupon_codes
from coupon.codes import ALPHABET, CHECK_ALPHABET, CodeError

shards = st.integers(min_value=0, max_value=1023)
CANONICAL = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){2}-[0-9A-HJKMNP-TV-Z]{3}[0-9A-HJKMNP-TV-Z*~$=U]")


def _compact(code: str) -> str:
    return code.replace("-", "")


@given(shards)
def test_round_trip(shard: int) -> None:
    code = coupon_codes.new_code(shard)
    assert CANONICAL.fullmatch(code), code
    parsed = coupon_codes.parse_code(code)
    assert parsed.shard == shard == coupon_codes.shard_of(code)
    assert parsed.canonical == code
    assert 0 <= parsed.payload < 2**coupon_codes.RANDOM_BITS


def test_layout() -> None:
    assert coupon_codes.BODY_LENGTH == 15 and coupon_codes.CODE_LENGTH == 16
    assert coupon_codes.SHARD_BITS + coupon_codes.RANDOM_BITS == 75
    assert coupon_codes.RANDOM_BITS >= 60
    # the shard is readable from the first two characters
    assert coupon_codes.new_code(0)[:2] == "00"
    assert coupon_codes.new_code(1023)[:2] == "ZZ"
    assert coupon_codes.new_code(33)[:2] == "11"


def _spell(value: int) -> str:
    digits = ""
    n = value
    for _ in range(15):
        n, d = divmod(n, 32)
        digits = ALPHABET[d] + digits
    return digits + CHECK_ALPHABET[value % 37]


def test_known_code() -> None:
    # shard 7, payload 1: value = 7 * 2**65 + 1; 15 digits then value mod 37
    spelled = _spell(7 * 2**65 + 1)
    parsed = coupon_codes.parse_code(spelled)
    assert (parsed.shard, parsed.payload) == (7, 1)
    assert parsed.canonical == "-".join(spelled[i : i + 4] for i in range(0, 16, 4))


@pytest.mark.parametrize("value", range(37))
def test_every_check_symbol_is_accepted(value: int) -> None:
    spelled = _spell(value)
    assert spelled[-1] == CHECK_ALPHABET[value]
    assert coupon_codes.parse_code(spelled.lower()).payload == value


@given(shards)
def test_every_single_substitution_is_caught(shard: int) -> None:
    code = _compact(coupon_codes.new_code(shard))
    for position, original in enumerate(code):
        alphabet = CHECK_ALPHABET if position == len(code) - 1 else ALPHABET
        for replacement in alphabet:
            if replacement == original:
                continue
            typo = code[:position] + replacement + code[position + 1 :]
            with pytest.raises(CodeError):
                coupon_codes.parse_code(typo)


@given(shards)
def test_every_adjacent_transposition_is_caught(shard: int) -> None:
    code = _compact(coupon_codes.new_code(shard))
    for i in range(len(code) - 1):
        if code[i] == code[i + 1]:
            continue
        swapped = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
        with pytest.raises(CodeError):
            coupon_codes.parse_code(swapped)


@given(shards)
def test_normalisation(shard: int) -> None:
    code = coupon_codes.new_code(shard)
    compact = _compact(code)
    assert coupon_codes.parse_code(compact).canonical == code
    assert coupon_codes.parse_code(code.lower()).canonical == code
    assert coupon_codes.parse_code(" ".join(compact[i : i + 4] for i in range(0, 16, 4))).canonical == code
    assert coupon_codes.parse_code(f"  {code}\n").canonical == code
    look_alikes = compact.replace("0", "O").replace("1", "I")
    assert coupon_codes.parse_code(look_alikes).canonical == code
    assert coupon_codes.parse_code(compact.replace("1", "l")).canonical == code


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "wrong_length"),
        ("0000-0000-0000-000", "wrong_length"),
        ("0000-0000-0000-00000", "wrong_length"),
        ("0" * 1000, "wrong_length"),
        ("0000-0000-0000-0U00", "bad_character"),  # U is only a check symbol
        ("0000-0000-0000-00!0", "bad_character"),
        ("0000-0000-0000-000!", "bad_character"),
        ("0000-0000-0000-000\u0131", "bad_character"),  # dotless i upper-cases to I
        ("0000-0000-0000-0001", "bad_check"),
    ],
)
def test_malformed_codes(text: str, reason: str) -> None:
    with pytest.raises(CodeError) as info:
        coupon_codes.parse_code(text)
    assert info.value.reason == reason
    assert info.value.code == "invalid_code"


def test_all_zero_code_is_well_formed() -> None:
    assert coupon_codes.parse_code("0000-0000-0000-0000").payload == 0


def test_non_text_is_rejected() -> None:
    with pytest.raises(CodeError):
        coupon_codes.parse_code(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize("shard", [-1, 1024, 2**40])
def test_shard_out_of_range(shard: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        coupon_codes.new_code(shard)


def test_shard_must_be_int() -> None:
    with pytest.raises(TypeError):
        coupon_codes.new_code(True)


def test_codes_are_unique() -> None:
    generated = {coupon_codes.new_code(i % 16) for i in range(100_000)}
    assert len(generated) == 100_000
