"""The secret registry: every echoed form of a secret is replaced, short secrets included."""

from __future__ import annotations

import pytest

from collector.redact import Redactor

SECRET = "Xy9/+abc==tail"


@pytest.mark.parametrize(
    "echoed",
    [
        pytest.param("Xy9/+abc==tail", id="as-is"),
        pytest.param("Xy9%2F%2Babc%3D%3Dtail", id="percent-encoded"),
        pytest.param("Xy9%2f%2babc%3d%3dtail", id="percent-encoded-lowercase"),
        pytest.param("Xy9/%2Babc%3D%3Dtail", id="path-encoded"),
    ],
)
def test_every_encoded_form_is_replaced(echoed: str) -> None:
    """The secret as is, percent-encoded with or without `/` kept, in either hex case, is ***."""
    redactor = Redactor()
    redactor.register(SECRET)

    assert redactor.redact(f"client_secret={echoed}&x=1") == "client_secret=***&x=1"


def test_the_form_encoded_space_is_replaced() -> None:
    """A space in a secret is `+` in a form body, and that form is replaced too."""
    redactor = Redactor()
    redactor.register("pass phrase")

    assert redactor.redact("client_secret=pass+phrase") == "client_secret=***"


def test_the_json_escaped_form_is_replaced() -> None:
    """A secret with a quote in it, echoed inside a JSON string, is replaced."""
    redactor = Redactor()
    redactor.register('a"b\\c')

    assert redactor.redact('{"detail": "a\\"b\\\\c"}') == '{"detail": "***"}'


def test_a_short_secret_is_replaced() -> None:
    """There is no minimum length: a five-character secret is replaced."""
    redactor = Redactor()
    redactor.register("Qz7pX")

    assert redactor.redact("secret Qz7pX refused") == "secret *** refused"


def test_the_longest_form_wins() -> None:
    """A secret that holds another registered secret is replaced whole."""
    redactor = Redactor()
    redactor.register("abc")
    redactor.register("abcdef")

    assert redactor.redact("x abcdef y") == "x *** y"


def test_an_empty_value_is_ignored() -> None:
    """Registering an empty secret (an unset variable) changes nothing."""
    redactor = Redactor()
    redactor.register("")

    assert redactor.redact("nothing to hide") == "nothing to hide"


def test_values_are_redacted_deep() -> None:
    """Strings inside dicts and lists are redacted, other values left alone."""
    redactor = Redactor()
    redactor.register("s3cr3t")

    value = {"url": "https://u:s3cr3t@h", "n": 1, "list": ["s3cr3t", None]}

    assert redactor.redact_values(value) == {
        "url": "https://u:***@h",
        "n": 1,
        "list": ["***", None],
    }


def test_the_ascii_escaped_json_form_is_replaced() -> None:
    """A non-ASCII secret, echoed by a JSON encoder that escapes it as \\uXXXX, is replaced."""
    redactor = Redactor()
    redactor.register("pässwörd")

    assert redactor.redact('"p\\u00e4ssw\\u00f6rd"') == '"***"'
