"""A set of 16-byte digests kept in one flat buffer, for the key sets that grow with a list.

A `set[bytes]` of 16-byte digests spends about 90 bytes on each: a 49-byte `bytes` object
(64 once the allocator rounds it) and a 16-byte hash-table entry at a load of at most 3/5.
`DigestSet` keeps only the digests, back to back in one `bytearray`: a hash table of buckets
of BUCKET slots, each filled from its start, with a count of the slots used in each. A digest
costs between 16/MAX_LOAD and 32/MAX_LOAD bytes (20 to 40), and there is no object per entry.
The counts, not zero bytes, say which slots are used, so the all-zero digest is like any other.

The whole digest is stored and compared, never a shorter prefix of it: two machines whose
digests shared a prefix would otherwise be one, and the second would be dropped without a
word. No I/O; of `collector`, only `models` is imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Set

from collector.models import KEY_DIGEST_SIZE

SLOT = KEY_DIGEST_SIZE  # 16 bytes: the only digests this holds
# Slots a bucket: a lookup is one `bytearray.find` over the used part of a bucket, a C scan of
# at most 256 bytes, rather than a Python loop over slots.
BUCKET = 16
BUCKET_BYTES = BUCKET * SLOT
INITIAL_BUCKETS = 64  # 16 KiB: a list of some hundreds of machines never grows the table
# The share of slots in use at which the table doubles. A full bucket sends new digests on
# to the next; at 0.8 about 3 buckets in 10 are full, so a lookup is one `find`, at times two
# or three. Much higher and runs of full buckets lengthen; lower, memory grows for nothing.
MAX_LOAD = 0.8


class DigestSet(Set[bytes]):
    """A set of 16-byte `bytes` values (key digests): `add`, `in`, `len`, iteration.

    `add` and `in` raise `ValueError` if a value is not 16 bytes long, and `TypeError` if it
    is not `bytes`.
    """

    __slots__ = ("_fill", "_limit", "_mask", "_table", "_used")

    def __init__(self, digests: Iterable[bytes] = ()) -> None:
        self._used = 0
        self._resize(INITIAL_BUCKETS)
        self.update(digests)

    def __len__(self) -> int:
        return self._used

    def __contains__(self, digest: object) -> bool:
        return self._room(checked(digest)) < 0

    def __iter__(self) -> Iterator[bytes]:
        return stored(self._table, self._fill)

    def __sizeof__(self) -> int:
        return object.__sizeof__(self) + self._table.__sizeof__() + self._fill.__sizeof__()

    def add(self, digest: bytes) -> bool:
        """Add `digest`: True if it is new, False if it was in the set already."""
        if self._used >= self._limit:
            self._grow()
        bucket = self._room(checked(digest))
        if bucket < 0:
            return False
        used = self._fill[bucket]
        at = bucket * BUCKET_BYTES + used * SLOT
        self._table[at : at + SLOT] = digest
        self._fill[bucket] = used + 1
        self._used += 1
        return True

    def update(self, digests: Iterable[bytes]) -> None:
        for digest in digests:
            self.add(digest)

    def _room(self, digest: bytes) -> int:
        """-1 if `digest` is in the set, else the bucket it goes in.

        A digest goes in its home bucket (picked by `hash()`, which is salted per process, so
        no list can be made to pile into one bucket) or, if that is full, in the first bucket
        after it with room. The search stops there: nothing is ever removed, so nothing of
        this digest can lie beyond it.
        """
        table, fill, mask = self._table, self._fill, self._mask
        bucket = hash(digest) & mask
        while True:
            base = bucket * BUCKET_BYTES
            used = fill[bucket]
            end = base + used * SLOT
            at = table.find(digest, base, end)
            if at >= 0 and at % SLOT:
                at = next_aligned(table, digest, at, end)
            if at >= 0:
                return -1
            if used < BUCKET:
                return bucket
            bucket = (bucket + 1) & mask

    def _grow(self) -> None:
        """Double the table and put every digest back in its new bucket.

        Each digest is in the old table once, so it goes in the first bucket with room from
        its home, with no search for it: this runs once per digest per doubling.
        """
        old = stored(self._table, self._fill)  # read from the old table as the new one fills
        self._resize(2 * len(self._fill))
        table, fill, mask = self._table, self._fill, self._mask
        for digest in old:
            bucket = hash(digest) & mask
            while fill[bucket] == BUCKET:
                bucket = (bucket + 1) & mask
            at = bucket * BUCKET_BYTES + fill[bucket] * SLOT
            table[at : at + SLOT] = digest
            fill[bucket] += 1

    def _resize(self, buckets: int) -> None:
        """Empty buckets, a power of two of them so that a mask of the hash picks one."""
        self._table = bytearray(buckets * BUCKET_BYTES)
        self._fill = bytearray(buckets)  # slots used in each bucket, from its start
        self._mask = buckets - 1
        self._limit = int(buckets * BUCKET * MAX_LOAD)


def stored(table: bytearray, fill: bytearray) -> Iterator[bytes]:
    """The digests in `table`, bucket by bucket, each bucket's `fill` slots from its start."""
    for bucket, used in enumerate(fill):
        base = bucket * BUCKET_BYTES
        for at in range(base, base + used * SLOT, SLOT):
            yield bytes(table[at : at + SLOT])


def checked(digest: object) -> bytes:
    """`digest`, if it is 16 `bytes`; raises `TypeError` or `ValueError` otherwise."""
    if not isinstance(digest, bytes):
        raise TypeError(f"a digest is bytes, not {type(digest).__name__}")
    if len(digest) != SLOT:
        raise ValueError(f"a digest is {SLOT} bytes, not {len(digest)}")
    return digest


def next_aligned(table: bytearray, needle: bytes, at: int, end: int) -> int:
    """The first slot from `at` to `end` equal to `needle`, or -1.

    `at` is where `find` matched across two slots, the tail of one digest and the head of
    the next; the search goes on from the next slot.
    """
    while at >= 0 and at % SLOT:
        at = table.find(needle, at - at % SLOT + SLOT, end)
    return at
