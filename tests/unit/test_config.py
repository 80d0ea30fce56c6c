"""Settings: defaults, a TOML file, the environment over both, and clear errors."""

import os
from pathlib import Path

import pytest

from integration.adapters.rabbitmq import BrokerSettings, connection_parameters
from integration.config import MOST, Settings
from integration.errors import ConfigurationError


def _settings_file(tmp_path: Path, text: str) -> dict[str, str]:
    """A settings file holding `text`, as the environment that names it."""
    config = tmp_path / "c.toml"
    config.write_text(text)
    return {"INTEGRATION_CONFIG": str(config)}


def test_defaults_run_on_a_laptop() -> None:
    settings = Settings.from_env({"HOME": "/home/anna"})
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672/hjerterehab"
    assert settings.audit_dsn == "sqlite:////home/anna/.local/state/hjerterehab-integration/audit.sqlite3"
    assert settings.prefetch == 100  # decision 29: a batch shares one confirm window


def test_the_default_audit_store_is_one_place_whatever_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = Settings.from_env({"XDG_STATE_HOME": "/var/lib"}).audit_dsn
    monkeypatch.chdir("/")
    assert Settings.from_env({"XDG_STATE_HOME": "/var/lib"}).audit_dsn == first
    assert first == "sqlite:////var/lib/hjerterehab-integration/audit.sqlite3"
    # XDG: a relative XDG_STATE_HOME is ignored
    assert Settings.from_env({"XDG_STATE_HOME": "state", "HOME": "/h"}).audit_dsn.startswith("sqlite:////h/.local/")


def test_a_relative_sqlite_path_is_made_absolute_when_read(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    dsn = Settings.from_env({"INTEGRATION_AUDIT_DSN": "sqlite:///data/audit.sqlite3"}).audit_dsn
    assert dsn == f"sqlite:///{tmp_path / 'data' / 'audit.sqlite3'}"


@pytest.mark.parametrize(
    ("variable", "named"),
    [
        ("INTEGRATION_BROKER_URLS", "INTEGRATION_BROKER_URLS (did you mean INTEGRATION_BROKER_URL?)"),
        ("INTEGRATION_AUDIT_DNS", "INTEGRATION_AUDIT_DNS (did you mean INTEGRATION_AUDIT_DSN?)"),
        ("INTEGRATION_COLOUR", "INTEGRATION_COLOUR:"),
    ],
)
def test_an_unknown_integration_variable_is_refused_naming_it(variable: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown environment variable") as refused:
        Settings.from_env({variable: "x"})
    assert named in str(refused.value)


def test_every_integration_variable_the_project_sets_is_known() -> None:
    """The tests, the Makefile, deploy/, .ci/run and the fault consumer: each INTEGRATION_* name they use."""
    import re

    from integration.config import PROJECT_ROOT

    places = [PROJECT_ROOT / "Makefile", PROJECT_ROOT / ".ci" / "run", PROJECT_ROOT / "README.md"]
    for folder in ("tests", "deploy", "bench", "integration"):
        places += [p for p in (PROJECT_ROOT / folder).rglob("*") if p.is_file()]
    names = set()
    for place in places:
        if place.exists() and place.suffix not in {".pyc", ".sqlite3"} and place != Path(__file__):
            names |= set(re.findall(r"INTEGRATION_[A-Z][A-Z0-9_]*[A-Z0-9]", place.read_text(errors="replace")))
    assert names, "no INTEGRATION_ names found"
    shaped = {"INTEGRATION_BROKER_URL": "amqp://h/v", "INTEGRATION_BOARD_TRUSTED_PROXIES": "10.0.0.1"}
    Settings.from_env(dict.fromkeys(names - {"INTEGRATION_CONFIG"}, "1") | shaped)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[integraton]\nprefetch = 5\n", "[integraton] (did you mean [integration]?)"),
        ("[integration]\nprefetch = 5\n[broker]\nurl = 'x'\n", "unknown table(s) [broker]"),
        ("prefetch = 5\n", "unknown table(s) [prefetch]"),
        ("", "no [integration] table"),
        ("[integration]\nbroker_urls = 'amqp://h/v'\n", "broker_urls (did you mean broker_url?)"),
    ],
    ids=["misspelled-table", "extra-table", "key-outside", "empty", "misspelled-key"],
)
def test_a_settings_file_with_a_name_we_do_not_know_is_refused(tmp_path: Path, text: str, named: str) -> None:
    config = _settings_file(tmp_path, text)
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(config)
    assert named in str(refused.value)


def test_file_then_environment(tmp_path: Path) -> None:
    config = _settings_file(
        tmp_path, '[integration]\nprefetch = 50\naudit_dsn = "postgresql://db/x"\nflows = "discharge"\n'
    )
    settings = Settings.from_env(config | {"INTEGRATION_PREFETCH": "7"})
    assert (settings.prefetch, settings.audit_dsn, settings.flows) == (7, "postgresql://db/x", ("discharge",))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INTEGRATION_PREFETCH": "many"}, "prefetch must be a whole number"),
        ({"INTEGRATION_PREFETCH": "0"}, "prefetch must be positive"),
        ({"INTEGRATION_CONFIG": "/no/such/file.toml"}, "cannot read the config file"),
    ],
)
def test_bad_settings_are_configuration_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize("key", sorted(MOST))
def test_every_whole_number_has_a_range_and_out_of_it_is_refused_naming_the_variable(key: str) -> None:
    """`INTEGRATION_PREFETCH=70000` was read, then crashed `run` (exit 70: AMQP's prefetch-count is 16 bits)."""
    most, unit, _ = MOST[key]
    name = f"INTEGRATION_{key.upper()}"
    related = {"INTEGRATION_HEART_FAILURE_VISITATION_WINDOW_DAYS": str(most)} if key == "visitation_window_days" else {}
    assert getattr(Settings.from_env({name: str(most)} | related), key) == most
    for value, says in [(most + 1, f"must be at most {most}{unit} ("), (0, "must be positive (")]:
        with pytest.raises(ConfigurationError) as refused:
            Settings.from_env({name: str(value)} | related)
        assert str(refused.value).startswith(f"{key} {says}") and f"{name} takes 1 to {most})" in str(refused.value)


@pytest.mark.parametrize("args", [(), ("--processes", "2")])
def test_a_prefetch_past_amqps_16_bits_is_exit_3_before_anything_starts(args: tuple[str, ...]) -> None:
    from tests.cli_runs import run_integration

    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_PREFETCH": "70000"}
    done = run_integration("run", *args, env=env, text=True, timeout=60)
    assert done.returncode == 3 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "prefetch must be at most 65535" in done.stderr and "INTEGRATION_PREFETCH takes 1 to 65535" in done.stderr


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("prefetch = 2.5", "prefetch must be a whole number (a TOML integer, unquoted), not a TOML float"),
        ("prefetch = true", "prefetch must be a whole number (a TOML integer, unquoted), not a TOML boolean"),
        ('prefetch = "20"', "prefetch must be a whole number (a TOML integer, unquoted), not a TOML string"),
        ("max_resends = 1979-05-27", "max_resends must be a whole number (a TOML integer, unquoted), not a TOML date"),
        ("audit_dsn = 5", "audit_dsn must be a string, not a TOML integer"),
        ('flows = ["discharge"]', "flows must be a string, not a TOML array"),
        ("broker_url = [1]", "broker_url must be a string or an array of strings, not a TOML array"),
    ],
    ids=["float", "boolean", "quoted", "date", "dsn-integer", "flows-array", "url-array-of-integers"],
)
def test_a_file_value_of_the_wrong_type_is_refused_naming_the_key(tmp_path: Path, line: str, says: str) -> None:
    """They were coerced without a word: 2.5 ran as 2, true as 1 (attack on issue 11, F9)."""
    config = _settings_file(tmp_path, f"[integration]\n{line}\n")
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(config)
    assert says in str(refused.value)


def test_the_right_types_are_read(tmp_path: Path) -> None:
    config = _settings_file(
        tmp_path, '[integration]\nprefetch = 7\nbroker_url = ["amqp://a/v", "amqp://b/v"]\nflows = "discharge"\n'
    )
    settings = Settings.from_env(config | {"INTEGRATION_MAX_RESENDS": "3"})
    assert (settings.prefetch, settings.broker_url, settings.max_resends) == (7, "amqp://a/v,amqp://b/v", 3)


@pytest.mark.parametrize("value", ["2.5", "true", "1e3", "+5", "1_000", " 20", "２０", ""])
def test_an_environment_value_that_is_not_digits_alone_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({"INTEGRATION_PREFETCH": value})
    assert "prefetch must be a whole number (INTEGRATION_PREFETCH: the digits 0-9 alone)" in str(refused.value)


def test_a_wrong_type_is_exit_3_with_one_line(tmp_path: Path) -> None:
    from tests.cli_runs import run_integration

    config = _settings_file(tmp_path, "[integration]\nprefetch = 2.5\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | config
    done = run_integration("outbound", "pending", env=env, text=True, timeout=60)
    assert done.returncode == 3 and len(done.stderr.splitlines()) == 1 and "prefetch" in done.stderr, done.stderr


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    config = _settings_file(tmp_path, "[integration]\nbroker = 'x'\n")
    with pytest.raises(ConfigurationError, match="unknown settings broker"):
        Settings.from_env(config)


def test_amqps_gets_tls_options() -> None:
    (params,) = connection_parameters(BrokerSettings("amqps://u:p@broker.example:5671/hjerterehab"))
    assert params.ssl_options is not None and params.port == 5671 and params.virtual_host == "hjerterehab"


def test_several_broker_urls_are_the_nodes_of_one_cluster_tried_in_order() -> None:
    settings = Settings.from_env({"INTEGRATION_BROKER_URL": "amqp://u:p@a:5672/v, amqp://u:p@b:5673/v,"})
    assert settings.broker_url == "amqp://u:p@a:5672/v,amqp://u:p@b:5673/v"
    first, second = connection_parameters(BrokerSettings(settings.broker_url))
    assert (first.host, first.port, second.host, second.port) == ("a", 5672, "b", 5673)


def test_a_broker_url_list_in_the_settings_file(tmp_path) -> None:
    config = _settings_file(tmp_path, '[integration]\nbroker_url = ["amqp://u:p@a/v", "amqp://u:p@b/v"]\n')
    assert Settings.from_env(config).broker_url == "amqp://u:p@a/v,amqp://u:p@b/v"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("amqp://u:p@a/v,amqp://u:p@b/other", "different vhosts"),
        ("http://u:secret@a/v", "not an amqp"),
        (" , ", "no broker URL"),
        ("amqp://u:secret@a:0/v", "the port must be 1 to 65535"),  # pika tried port 0, waiting forever
        ("amqp://u:secret@a/v?heartbeat=70000", "heartbeat must be 0 to 65535 seconds"),  # a refused login, it said
    ],
)
def test_broker_urls_that_cannot_work_are_configuration_errors(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as refused:
        connection_parameters(BrokerSettings(url))
    assert "secret" not in str(refused.value)


def test_tls_files_without_amqps_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not amqps"):
        connection_parameters(BrokerSettings("amqp://u:p@h/v", ca_file="/etc/ca.pem"))


def test_the_example_settings_file_is_valid() -> None:
    from integration.config import PROJECT_ROOT

    settings = Settings.from_env({"INTEGRATION_CONFIG": str(PROJECT_ROOT / "deploy" / "integration.example.toml")})
    assert settings.ack_timeout_minutes == 30 and settings.max_resends == 2 and settings.prefetch == 100
