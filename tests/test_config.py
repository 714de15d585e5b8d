"""Configuration: precedence, validation messages, regions, secrets (SPEC 2 and 3)."""

from __future__ import annotations

import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from collector.config import (
    RESERVED_ENV_VARS,
    SECRET_KEYS,
    AuthMethod,
    Compression,
    Config,
    Mode,
    Region,
    config_keys,
    env_var_name,
    is_shared,
    key_specs,
    load_config,
    load_config_with_origins,
    public_dict,
    resolve_credentials,
)
from collector.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"
CUSTOMER = {"COLLECTOR_API_CUSTOMER_ID": "cust1"}


def write(tmp_path: Path, text: str, name: str = "config.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), CUSTOMER if env is None else env)


def setting(config: Config, section: str, key: str) -> Any:
    return getattr(getattr(config, section), key)


class TestPrecedence:
    @pytest.mark.parametrize(
        ("section", "key", "file_value", "env_value", "flag_value", "expected"),
        [
            pytest.param("collect", "rate", "3.0", "4", 5.0, (10.0, 3.0, 4.0, 5.0), id="rate"),
            pytest.param(
                "collect", "concurrency", "8", "16", 64, (32, 8, 16, 64), id="concurrency"
            ),
            pytest.param(
                "output",
                "dir",
                '"file"',
                "env",
                "flag",
                ("out", "file", "env", "flag"),
                id="dir",
            ),
            pytest.param(
                "input",
                "all_machines",
                "true",
                "no",
                True,
                (False, True, False, True),
                id="all_machines",
            ),
            pytest.param(
                "collect",
                "fields",
                '["Id", "A"]',
                "Id, B, C",
                ["Id", "D"],
                ((), ("Id", "A"), ("Id", "B", "C"), ("Id", "D")),
                id="fields",
            ),
            pytest.param(
                "collect",
                "mode",
                '"site-wide"',
                "per-machine",
                "site-wide",
                (Mode.PER_MACHINE, Mode.SITE_WIDE, Mode.PER_MACHINE, Mode.SITE_WIDE),
                id="mode",
            ),
        ],
    )
    def test_flag_beats_env_beats_file_beats_default(
        self,
        tmp_path: Path,
        section: str,
        key: str,
        file_value: str,
        env_value: str,
        flag_value: Any,
        expected: tuple[Any, Any, Any, Any],
    ) -> None:
        """Each layer, added on top of the ones below it, decides the value."""
        path = write(tmp_path, f"[{section}]\n{key} = {file_value}\n")
        env = {**CUSTOMER, env_var_name(section, key): env_value}
        flags = {section: {key: flag_value}}

        assert setting(load_config(None, CUSTOMER), section, key) == expected[0]
        assert setting(load_config(path, CUSTOMER), section, key) == expected[1]
        assert setting(load_config(path, env), section, key) == expected[2]
        assert setting(load_config(path, env, flags), section, key) == expected[3]

    def test_a_none_override_means_the_flag_was_not_given(self, tmp_path: Path) -> None:
        """A flag left at None does not hide the file's value."""
        path = write(tmp_path, "[collect]\nrate = 3\n")

        config = load_config(path, CUSTOMER, {"collect": {"rate": None}})

        assert config.collect.rate == 3.0

    def test_no_file_gives_the_defaults(self) -> None:
        """With path None every key has its dataclass default (customer_id aside)."""
        config = load_config(None, CUSTOMER)

        assert config.source == ""
        assert config.collect.concurrency == 32
        assert config.output.compress is Compression.NONE
        assert config.auth.method is AuthMethod.CLIENT_CREDENTIALS

    def test_source_is_the_path(self, tmp_path: Path) -> None:
        """The Config remembers which file it was read from."""
        path = write(tmp_path, "")

        assert load_config(path, CUSTOMER).source == path

    def test_env_variable_names_follow_the_scheme(self) -> None:
        """Every key's variable is COLLECTOR_<SECTION>_<KEY> in upper case."""
        assert env_var_name("api", "customer_id") == "COLLECTOR_API_CUSTOMER_ID"
        assert {spec.env_var for spec in key_specs().values()} >= {
            "COLLECTOR_COLLECT_RATE",
            "COLLECTOR_OUTPUT_DIR",
            "COLLECTOR_AUTH_CLIENT_SECRET_ENV",
        }


class TestFileErrors:
    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        """A config path that does not exist gives a ConfigError naming it."""
        path = str(tmp_path / "nope.toml")

        with pytest.raises(ConfigError, match=r"nope\.toml not found"):
            load_config(path, CUSTOMER)

    def test_a_directory_is_named(self, tmp_path: Path) -> None:
        """A directory given as the config file gives a ConfigError naming it."""
        with pytest.raises(ConfigError, match="is a directory"):
            load_config(str(tmp_path), CUSTOMER)

    def test_invalid_toml_names_the_line_and_column(self, tmp_path: Path) -> None:
        """tomllib's line and column are kept, after the path."""
        path = write(tmp_path, "[api]\nregion = \n")

        with pytest.raises(ConfigError) as info:
            load_config(path, CUSTOMER)

        assert str(info.value).startswith(f"{path}:2:10: invalid TOML")
        assert "line 2, column 10" in str(info.value)

    def test_a_byte_order_mark_is_accepted(self, tmp_path: Path) -> None:
        """A file saved by an editor with a BOM still loads."""
        path = tmp_path / "bom.toml"
        path.write_bytes(b"\xef\xbb\xbf[collect]\nrate = 2\n")

        assert load_config(str(path), CUSTOMER).collect.rate == 2.0

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param(
                "[collect]\nconcurrancy = 4\n",
                ':2: unknown key [collect] concurrancy; did you mean "concurrency"?',
                id="misspelt-key",
            ),
            pytest.param(
                "[colect]\nrate = 1\n",
                ':1: unknown section [colect]; did you mean "collect"?',
                id="misspelt-section",
            ),
            pytest.param(
                "[collect]\ndir = 'x'\n",
                ":2: unknown key [collect] dir; it belongs in [output]",
                id="key-in-wrong-section",
            ),
            pytest.param(
                "rate = 1\n",
                ":1: key rate must be inside a section: write it under [collect]",
                id="key-outside-sections",
            ),
            pytest.param(
                "[api]\nzzz = 1\n",
                ":2: unknown key [api] zzz; the keys of [api] are region, base_url",
                id="no-near-key",
            ),
            pytest.param(
                "[wholly_unrelated]\n",
                ":1: unknown section [wholly_unrelated]; the sections are [api]",
                id="no-near-section",
            ),
            pytest.param(
                'site = "x"\n',
                ":1: unknown key site; every key belongs in a section: [api], [auth]",
                id="unknown-top-level-key",
            ),
            pytest.param(
                "api = 3\n",
                ":1: [api] must be a table of keys, got 3",
                id="section-not-a-table",
            ),
        ],
    )
    def test_unknown_names_are_named_with_a_suggestion(
        self, tmp_path: Path, text: str, expected: str
    ) -> None:
        """An unknown section or key names the file, line and key, and the nearest valid one."""
        path = write(tmp_path, text)

        with pytest.raises(ConfigError) as info:
            load_config(path, CUSTOMER)

        assert str(info.value).startswith(path)
        assert expected in str(info.value)

    @pytest.mark.parametrize(("key", "env_key"), sorted(SECRET_KEYS.items()))
    def test_secrets_in_the_file_are_refused(self, tmp_path: Path, key: str, env_key: str) -> None:
        """A secret-looking key is refused, naming its variable and never echoing its value."""
        path = write(tmp_path, f'[auth]\n{key} = "s3cr3t-value"\n')

        with pytest.raises(ConfigError) as info:
            load_config(path, CUSTOMER)

        message = str(info.value)
        assert f"[auth] {key} must not be in the configuration" in message
        assert f"named by [auth] {env_key}" in message
        assert "s3cr3t-value" not in message

    def test_a_secret_names_the_variable_the_file_chose(self, tmp_path: Path) -> None:
        """The message points to the variable the file's *_env key names."""
        path = write(tmp_path, '[auth]\nclient_secret_env = "MY_SECRET"\nclient_secret = "x"\n')

        with pytest.raises(ConfigError, match="Put it in the variable MY_SECRET"):
            load_config(path, CUSTOMER)

    def test_a_secret_at_the_top_level_is_refused(self, tmp_path: Path) -> None:
        """A password outside any section is refused as a secret, not just as unknown."""
        path = write(tmp_path, '# top\npassword = "x"\n')

        with pytest.raises(ConfigError) as info:
            load_config(path, CUSTOMER)

        assert str(info.value).startswith(f"{path}:2: password must not be in the configuration")


class TestEnvironment:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            pytest.param(
                "COLLECTOR_COLECT_RATE",
                "unknown environment variable COLLECTOR_COLECT_RATE; "
                "did you mean COLLECTOR_COLLECT_RATE?",
                id="misspelt",
            ),
            pytest.param(
                "COLLECTOR_API_CUSTOMERID",
                "did you mean COLLECTOR_API_CUSTOMER_ID?",
                id="missing-underscore",
            ),
            pytest.param(
                "COLLECTOR_XYZZY",
                "unknown environment variable COLLECTOR_XYZZY; settings are "
                "COLLECTOR_<SECTION>_<KEY>",
                id="no-near-variable",
            ),
            pytest.param(
                "COLLECTOR_AUTH_CLIENT_SECRET",
                "COLLECTOR_AUTH_CLIENT_SECRET: [auth] client_secret must not be in the "
                "configuration",
                id="secret-as-setting",
            ),
        ],
    )
    def test_unknown_variables_are_named_with_a_suggestion(self, name: str, expected: str) -> None:
        """An unknown COLLECTOR_* variable is an error naming it and the nearest valid one."""
        with pytest.raises(ConfigError) as info:
            load_config(None, {**CUSTOMER, name: "hidden-value"})

        assert expected in str(info.value)
        assert "hidden-value" not in str(info.value)

    def test_other_variables_are_ignored(self) -> None:
        """Variables without the COLLECTOR_ prefix, and reserved ones, are not settings."""
        env = {**CUSTOMER, "PATH": "/bin", "CITRIX_CLIENT_ID": "x"}
        env.update(dict.fromkeys(RESERVED_ENV_VARS, "site.toml"))

        assert load_config(None, env).collect.rate == 10.0

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("true", True, id="true"),
            pytest.param("FALSE", False, id="FALSE"),
            pytest.param("1", True, id="1"),
            pytest.param("0", False, id="0"),
            pytest.param("yes", True, id="yes"),
            pytest.param(" No ", False, id="No-padded"),
        ],
    )
    def test_booleans_read_common_words(self, text: str, expected: bool) -> None:
        """true/false, 1/0 and yes/no are read as booleans, in any case."""
        config = load_config(None, {**CUSTOMER, "COLLECTOR_API_VERIFY_TLS": text})

        assert config.api.verify_tls is expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("Id,State", ("Id", "State"), id="plain"),
            pytest.param(" Id , State ,", ("Id", "State"), id="spaces-and-trailing-comma"),
            pytest.param("", (), id="empty"),
        ],
    )
    def test_fields_are_comma_separated(self, text: str, expected: tuple[str, ...]) -> None:
        """COLLECTOR_COLLECT_FIELDS is a comma-separated list."""
        config = load_config(None, {**CUSTOMER, "COLLECTOR_COLLECT_FIELDS": text})

        assert config.collect.fields == expected

    def test_enum_values_are_case_insensitive(self) -> None:
        """COLLECTOR_API_REGION=EU selects the eu region."""
        config = load_config(None, {**CUSTOMER, "COLLECTOR_API_REGION": "EU"})

        assert config.api.region is Region.EU


class TestTypes:
    @pytest.mark.parametrize(
        ("toml", "expected"),
        [
            pytest.param(
                '[collect]\nrate = "fast"', '[collect] rate must be a number, got "fast"', id="rate"
            ),
            pytest.param(
                "[collect]\nconcurrency = 1.5",
                "[collect] concurrency must be an integer, got 1.5",
                id="concurrency-float",
            ),
            pytest.param(
                "[collect]\nmax_attempts = true",
                "[collect] max_attempts must be an integer, got true",
                id="bool-is-not-int",
            ),
            pytest.param(
                '[api]\nverify_tls = "yes"',
                '[api] verify_tls must be true or false, got "yes"',
                id="bool",
            ),
            pytest.param(
                '[api]\nregion = "usa"',
                '[api] region must be one of us, eu, ap-s, jp, onprem, got "usa"; '
                'did you mean "us"?',
                id="region",
            ),
            pytest.param(
                '[output]\ncompress = "zip"',
                '[output] compress must be one of none, gzip, got "zip"; did you mean "gzip"?',
                id="compress",
            ),
            pytest.param(
                '[collect]\nmode = "sitewide"',
                '[collect] mode must be one of per-machine, site-wide, got "sitewide"; '
                'did you mean "site-wide"?',
                id="mode",
            ),
            pytest.param(
                '[collect]\nfields = "Id"',
                '[collect] fields must be a list of strings, such as ["Id", "State"], got "Id"',
                id="fields-string",
            ),
            pytest.param(
                '[collect]\nfields = ["Id", ""]',
                '[collect] fields must not hold an empty name, got ["Id", ""]',
                id="fields-empty-name",
            ),
            pytest.param(
                "[collect]\nrate = inf",
                "[collect] rate must be a finite number, got inf",
                id="rate-inf",
            ),
            pytest.param(
                "[api]\nbase_url = 1",
                "[api] base_url must be a string, got 1",
                id="string",
            ),
        ],
    )
    def test_wrong_types_in_the_file(self, tmp_path: Path, toml: str, expected: str) -> None:
        """A value of the wrong type names the file, line, key and the value."""
        path = write(tmp_path, toml + "\n")

        with pytest.raises(ConfigError) as info:
            load_config(path, CUSTOMER)

        assert str(info.value) == f"{path}:2: {expected}"

    @pytest.mark.parametrize(
        ("name", "text", "expected"),
        [
            pytest.param(
                "COLLECTOR_COLLECT_RATE",
                "fast",
                '[collect] rate must be a number, got "fast"',
                id="rate",
            ),
            pytest.param(
                "COLLECTOR_COLLECT_CONCURRENCY",
                "8.5",
                '[collect] concurrency must be an integer, got "8.5"',
                id="concurrency",
            ),
            pytest.param(
                "COLLECTOR_API_VERIFY_TLS",
                "maybe",
                '[api] verify_tls must be true or false (or 1/0, yes/no), got "maybe"',
                id="bool",
            ),
            pytest.param(
                "COLLECTOR_COLLECT_RATE",
                "nan",
                "[collect] rate must be a finite number",
                id="nan",
            ),
            pytest.param(
                "COLLECTOR_INPUT_FORMAT",
                "xml",
                '[input] format must be one of auto, text, csv, ndjson, got "xml"',
                id="enum",
            ),
        ],
    )
    def test_wrong_types_in_the_environment(self, name: str, text: str, expected: str) -> None:
        """A variable that does not parse is named, with its key and value."""
        with pytest.raises(ConfigError) as info:
            load_config(None, {**CUSTOMER, name: text})

        assert str(info.value).startswith(f"{name}: {expected}")

    def test_flags_are_checked_too(self) -> None:
        """A bad override names the command line as its origin."""
        with pytest.raises(ConfigError, match=r"^command line: \[collect\] rate must be a number"):
            load_config(None, CUSTOMER, {"collect": {"rate": "fast"}})

    def test_unknown_flag_keys_are_refused(self) -> None:
        """An override for a key that does not exist is an error, not silently dropped."""
        with pytest.raises(ConfigError, match='did you mean "concurrency"'):
            load_config(None, CUSTOMER, {"collect": {"concurency": 3}})


class TestRanges:
    @pytest.mark.parametrize(
        ("section", "key", "value", "expected"),
        [
            pytest.param("collect", "concurrency", "0", "must be between 1 and 1024", id="conc-0"),
            pytest.param(
                "collect", "concurrency", "1025", "must be between 1 and 1024", id="conc-1025"
            ),
            pytest.param(
                "collect", "rate", "-1", "must be 0 (no client-side limit) or more", id="rate"
            ),
            pytest.param("collect", "max_attempts", "0", "must be at least 1", id="attempts"),
            pytest.param("collect", "max_backoff_s", "0", "must be more than 0", id="backoff"),
            pytest.param("collect", "request_timeout_s", "-5", "must be more than 0", id="timeout"),
            pytest.param("output", "max_records_per_file", "0", "must be at least 1", id="records"),
            pytest.param("output", "separator", '""', "must not be empty", id="separator"),
            pytest.param("output", "dir", '""', "must not be empty", id="dir"),
            pytest.param("input", "machines", '""', "machines is empty", id="machines"),
        ],
    )
    def test_out_of_range_values_are_named(
        self, tmp_path: Path, section: str, key: str, value: str, expected: str
    ) -> None:
        """A value out of its range names the file, line, key and the rule."""
        path = write(tmp_path, f"[{section}]\n{key} = {value}\n")

        with pytest.raises(ConfigError) as info:
            load_config(path, CUSTOMER)

        assert str(info.value).startswith(f"{path}:2: [{section}] {key}")
        assert expected in str(info.value)

    @pytest.mark.parametrize(
        ("env", "key", "expected"),
        [
            pytest.param({"COLLECTOR_COLLECT_CONCURRENCY": "1"}, "concurrency", 1, id="conc-1"),
            pytest.param(
                {"COLLECTOR_COLLECT_CONCURRENCY": "1024"}, "concurrency", 1024, id="conc-1024"
            ),
            pytest.param({"COLLECTOR_COLLECT_RATE": "0"}, "rate", 0.0, id="rate-0-no-limit"),
            pytest.param({"COLLECTOR_COLLECT_MAX_ATTEMPTS": "1"}, "max_attempts", 1, id="one-try"),
        ],
    )
    def test_boundaries_are_accepted(self, env: dict[str, str], key: str, expected: Any) -> None:
        """The ends of every range are valid values."""
        assert getattr(load_config(None, {**CUSTOMER, **env}).collect, key) == expected

    def test_range_errors_name_the_variable(self) -> None:
        """A range error from the environment names the variable it came from."""
        with pytest.raises(ConfigError, match=r"^COLLECTOR_COLLECT_CONCURRENCY: \[collect\]"):
            load_config(None, {**CUSTOMER, "COLLECTOR_COLLECT_CONCURRENCY": "0"})

    def test_an_env_key_must_be_a_variable_name(self, tmp_path: Path) -> None:
        """A secret pasted into client_secret_env is refused without being echoed."""
        path = write(tmp_path, '[auth]\nclient_secret_env = "abc+/=secret"\n')

        with pytest.raises(ConfigError) as info:
            load_config(path, CUSTOMER)

        assert "[auth] client_secret_env must be the name of an environment variable" in str(
            info.value
        )
        assert "abc+/=secret" not in str(info.value)

    def test_one_discovery_filter_at_a_time(self) -> None:
        """delivery_group and catalog cannot both be set."""
        env = {**CUSTOMER, "COLLECTOR_INPUT_DELIVERY_GROUP": "a", "COLLECTOR_INPUT_CATALOG": "b"}

        with pytest.raises(ConfigError, match="delivery_group or \\[input\\] catalog, not both"):
            load_config(None, env)

    def test_site_wide_mode_is_allowed(self) -> None:
        """mode = site-wide loads."""
        config = load_config(None, {**CUSTOMER, "COLLECTOR_COLLECT_MODE": "site-wide"})

        assert config.collect.mode is Mode.SITE_WIDE


class TestRegions:
    @pytest.mark.parametrize(
        ("region", "base_url", "token_host"),
        [
            pytest.param("us", "https://api.cloud.com", "https://api-us.cloud.com", id="us"),
            pytest.param("eu", "https://api.cloud.com", "https://api-eu.cloud.com", id="eu"),
            pytest.param("ap-s", "https://api.cloud.com", "https://api-ap-s.cloud.com", id="ap-s"),
            pytest.param("jp", "https://api.citrixcloud.jp", "https://api.citrixcloud.jp", id="jp"),
        ],
    )
    def test_cloud_regions_set_both_urls(self, region: str, base_url: str, token_host: str) -> None:
        """Each cloud region has its API host and its token host, with the customer id."""
        config = load_config(None, {**CUSTOMER, "COLLECTOR_API_REGION": region})

        assert config.api.base_url == base_url
        assert config.auth.token_url == f"{token_host}/cctrustoauth2/cust1/tokens/clients"

    def test_a_given_base_url_loses_its_trailing_slash(self) -> None:
        """base_url is kept as given, without a trailing slash."""
        env = {**CUSTOMER, "COLLECTOR_API_BASE_URL": "https://api-us.cloud.com/"}

        assert load_config(None, env).api.base_url == "https://api-us.cloud.com"

    @pytest.mark.parametrize(
        "placeholder",
        [pytest.param("{customer_id}", id="snake"), pytest.param("{customerId}", id="camel")],
    )
    def test_a_given_token_url_gets_the_customer_id(self, placeholder: str) -> None:
        """A placeholder in a user-given token_url is replaced by the customer id."""
        env = {**CUSTOMER, "COLLECTOR_AUTH_TOKEN_URL": f"https://t.example/{placeholder}/x/"}

        assert load_config(None, env).auth.token_url == "https://t.example/cust1/x"

    def test_cloud_needs_a_customer_id(self) -> None:
        """Without customer_id a cloud region says where to set it."""
        with pytest.raises(ConfigError) as info:
            load_config(None, {})

        assert "[api] customer_id is required" in str(info.value)
        assert "set [api] customer_id or COLLECTOR_API_CUSTOMER_ID" in str(info.value)

    def test_onprem_defaults_the_customer_id(self) -> None:
        """On-premises sends CitrixOnPremises and needs no customer id."""
        env = {
            "COLLECTOR_API_REGION": "onprem",
            "COLLECTOR_API_BASE_URL": "https://ddc.example.com",
            "COLLECTOR_AUTH_METHOD": "onprem",
        }

        config = load_config(None, env)

        assert config.api.customer_id == "CitrixOnPremises"
        assert config.api.base_url == "https://ddc.example.com"
        assert config.auth.token_url == ""

    def test_onprem_needs_a_base_url(self) -> None:
        """Region onprem without base_url asks for the Delivery Controller's address."""
        with pytest.raises(ConfigError, match=r"needs \[api\] base_url.*COLLECTOR_API_BASE_URL"):
            load_config(None, {"COLLECTOR_API_REGION": "onprem"})

    def test_onprem_method_needs_a_base_url(self) -> None:
        """The onprem method against a cloud default URL is refused."""
        env = {**CUSTOMER, "COLLECTOR_AUTH_METHOD": "onprem"}

        with pytest.raises(ConfigError, match=r"^COLLECTOR_AUTH_METHOD: \[auth\] method"):
            load_config(None, env)

    def test_onprem_region_has_no_default_token_url(self) -> None:
        """client_credentials on-premises needs an explicit token_url or another method."""
        env = {"COLLECTOR_API_REGION": "onprem", "COLLECTOR_API_BASE_URL": "https://ddc"}

        with pytest.raises(ConfigError, match="has no Citrix Cloud token endpoint"):
            load_config(None, env)

    def test_bearer_needs_no_token_url(self) -> None:
        """The bearer method leaves token_url empty."""
        config = load_config(None, {**CUSTOMER, "COLLECTOR_AUTH_METHOD": "bearer"})

        assert config.auth.token_url == ""

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            pytest.param("api.cloud.com", "must be an http(s) URL", id="no-scheme"),
            pytest.param("https://api.cloud.com/cvad/manage", "leave out /cvad/manage", id="path"),
        ],
    )
    def test_bad_base_urls_are_refused(self, url: str, expected: str) -> None:
        """A base_url without a scheme or with the API path is refused."""
        env = {**CUSTOMER, "COLLECTOR_API_BASE_URL": url}

        with pytest.raises(ConfigError, match=r"^COLLECTOR_API_BASE_URL: \[api\] base_url") as info:
            load_config(None, env)

        assert expected in str(info.value)


class TestCredentials:
    @pytest.mark.parametrize(
        ("method", "env", "expected"),
        [
            pytest.param(
                "client_credentials",
                {"CITRIX_CLIENT_ID": "id\n", "CITRIX_CLIENT_SECRET": "sec ret\n"},
                {"client_id": "id", "client_secret": "sec ret"},
                id="client_credentials",
            ),
            pytest.param(
                "bearer",
                {"CITRIX_BEARER_TOKEN": " tok "},
                {"bearer_token": "tok"},
                id="bearer",
            ),
            pytest.param(
                "onprem",
                {"CITRIX_USERNAME": "DOM\\admin", "CITRIX_PASSWORD": "p w"},
                {"username": "DOM\\admin", "password": "p w"},
                id="onprem",
            ),
        ],
    )
    def test_each_method_reads_its_variables(
        self, method: str, env: dict[str, str], expected: dict[str, str]
    ) -> None:
        """The variables the method needs are read; a trailing newline is dropped."""
        config = load_config(
            None,
            {**CUSTOMER, "COLLECTOR_AUTH_METHOD": method, "COLLECTOR_API_BASE_URL": "https://d"},
        )

        credentials = resolve_credentials(config, env)

        for attr, value in expected.items():
            assert getattr(credentials, attr) == value
        for value in expected.values():
            assert value not in repr(credentials)

    @pytest.mark.parametrize(
        ("env", "missing"),
        [
            pytest.param({}, ["CITRIX_CLIENT_ID", "CITRIX_CLIENT_SECRET"], id="both"),
            pytest.param({"CITRIX_CLIENT_ID": "the-id"}, ["CITRIX_CLIENT_SECRET"], id="secret"),
            pytest.param(
                {"CITRIX_CLIENT_SECRET": "the-secret", "CITRIX_CLIENT_ID": "  "},
                ["CITRIX_CLIENT_ID"],
                id="blank-id",
            ),
        ],
    )
    def test_missing_variables_are_named(self, env: dict[str, str], missing: list[str]) -> None:
        """A missing variable is named; no value present in the environment is shown."""
        config = load_config(None, CUSTOMER)

        with pytest.raises(ConfigError) as info:
            resolve_credentials(config, env)

        message = str(info.value)
        for name in missing:
            assert name in message
        for value in env.values():
            if value.strip():
                assert value not in message

    def test_the_configured_variable_is_read(self) -> None:
        """A renamed variable is the one read, and the one named when missing."""
        config = load_config(
            None,
            {
                **CUSTOMER,
                "COLLECTOR_AUTH_METHOD": "bearer",
                "COLLECTOR_AUTH_BEARER_TOKEN_ENV": "MY_TOKEN",
            },
        )

        assert resolve_credentials(config, {"MY_TOKEN": "t"}).bearer_token == "t"
        with pytest.raises(ConfigError, match="MY_TOKEN is not set"):
            resolve_credentials(config, {"CITRIX_BEARER_TOKEN": "t"})


class TestSecretFiles:
    @pytest.mark.parametrize(
        ("method", "files", "expected"),
        [
            pytest.param(
                "client_credentials",
                {"client_id_file": "the-id\n", "client_secret_file": "s3cret value\n"},
                {"client_id": "the-id", "client_secret": "s3cret value"},
                id="client_credentials",
            ),
            pytest.param(
                "bearer", {"bearer_token_file": "tok\n"}, {"bearer_token": "tok"}, id="bearer"
            ),
            pytest.param(
                "onprem",
                {"username_file": "DOM\\admin\n", "password_file": " p w \r\n"},
                {"username": "DOM\\admin", "password": " p w "},
                id="onprem",
            ),
        ],
    )
    def test_each_method_reads_its_files(
        self, tmp_path: Path, method: str, files: dict[str, str], expected: dict[str, str]
    ) -> None:
        """A secret given only as a file is read, trimmed of its final newline only."""
        env = {**CUSTOMER, "COLLECTOR_AUTH_METHOD": method, "COLLECTOR_API_BASE_URL": "https://d"}
        for key, text in files.items():
            path = tmp_path / key
            path.write_text(text, encoding="utf-8", newline="")
            path.chmod(0o600)
            env[f"COLLECTOR_AUTH_{key.upper()}"] = str(path)
        config = load_config(None, env)

        credentials = resolve_credentials(config, {})

        for attr, value in expected.items():
            assert getattr(credentials, attr) == value
            assert credentials.sources[attr].startswith("file ")

    def test_the_variable_wins_over_the_file(self, tmp_path: Path) -> None:
        """When a secret is both in its variable and in its file, the variable's value is used."""
        secret = tmp_path / "secret"
        secret.write_text("from-file\n")
        secret.chmod(0o600)
        config = load_config(None, {**CUSTOMER, "COLLECTOR_AUTH_CLIENT_SECRET_FILE": str(secret)})

        credentials = resolve_credentials(
            config, {"CITRIX_CLIENT_ID": "i", "CITRIX_CLIENT_SECRET": "from-env"}
        )

        assert credentials.client_secret == "from-env"
        assert credentials.sources["client_secret"] == "CITRIX_CLIENT_SECRET"

    def test_a_missing_file_is_named_with_its_key(self, tmp_path: Path) -> None:
        """A secret file that does not exist is refused naming the key and the path."""
        path = tmp_path / "nope"
        config = load_config(None, {**CUSTOMER, "COLLECTOR_AUTH_CLIENT_SECRET_FILE": str(path)})

        with pytest.raises(ConfigError) as info:
            resolve_credentials(config, {"CITRIX_CLIENT_ID": "i"})

        assert "[auth] client_secret_file" in str(info.value)
        assert str(path) in str(info.value)

    def test_an_empty_file_is_refused(self, tmp_path: Path) -> None:
        """A secret file holding only a newline is refused, naming the file and the variable."""
        path = tmp_path / "secret"
        path.write_text("\n")
        path.chmod(0o600)
        config = load_config(None, {**CUSTOMER, "COLLECTOR_AUTH_CLIENT_SECRET_FILE": str(path)})

        with pytest.raises(ConfigError, match=r"is empty.*CITRIX_CLIENT_SECRET"):
            resolve_credentials(config, {"CITRIX_CLIENT_ID": "i"})

    def test_missing_secrets_name_the_file_keys_too(self) -> None:
        """With neither a variable nor a file, the message names both ways to give the secret."""
        config = load_config(None, CUSTOMER)

        with pytest.raises(ConfigError) as info:
            resolve_credentials(config, {"CITRIX_CLIENT_ID": "i"})

        assert "CITRIX_CLIENT_SECRET" in str(info.value)
        assert "[auth] client_secret_file" in str(info.value)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
    def test_an_unreadable_file_says_permission_denied(self, tmp_path: Path) -> None:
        """A secret file the user cannot read is refused naming the file."""
        path = tmp_path / "secret"
        path.write_text("x")
        path.chmod(0o000)
        config = load_config(None, {**CUSTOMER, "COLLECTOR_AUTH_CLIENT_SECRET_FILE": str(path)})

        with pytest.raises(ConfigError, match="permission denied"):
            resolve_credentials(config, {"CITRIX_CLIENT_ID": "i"})

    def test_a_file_others_can_read_is_warned_of(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A secret file readable by group or others works, with a warning that hides the value."""
        path = tmp_path / "secret"
        path.write_text("Very-Secret-Value\n")
        path.chmod(0o644)
        config = load_config(None, {**CUSTOMER, "COLLECTOR_AUTH_CLIENT_SECRET_FILE": str(path)})

        with caplog.at_level(logging.WARNING, logger="collector.config"):
            credentials = resolve_credentials(config, {"CITRIX_CLIENT_ID": "i"})

        assert credentials.client_secret == "Very-Secret-Value"
        assert str(path) in caplog.text
        assert "chmod 600" in caplog.text
        assert "Very-Secret-Value" not in caplog.text

    def test_a_private_file_is_not_warned_of(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A secret file only its owner can read gives no warning."""
        path = tmp_path / "secret"
        path.write_text("v")
        path.chmod(0o400)
        config = load_config(None, {**CUSTOMER, "COLLECTOR_AUTH_CLIENT_SECRET_FILE": str(path)})

        with caplog.at_level(logging.WARNING, logger="collector.config"):
            resolve_credentials(config, {"CITRIX_CLIENT_ID": "i"})

        assert caplog.text == ""


class TestSharedSecretFile:
    @pytest.mark.parametrize(
        ("mode", "gid", "expected"),
        [
            pytest.param(0o600, 50, False, id="owner-only"),
            pytest.param(0o400, 50, False, id="owner-read-only"),
            pytest.param(0o644, 7, True, id="others-read"),
            pytest.param(0o640, 50, True, id="a-group-we-are-not-in"),
            pytest.param(0o440, 7, False, id="our-own-group-as-kubernetes-fsgroup"),
        ],
    )
    def test_who_else_may_read(self, mode: int, gid: int, expected: bool) -> None:
        """Others, or a group we are not in, make a secret file shared; our own group does not."""
        assert is_shared(mode, gid, frozenset({7})) is expected


class TestFieldsProjection:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("State,UserName", 'leaves out "Id"', id="no-id"),
            pytest.param("Id,Machine.Name", "nested path (Machine.Name)", id="dot"),
            pytest.param("Id,Machine/Name", "nested path (Machine/Name)", id="slash"),
        ],
    )
    def test_unusable_projections_are_refused(self, text: str, expected: str) -> None:
        """A projection without Id, or with a nested path, is refused saying why."""
        with pytest.raises(ConfigError) as info:
            load_config(None, {**CUSTOMER, "COLLECTOR_COLLECT_FIELDS": text})

        assert expected in str(info.value)
        assert "COLLECTOR_COLLECT_FIELDS" in str(info.value)

    def test_a_projection_keeping_id_is_accepted(self) -> None:
        """Top-level names that include Id are kept as given."""
        config = load_config(None, {**CUSTOMER, "COLLECTOR_COLLECT_FIELDS": "Id,State,Machine"})

        assert config.collect.fields == ("Id", "State", "Machine")

    def test_the_file_line_is_named(self, tmp_path: Path) -> None:
        """A projection refused in the file names the file and line."""
        path = write(tmp_path, '[collect]\nfields = ["State"]\n')

        with pytest.raises(ConfigError, match=r"config\.toml:2: \[collect\] fields leaves out"):
            load_config(path, CUSTOMER)


class TestUserInfo:
    @pytest.mark.parametrize(
        ("name", "url"),
        [
            pytest.param("COLLECTOR_API_BASE_URL", "http://admin:Hunter2pw@ddc", id="base-url"),
            pytest.param(
                "COLLECTOR_AUTH_TOKEN_URL", "https://admin:Hunter2pw@idp/token", id="token-url"
            ),
            pytest.param("COLLECTOR_API_BASE_URL", "admin:Hunter2pw@ddc", id="no-scheme"),
        ],
    )
    def test_a_url_with_a_password_is_refused_without_showing_it(self, name: str, url: str) -> None:
        """A URL holding user:password@ is a configuration error that never shows the password."""
        with pytest.raises(ConfigError) as info:
            load_config(None, {**CUSTOMER, name: url})

        assert "must not hold a user name or password" in str(info.value)
        assert "Hunter2pw" not in str(info.value)
        assert info.value.exit_code == 2


class TestOrigins:
    def test_each_value_says_where_it_came_from(self, tmp_path: Path) -> None:
        """Origins name the file and line, the variable or the command line; defaults are absent."""
        path = write(tmp_path, "[collect]\nrate = 3.0\n")

        _, origins = load_config_with_origins(
            path, {**CUSTOMER, "COLLECTOR_COLLECT_CONCURRENCY": "4"}, {"output": {"dir": "x"}}
        )

        assert origins[("collect", "rate")] == f"{path}:2"
        assert origins[("collect", "concurrency")] == "COLLECTOR_COLLECT_CONCURRENCY"
        assert origins[("output", "dir")] == "command line"
        assert ("collect", "max_attempts") not in origins


class TestPublicDict:
    def test_it_is_plain_json(self) -> None:
        """Enums become strings and tuples lists, so json.dumps takes it as is."""
        env = {**CUSTOMER, "COLLECTOR_COLLECT_FIELDS": "Id,State"}

        data = json.loads(json.dumps(public_dict(load_config(None, env))))

        assert data["api"]["region"] == "us"
        assert data["collect"]["fields"] == ["Id", "State"]
        assert data["auth"]["client_secret_env"] == "CITRIX_CLIENT_SECRET"

    def test_it_has_every_key(self) -> None:
        """Every configuration key appears, under its section."""
        data = public_dict(load_config(None, CUSTOMER))

        keys = {(s, k) for s, table in data.items() if isinstance(table, dict) for k in table}
        assert keys == config_keys()

    def test_it_holds_no_secret(self) -> None:
        """Secrets in the environment never reach the public dict."""
        env = {**CUSTOMER, "CITRIX_CLIENT_ID": "id-value", "CITRIX_CLIENT_SECRET": "secret-value"}
        config = load_config(None, env)
        resolve_credentials(config, env)

        text = json.dumps(public_dict(config))

        assert "secret-value" not in text
        assert "id-value" not in text


class TestExampleFile:
    def test_it_loads(self) -> None:
        """config.example.toml loads once a customer id is given."""
        config = load_config(str(EXAMPLE), CUSTOMER)

        assert config.api.customer_id == "cust1"

    def test_it_documents_exactly_the_valid_keys(self) -> None:
        """Every key in the example is valid, and every valid key is in the example."""
        data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))

        keys = {(section, key) for section, table in data.items() for key in table}

        assert keys == config_keys()

    def test_it_shows_the_defaults(self) -> None:
        """Each value in the example is the key's default."""
        data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
        specs = key_specs()

        for (section, key), spec in specs.items():
            value = data[section][key]
            default = spec.default
            if isinstance(default, tuple):
                value = tuple(value)
            assert value == default, f"[{section}] {key}"

    def test_every_key_is_commented(self) -> None:
        """Each key line of the example carries a one-line comment."""
        lines = EXAMPLE.read_text(encoding="utf-8").splitlines()

        for line in lines:
            if "=" in line and not line.startswith("#"):
                assert " # " in line, line
