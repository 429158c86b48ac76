"""Which SSH algorithms the listener offers: the built-in lists, `sftp.*` overrides checked against asyncssh."""

from __future__ import annotations

from dataclasses import dataclass

import asyncssh
from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs
from asyncssh.packet import PacketDecodeError, SSHPacket

from daemon.config import SFTPConfig
from daemon.errors import ConfigError

# What OpenSSH 9's sshd offers, without SHA-1 (as OpenSSH 9 has it off for kex and signatures; we drop
# hmac-sha1 too). Servers don't choose: the client takes the first of *its* list that the server offers
# (see move_to_fast_cipher for how OpenSSH still ends up on AES-GCM).
ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
]
# ETM MACs first; plain hmac-sha2 for clients without ETM (SSH.NET before 2024, older JSch, appliances).
# The umac ones exist only where asyncssh finds libnettle.
MAC_ALGS = [
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
]
# The ciphers asyncssh runs fastest (AES-NI through OpenSSL, no separate MAC). bench/sftp_upload.py, 1 GiB
# with OpenSSH's sftp, CPU of the daemon: AES-GCM 2.6 s, aes128-ctr + umac-64-etm 2.9 s, chacha20-poly1305
# 4.3 s (and half sshd's throughput).
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# Host key signatures; no "ssh-rsa" (SHA-1). The host keys are ed25519, ECDSA P-256 and RSA 3072.
HOST_KEY_ALGS = ["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"]


def _weak(name: str) -> bool:
    """SHA-1 or MD5 based (hmac-sha1-etm@openssh.com, diffie-hellman-group14-sha1, ssh-rsa signatures)."""
    return name in ("ssh-rsa", "ssh-dss") or bool({"sha1", "md5"} & set(name.split("@")[0].split("-")))


def _names(algs: list[bytes]) -> list[str]:
    # GSS-API key exchanges need Kerberos, which we don't have.
    return [alg.decode() for alg in algs if not _weak(alg.decode()) and not alg.startswith(b"gss-")]


def supported() -> dict[str, list[str]]:
    """What each `sftp.*` algorithm key may name: asyncssh's algorithms here, minus SHA-1, MD5 and GSS-API."""
    return {
        "ciphers": _names(get_encryption_algs()),
        "macs": _names(get_mac_algs()),
        "kex_algorithms": _names(get_kex_algs()),
        "host_key_algorithms": list(HOST_KEY_ALGS),
    }


@dataclass(frozen=True)
class Algorithms:
    ciphers: list[str]
    macs: list[str]
    kex_algorithms: list[str]
    host_key_algorithms: list[str]
    prefer_fast: bool  # the built-in cipher list: move clients that can onto AES-GCM


def select_algorithms(config: SFTPConfig) -> Algorithms:
    """The lists to offer; an empty setting means the built-in list. ConfigError names the key and the choices."""
    choices = supported()
    builtin = {
        "ciphers": ENCRYPTION_ALGS,
        "macs": MAC_ALGS,
        "kex_algorithms": choices["kex_algorithms"],
        "host_key_algorithms": HOST_KEY_ALGS,
    }
    chosen: dict[str, list[str]] = {}
    for key, default in builtin.items():
        configured: list[str] = getattr(config, key)
        valid = choices[key]
        for name in configured:
            if name not in valid:
                if _weak(name):
                    reason = "is SHA-1 or MD5 based and not offered"
                elif key == "host_key_algorithms":
                    reason = "is not offered (the host keys are ed25519, ECDSA P-256 and RSA)"
                else:
                    reason = "is not a known algorithm"
                raise ConfigError(f"sftp.{key}: {name!r} {reason}; choose from {', '.join(valid)}")
        # Built-in names asyncssh lacks here (umac without libnettle) are left out, not an error.
        chosen[key] = list(dict.fromkeys(configured)) or [name for name in default if name in valid]
    return Algorithms(**chosen, prefer_fast=not config.ciphers)


def move_to_fast_cipher(conn: asyncssh.SSHServerConnection) -> bool:
    """If this connection's client can do AES-GCM but chose another cipher, re-key offering AES-GCM only.

    A server cannot choose the cipher: the client takes the first of its own list that the server offers, and
    OpenSSH lists chacha20-poly1305 and AES-CTR before AES-GCM. Offering AES-GCM only would shut out clients
    without it; so the first key exchange offers everything, and once a partner has logged in, a second one
    (any side may start one at any time, RFC 4253 section 9) offers only the AES-GCM ciphers the client listed.
    A client that lists none (or was told to use one cipher, `ssh -c aes128-ctr`) keeps what it chose. The cost
    is one more key exchange per login. True if that re-key was started.

    asyncssh has no public way to do this: it uses the connection's algorithm lists and its re-key call (read
    in asyncssh 2.24); if those change, the connection stays as it is (test_sftp_clients would notice).
    """
    try:
        if conn._kex is not None or not conn._kex_complete or conn._kexinit_sent:
            return False  # a key exchange is under way already
        kexinit = SSHPacket(conn._client_kexinit[1:])  # the client's KEXINIT: cookie, kex, host key, ciphers...
        kexinit.get_bytes(16)
        kexinit.get_namelist()
        kexinit.get_namelist()
        client_to_server, server_to_client = kexinit.get_namelist(), kexinit.get_namelist()
        if conn._enc_alg_cs.decode() in FAST_CIPHERS:
            return False
        offered = [alg for alg in conn._enc_algs if alg.decode() in FAST_CIPHERS]
        fast = [alg for alg in offered if alg in client_to_server and alg in server_to_client]
        if not fast:
            return False
        conn._enc_algs = fast  # for every later re-key of this connection too
        conn._send_kexinit()
        conn._kexinit_sent = True
    except (AttributeError, TypeError, PacketDecodeError):
        return False
    return True
