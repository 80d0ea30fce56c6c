"""Settings: defaults, a TOML file, the environment over both, and clear errors."""

from pathlib import Path

import pytest

from integration.config import Settings
from integration.errors import ConfigurationError
from integration.runtime.rabbitmq import BrokerSettings, connection_parameters


def test_defaults_run_on_a_laptop() -> None:
    settings = Settings.from_env({})
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672/hjerterehab"
    assert settings.audit_dsn == "sqlite:///data/audit.sqlite3" and settings.prefetch == 20


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "integration.toml"
    config.write_text('[integration]\nprefetch = 50\naudit_dsn = "postgresql://db/x"\nflows = "discharge"\n')
    settings = Settings.from_env({"INTEGRATION_CONFIG": str(config), "INTEGRATION_PREFETCH": "7"})
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


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[integration]\nbroker = 'x'\n")
    with pytest.raises(ConfigurationError, match="unknown settings broker"):
        Settings.from_env({"INTEGRATION_CONFIG": str(config)})


def test_amqps_gets_tls_options() -> None:
    (params,) = connection_parameters(BrokerSettings("amqps://u:p@broker.example:5671/hjerterehab"))
    assert params.ssl_options is not None and params.port == 5671 and params.virtual_host == "hjerterehab"


def test_several_broker_urls_are_the_nodes_of_one_cluster_tried_in_order() -> None:
    settings = Settings.from_env({"INTEGRATION_BROKER_URL": "amqp://u:p@a:5672/v, amqp://u:p@b:5673/v,"})
    assert settings.broker_url == "amqp://u:p@a:5672/v,amqp://u:p@b:5673/v"
    first, second = connection_parameters(BrokerSettings(settings.broker_url))
    assert (first.host, first.port, second.host, second.port) == ("a", 5672, "b", 5673)


def test_a_broker_url_list_in_the_settings_file(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[integration]\nbroker_url = ["amqp://u:p@a/v", "amqp://u:p@b/v"]\n')
    assert Settings.from_env({"INTEGRATION_CONFIG": str(config)}).broker_url == "amqp://u:p@a/v,amqp://u:p@b/v"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("amqp://u:p@a/v,amqp://u:p@b/other", "different vhosts"),
        ("http://u:secret@a/v", "not an amqp"),
        (" , ", "no broker URL"),
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
    assert settings.ack_timeout_minutes == 30 and settings.max_resends == 2 and settings.prefetch == 20
