"""The `sftp.*` algorithm settings: built-in lists without SHA-1, configured lists checked against asyncssh."""

from __future__ import annotations

import pytest

from daemon.config import SFTPConfig, load_config
from daemon.errors import ConfigError
from daemon.sftp.algorithms import ENCRYPTION_ALGS, HOST_KEY_ALGS, select_algorithms, supported


def test_builtin_lists_have_ctr_and_gcm_and_no_sha1() -> None:
    chosen = select_algorithms(SFTPConfig())
    assert chosen.ciphers == ENCRYPTION_ALGS and chosen.prefer_fast
    assert {"aes128-ctr", "aes256-ctr", "aes128-gcm@openssh.com"} <= set(chosen.ciphers)
    assert {"hmac-sha2-256", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512"} <= set(chosen.macs)
    assert chosen.host_key_algorithms == HOST_KEY_ALGS
    assert "curve25519-sha256" in chosen.kex_algorithms
    for names in (chosen.macs, chosen.kex_algorithms, chosen.host_key_algorithms):
        assert not [name for name in names if "sha1" in name or "md5" in name or name.startswith("gss-")]
    assert "ssh-rsa" not in chosen.host_key_algorithms


def test_a_configured_list_is_kept_in_its_order_without_repeats_and_turns_the_rekey_off() -> None:
    config = load_config(environ={"INGESTD_SFTP__CIPHERS": "aes256-ctr, aes128-ctr, aes256-ctr"})
    chosen = select_algorithms(config.sftp)
    assert chosen.ciphers == ["aes256-ctr", "aes128-ctr"] and not chosen.prefer_fast
    # The others keep their built-in lists.
    assert chosen.macs == select_algorithms(SFTPConfig()).macs


@pytest.mark.parametrize(
    ("key", "name", "reason"),
    [
        ("ciphers", "aes128-gcm", "is not a known algorithm"),
        ("macs", "hmac-sha1-etm@openssh.com", "is SHA-1 or MD5 based and not offered"),
        ("kex_algorithms", "gss-curve25519-sha256", "is not a known algorithm"),
        ("host_key_algorithms", "ssh-ed448", "is not offered (the host keys are ed25519, ECDSA P-256 and RSA)"),
        ("host_key_algorithms", "ssh-rsa", "is SHA-1 or MD5 based and not offered"),
    ],
)
def test_an_unknown_name_names_the_key_and_the_choices(key: str, name: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        select_algorithms(SFTPConfig(**{key: [name]}))
    assert str(error.value) == f"sftp.{key}: {name!r} {reason}; choose from {', '.join(supported()[key])}"
