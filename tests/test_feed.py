"""The machine feed: the list read up to its first machine up front, digests, discovery."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from collector.config import Config, load_config
from collector.errors import InputError
from collector.feed import MachineFeed, open_input, spool
from collector.logs import setup_logging
from collector.models import InvalidLine, Machine, RunStats, key_digest
from collector.sources import Deduper


def config_for(machines: str, **inputs: str) -> Config:
    overrides: dict[str, dict[str, Any]] = {"input": {"machines": machines, **inputs}}
    return load_config(None, {"COLLECTOR_API_CUSTOMER_ID": "cust1"}, overrides)


class TestKeyDigest:
    def test_every_spelling_of_a_name_has_one_digest(self) -> None:
        """The digest is of the normalised key: case and surrounding spaces do not matter."""
        assert key_digest("  CORP\\Web01 ") == key_digest("corp\\web01")
        assert key_digest("corp\\web01") != key_digest("corp\\web02")

    def test_a_digest_is_sixteen_bytes_however_long_the_name(self) -> None:
        """A 256-character name and a one-letter one take the same 16 bytes."""
        assert {len(key_digest(n)) for n in ("a", "x" * 256)} == {16}

    def test_the_dedupe_set_holds_digests(self) -> None:
        """The Deduper keeps fixed-size digests, not the names."""
        deduper = Deduper()
        deduper.add(Machine.from_name("CORP\\" + "W" * 200))

        assert set(deduper.seen) == {key_digest("corp\\" + "w" * 200)}


class TestOpenInput:
    def test_the_first_machine_is_kept(self, tmp_path: Path) -> None:
        """Reading up to the first machine loses nothing: the whole list still comes out."""
        path = tmp_path / "m.txt"
        path.write_text("# list\n\nweb01\nweb02\n")

        items = list(open_input(config_for(str(path)), None))

        assert [(m.line, m.name) for m in items if isinstance(m, Machine)] == [
            (3, "web01"),
            (4, "web02"),
        ]

    @pytest.mark.parametrize(
        ("name", "content"),
        [
            pytest.param("m.txt", "", id="empty"),
            pytest.param("m.txt", "# a\n\n  # b\n", id="comments"),
            pytest.param("m.csv", "Name,Site\n", id="csv-header"),
            pytest.param("m.ndjson", "\n\n", id="ndjson-blank"),
        ],
    )
    def test_a_list_without_a_machine_is_refused(
        self, tmp_path: Path, name: str, content: str
    ) -> None:
        """A list with nothing but blanks, comments or a header is an InputError naming it."""
        path = tmp_path / name
        path.write_text(content)

        with pytest.raises(InputError, match=f"^no machine in {re.escape(str(path))}: "):
            open_input(config_for(str(path)), None)

    def test_an_empty_stdin_is_named(self) -> None:
        """An empty standard input is refused as <stdin>."""
        with pytest.raises(InputError, match=r"^no machine in <stdin>: "):
            open_input(config_for("-"), io.StringIO(""))

    def test_a_csv_header_without_the_column_is_refused_at_once(self, tmp_path: Path) -> None:
        """The CSV header is checked when the input is opened, not once the run has started."""
        path = tmp_path / "m.csv"
        path.write_text("Host,Site\nweb01,a\n")

        with pytest.raises(InputError, match="no Name, MachineName, DnsName or Id column"):
            open_input(config_for(str(path)), None)

    def test_a_list_of_only_bad_lines_is_read(self, tmp_path: Path) -> None:
        """Bad lines are entries: they are reported as invalid_input, not refused as empty."""
        path = tmp_path / "m.txt"
        path.write_text("..\n")

        (item,) = open_input(config_for(str(path)), None)

        assert isinstance(item, InvalidLine)


def test_a_spooled_stdin_keeps_a_lone_cr() -> None:
    """Standard input copied for --strict is copied byte for byte: a bare CR stays a CR."""
    stdin = io.TextIOWrapper(io.BytesIO(b"web01\nweb\r02\n"), encoding="utf-8")

    copy = spool(stdin)

    assert copy is not None
    assert list(copy) == ["web01\n", "web\r02\n"]
    copy.close()


class TestDiscovery:
    @staticmethod
    async def listed(pages: list[list[dict[str, Any]]]) -> list[Machine | InvalidLine]:
        async def source() -> AsyncIterator[list[dict[str, Any]]]:
            for page in pages:
                yield page

        feed = MachineFeed(RunStats(), shard=None, committed=set())
        with anyio.fail_after(5):
            return [item async for item in feed.discover(source())]

    async def test_a_listed_dot_name_is_invalid_input(self) -> None:
        """A name of only dots from the API is an invalid entry, never a request."""
        items = await self.listed([[{"Name": "CORP\\A"}, {"Name": ".."}]])

        assert [type(i).__name__ for i in items] == ["Machine", "InvalidLine"]

    async def test_an_empty_site_warns(self) -> None:
        """An empty listing is not an error, but it is logged as a warning."""
        stream = io.StringIO()
        setup_logging("INFO", "text", stream=stream)
        try:
            items = await self.listed([[]])
        finally:
            setup_logging(stream=io.StringIO())  # detach the test's stream

        assert items == []
        assert "WARNING" in stream.getvalue()
        assert "the API listed no machine" in stream.getvalue()
