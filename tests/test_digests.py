"""DigestSet: a set of 16-byte digests that behaves as a set and costs 20 to 40 bytes a digest."""

from __future__ import annotations

import random
import sys

import pytest

from collector.digests import BUCKET_BYTES, INITIAL_BUCKETS, MAX_LOAD, SLOT, DigestSet
from collector.models import key_digest

INITIAL_CAPACITY = int(INITIAL_BUCKETS * BUCKET_BYTES / SLOT * MAX_LOAD)


def random_digests(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(SLOT) for _ in range(count)]


def test_an_added_digest_is_a_member_and_others_are_not() -> None:
    """A digest is in the set once added; a digest never added is not."""
    digests = DigestSet()

    digests.add(key_digest("a"))

    assert key_digest("a") in digests
    assert key_digest("b") not in digests


def test_add_says_whether_the_digest_was_new() -> None:
    """`add` is True the first time a digest is added and False after, and len counts it once."""
    digests = DigestSet()

    first = digests.add(key_digest("a"))
    again = digests.add(key_digest("a"))

    assert (first, again) == (True, False)
    assert len(digests) == 1


def test_it_agrees_with_a_python_set_across_several_doublings() -> None:
    """Many random digests, with repeats, over five doublings: the same members as a set."""
    count = INITIAL_CAPACITY * 2**5
    pool = random_digests(count, seed=9)
    rng = random.Random(10)
    digests, expected = DigestSet(), set()

    for digest in pool + rng.sample(pool, count // 4):
        assert digests.add(digest) == (digest not in expected)
        expected.add(digest)

    assert len(digests) == len(expected) == count
    assert all(d in digests for d in pool)
    assert not any(d in digests for d in random_digests(1000, seed=11))
    assert set(digests) == expected


def test_digests_sharing_a_prefix_are_two() -> None:
    """The whole 16 bytes count: digests alike but for their last byte are two members."""
    one, two = bytes(range(16)), bytes(range(15)) + b"\xff"

    digests = DigestSet([one])

    assert two not in digests
    assert digests.add(two)
    assert len(digests) == 2


def straddling_pair(seed: int) -> tuple[bytes, bytes, bytes]:
    """Two digests of one home bucket, and the digest made of the tail of one and head of the
    other, which has that home bucket too: stored side by side, `find` would match across."""
    rng = random.Random(seed)

    def home(digest: bytes) -> int:  # as DigestSet picks it, while it has INITIAL_BUCKETS
        return hash(digest) & (INITIAL_BUCKETS - 1)

    first = rng.randbytes(SLOT)
    while True:
        second = rng.randbytes(SLOT)
        straddling = first[SLOT // 2 :] + second[: SLOT // 2]
        if home(second) == home(straddling) == home(first):
            return first, second, straddling


def test_a_match_straddling_two_slots_is_not_a_member() -> None:
    """The tail of one stored digest and the head of the next is not a member, until added."""
    first, second, straddling = straddling_pair(seed=5)
    digests = DigestSet([first, second])

    assert straddling not in digests
    assert digests.add(straddling)
    assert straddling in digests
    assert len(digests) == 3


def test_the_zero_digest_is_a_digest_like_any_other() -> None:
    """The all-zero digest is absent until added, then present once, among others."""
    zero = bytes(SLOT)
    digests = DigestSet(random_digests(100, seed=1))

    assert zero not in digests
    assert digests.add(zero)
    assert not digests.add(zero)
    assert zero in digests
    assert len(digests) == 101
    assert zero in set(digests)


def test_update_adds_every_digest_once() -> None:
    """`update` adds each digest of an iterable; repeats are counted once."""
    digests = DigestSet([key_digest("a")])

    digests.update([key_digest("a"), key_digest("b"), key_digest("b")])

    assert set(digests) == {key_digest("a"), key_digest("b")}


def test_a_digest_of_another_length_is_refused() -> None:
    """A value that is not 16 bytes raises ValueError rather than matching part of a slot."""
    digests = DigestSet([bytes(range(16))])

    with pytest.raises(ValueError, match="16 bytes, not 8"):
        digests.add(bytes(range(8)))
    with pytest.raises(ValueError, match="16 bytes, not 8"):
        _ = bytes(range(8)) in digests


def test_a_value_that_is_not_bytes_is_refused() -> None:
    """A str or a bytearray raises TypeError, as it could never be a stored digest."""
    digests = DigestSet()
    name: object = "0123456789abcdef"

    with pytest.raises(TypeError, match="not str"):
        _ = name in digests
    with pytest.raises(TypeError, match="not bytearray"):
        digests.add(bytearray(SLOT))  # type: ignore[arg-type]  # the refusal is the point


def test_a_digest_costs_at_most_twice_its_share_of_the_load() -> None:
    """Past the first table, memory is under 2 x 16 / MAX_LOAD bytes a digest (40), no objects."""
    count = INITIAL_CAPACITY * 8 + 1
    digests = DigestSet(random_digests(count, seed=3))

    assert sys.getsizeof(digests) < 2 * SLOT / MAX_LOAD * count + 1024
