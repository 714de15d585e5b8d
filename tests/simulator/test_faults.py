"""Fault decisions, profiles, the token bucket and the error bodies, as pure functions."""

from __future__ import annotations

import random

import orjson
import pytest

from collector.simulator import PROFILES, Fault, Faults, profile
from collector.simulator.faults import (
    BAD_GATEWAY,
    GATEWAY_TIMEOUT,
    Decision,
    RetryHint,
    TokenBucket,
    decide,
    fault_reply,
    rate_limit_header,
    spoil,
    throttled,
    unavailable,
)
from tests.conftest import load_fixture


@pytest.mark.parametrize(
    ("knob", "fault"),
    [
        pytest.param("p_429", Fault.THROTTLED, id="429"),
        pytest.param("p_500", Fault.SERVER_ERROR, id="500"),
        pytest.param("p_502", Fault.BAD_GATEWAY, id="502"),
        pytest.param("p_503", Fault.UNAVAILABLE, id="503"),
        pytest.param("p_504", Fault.GATEWAY_TIMEOUT, id="504"),
        pytest.param("p_reset", Fault.RESET, id="reset"),
        pytest.param("p_hang", Fault.HANG, id="hang"),
        pytest.param("p_truncated", Fault.TRUNCATED, id="truncated"),
        pytest.param("p_invalid_json", Fault.INVALID_JSON, id="invalid-json"),
    ],
)
def test_a_certain_fault_is_always_chosen(knob: str, fault: Fault) -> None:
    """A probability of 1.0 makes every decision that fault."""
    faults = Faults()
    setattr(faults, knob, 1.0)
    rng = random.Random(1)
    decisions = [decide(faults, rng) for _ in range(50)]

    assert {d.fault if d else None for d in decisions} == {fault}


def test_no_fault_without_odds() -> None:
    """With every probability at 0, no request gets a fault."""
    rng = random.Random(1)

    assert all(decide(Faults(), rng) is None for _ in range(1000))


def test_odds_are_roughly_kept() -> None:
    """Over many draws each fault comes at about its probability."""
    faults = Faults(p_429=0.1, p_503=0.2)
    rng = random.Random(2)
    drawn = [decide(faults, rng) for _ in range(20_000)]
    share = {f: sum(1 for d in drawn if d and d.fault is f) / 20_000 for f in Fault}

    assert 0.09 < share[Fault.THROTTLED] < 0.11
    assert 0.19 < share[Fault.UNAVAILABLE] < 0.21
    assert share[Fault.RESET] == 0


def test_decisions_are_a_function_of_the_rng() -> None:
    """The same seed gives the same sequence of decisions."""
    faults = PROFILES["hostile"]
    first = [decide(faults, random.Random(3)) for _ in range(3)]

    assert first == [decide(faults, random.Random(3)) for _ in range(3)]


def test_random_429s_carry_retry_after_half_the_time() -> None:
    """About half the random 429s say Retry-After; the rest only the body's retryDelay."""
    rng = random.Random(4)
    decisions = [decide(Faults(p_429=1.0), rng) for _ in range(2000)]
    with_header = sum(1 for d in decisions if d and d.with_header)

    assert 900 < with_header < 1100


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param("header", {True}, id="header"),
        pytest.param("body", {False}, id="body"),
        pytest.param("mixed", {True, False}, id="mixed"),
    ],
)
def test_rate_limit_hint_mode(mode: RetryHint, expected: set[bool]) -> None:
    """The rate limiter's 429s use the header, the body only, or both kinds."""
    faults = Faults(retry_after=mode)
    rng = random.Random(5)

    assert {rate_limit_header(faults, rng) for _ in range(100)} == expected


class TestProfiles:
    def test_hostile_has_the_documented_odds(self) -> None:
        """hostile: 1% 429, 3% 503, 2% 502, 1% resets, 1% truncated, a short token life."""
        hostile = profile("hostile")

        assert (hostile.p_429, hostile.p_503, hostile.p_502) == (0.01, 0.03, 0.02)
        assert (hostile.p_reset, hostile.p_truncated) == (0.01, 0.01)
        assert hostile.token_lifetime_s <= 5

    def test_flaky_is_milder(self) -> None:
        """flaky neither resets nor hangs, and fails less often than hostile."""
        flaky, hostile = profile("flaky"), profile("hostile")

        assert flaky.p_reset == flaky.p_hang == 0
        odds = ("p_429", "p_500", "p_502", "p_503", "p_504", "p_reset", "p_truncated")
        assert sum(getattr(flaky, k) for k in odds) < sum(getattr(hostile, k) for k in odds)

    def test_none_injects_nothing(self) -> None:
        """none has no fault at all and an hour-long token."""
        assert profile("none") == Faults()
        assert Faults().token_lifetime_s == 3600

    def test_a_profile_is_a_fresh_copy(self) -> None:
        """Changing the Faults a profile gave does not change the profile."""
        mine = profile("flaky")
        mine.p_500 = 1.0
        mine.fail_machines.add("x")

        assert PROFILES["flaky"].p_500 != 1.0
        assert not PROFILES["flaky"].fail_machines

    def test_an_unknown_profile_names_the_known_ones(self) -> None:
        """An unknown profile name raises ValueError listing the known profiles."""
        with pytest.raises(ValueError, match="none, flaky, hostile"):
            profile("chaos")


class TestTokenBucket:
    def test_a_burst_passes_then_the_rate_holds(self) -> None:
        """A full bucket lets `burst` requests through at once, then one per 1/rate seconds."""
        bucket = TokenBucket(rate=10.0, burst=3.0)

        assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert bucket.take(0.0) == pytest.approx(0.1)
        assert bucket.take(0.1) == 0.0
        assert bucket.take(0.1) > 0

    def test_it_refills_only_up_to_the_burst(self) -> None:
        """After a long pause no more than `burst` requests pass at once."""
        bucket = TokenBucket(rate=10.0, burst=2.0)
        bucket.take(0.0)
        passed = sum(1 for _ in range(10) if bucket.take(100.0) == 0.0)

        assert passed == 2

    def test_it_holds_the_rate_over_time(self) -> None:
        """Requests every millisecond for 2 s: about rate * 2 + burst pass."""
        bucket = TokenBucket(rate=50.0, burst=5.0)
        passed = sum(1 for ms in range(2000) if bucket.take(ms / 1000) == 0.0)

        assert 100 <= passed <= 106


class TestBodies:
    def test_throttled_matches_the_documented_body(self) -> None:
        """The 429 body is Citrix's rateLimitExceeded with retryDelay as a string."""
        reply = throttled(4, with_header=False)
        documented = load_fixture("error-bodies.json")["rate_limited"]

        assert reply.status == 429
        assert orjson.loads(reply.body) == documented
        assert reply.headers == ()

    def test_throttled_rounds_up_and_can_say_retry_after(self) -> None:
        """A 0.2 s wait is announced as 1 second, in Retry-After when asked."""
        reply = throttled(0.2, with_header=True)

        assert dict(reply.headers) == {"Retry-After": "1"}
        assert orjson.loads(reply.body)["parameters"] == [{"name": "retryDelay", "value": "1"}]

    def test_unavailable_has_parameters_as_an_object(self) -> None:
        """The 503 body's parameters are an object, as the documented real answer has them."""
        body = orjson.loads(unavailable(4).body)

        assert body == load_fixture("error-bodies.json")["unavailable_params_object"]

    def test_gateway_answers_are_not_json_and_carry_no_transaction_id(self) -> None:
        """502 is the documented HTML page, 504 plain text; neither has a transaction id."""
        html = load_fixture("error-bodies.json")["bad_gateway_html"]

        assert (BAD_GATEWAY.status, BAD_GATEWAY.body.decode()) == (502, html)
        assert BAD_GATEWAY.content_type == "text/html"
        assert GATEWAY_TIMEOUT.status == 504
        assert not BAD_GATEWAY.transaction_id and not GATEWAY_TIMEOUT.transaction_id

    @pytest.mark.parametrize(
        ("legacy", "keys"),
        [
            pytest.param(True, {"ErrorMessage", "SdkErrorId"}, id="legacy"),
            pytest.param(False, {"activityId", "message", "statusCode"}, id="activity"),
        ],
    )
    def test_500_comes_in_two_shapes(self, legacy: bool, keys: set[str]) -> None:
        """A 500 is either the ErrorMessage/SdkErrorId shape or the activityId shape."""
        reply = fault_reply(Decision(Fault.SERVER_ERROR, legacy=legacy), Faults(), "a-b")

        assert reply is not None and reply.status == 500
        assert keys <= set(orjson.loads(reply.body))

    @pytest.mark.parametrize(
        "fault", [Fault.RESET, Fault.HANG, Fault.TRUNCATED, Fault.INVALID_JSON]
    )
    def test_faults_without_an_error_status_have_no_reply(self, fault: Fault) -> None:
        """Resets, hangs and spoiled bodies are carried out by the server, not as a reply."""
        assert fault_reply(Decision(fault), Faults(), "x") is None

    @pytest.mark.parametrize("fault", [Fault.TRUNCATED, Fault.INVALID_JSON])
    def test_spoiled_bodies_do_not_parse(self, fault: Fault) -> None:
        """A truncated or invalid body is not JSON any more; a truncated one is half as long."""
        body = orjson.dumps({"Items": [{"Id": "x" * 40}]})
        spoiled = spoil(body, fault)

        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(spoiled)
        if fault is Fault.TRUNCATED:
            assert spoiled == body[: len(body) // 2]
