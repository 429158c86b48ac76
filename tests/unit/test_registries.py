"""The registries at the extension points agree with what the config and the outbox accept."""

from __future__ import annotations

import typing

from daemon.config import SinkConfig, load_config
from daemon.sinks import DRIVERS, open_sink
from notifier.channels import CHANNELS, email_channel, webhook_channel


def test_every_sink_driver_the_config_accepts_is_registered_and_opens_its_own_sink(tmp_path) -> None:
    accepted = set(typing.get_args(SinkConfig.model_fields["driver"].annotation))
    assert accepted == set(DRIVERS)
    for name in accepted:
        config = load_config(environ={"INGESTD_DATA_DIR": str(tmp_path), "INGESTD_SINK__DRIVER": name})
        assert open_sink(config).name == name
    assert not (tmp_path / "sink.sqlite3").exists()  # opening creates nothing until start()


def test_only_the_embedded_sink_is_refused_for_several_nodes() -> None:
    assert {name for name, d in DRIVERS.items() if not d.shared} == {"sqlite"}


def test_outbox_channels_group_emails_by_domain_and_webhooks_by_url() -> None:
    assert set(CHANNELS) == {"email", "webhook"}
    assert email_channel("Ana <ana@Example.COM>") == email_channel("bo@example.com") == "email:example.com"
    assert webhook_channel("https://hooks.example/a") != webhook_channel("https://hooks.example/b")
