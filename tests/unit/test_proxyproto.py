"""The PROXY protocol reader: v1/v2 headers parsed and bounded, and the connection handed on with the partner's address."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon import proxyproto
from daemon.proxyproto import V1_MAX, V2_MAX, V2_SIGNATURE, HeaderError, ProxyHeader, ProxyTrust, parse

SSH = b"SSH-2.0-OpenSSH_9.6\r\n"


def v2(command: int = 1, family: int = 0x11, body: bytes | None = None, version: int = 2) -> bytes:
    """A v2 header built by hand from the spec (not by the library under test)."""
    if body is None:
        body = ipaddress.ip_address("203.0.113.7").packed + ipaddress.ip_address("10.0.0.5").packed
        body += struct.pack("!HH", 50123, 2222)
    return V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", len(body)) + body


def v2_tcp6(source: str, port: int = 40000) -> bytes:
    body = ipaddress.ip_address(source).packed + ipaddress.ip_address("2001:db8::1").packed
    return v2(family=0x21, body=body + struct.pack("!HH", port, 2222))


@pytest.mark.parametrize(
    ("header", "source"),
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.5 50123 2222\r\n", ("203.0.113.7", 50123)),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 50123 2222\r\n", ("2001:db8::7", 50123)),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", None),
        (v2(), ("203.0.113.7", 50123)),
        (v2_tcp6("2001:db8::7"), ("2001:db8::7", 40000)),
        (v2_tcp6("::ffff:198.51.100.9"), ("198.51.100.9", 40000)),  # one partner, one address for bans
        (v2(command=0, family=0, body=b""), None),  # LOCAL: the balancer's own health check
        (v2(command=0, family=0x11), None),  # LOCAL with addresses: they are ignored, as the spec says
        (v2(family=0x00, body=b""), None),  # PROXY over UNSPEC: no address to use
        (v2(body=v2().removeprefix(v2()[:16]) + b"\x04\x00\x03abc"), ("203.0.113.7", 50123)),  # with a TLV
    ],
)
def test_headers_give_the_partner_address_and_their_length(header: bytes, source: tuple[str, int] | None) -> None:
    found = parse(header + SSH)
    assert found is not None
    parsed, length = found
    assert parsed == ProxyHeader(1 if header.startswith(b"PROXY") else 2, source)
    assert length == len(header)  # what follows is the client's, untouched


@pytest.mark.parametrize("header", [b"PROXY TCP4 203.0.113.7 10.0.0.5 50123 2222\r\n", v2(), v2_tcp6("2001:db8::7")])
def test_a_truncated_header_waits_for_more(header: bytes) -> None:
    for cut in range(1, len(header)):
        assert parse(header[:cut]) is None, cut


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (SSH, "no PROXY protocol header"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "no PROXY protocol header"),
        (b"\x00" * 20, "no PROXY protocol header"),
        (b"PROXY TCP4 " + b"1" * 200, f"longer than {V1_MAX} bytes"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.5 50123 2222\n", "does not end with CRLF"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.5 +1 2222\r\n", "malformed"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.5 65536 2222\r\n", "malformed"),
        (b"PROXY TCP4 203.0.113.777 10.0.0.5 1 2222\r\n", "malformed"),
        (b"PROXY TCP4 2001:db8::7 10.0.0.5 1 2222\r\n", "malformed"),
        (b"PROXY TCP6 fe80::1%eth0 fe80::2 1 2222\r\n", "malformed"),  # a scope would make one address many
        (b"PROXY UDP4 203.0.113.7 10.0.0.5 1 2222\r\n", "malformed"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.5 1\r\n", "malformed"),
        (v2(version=1), "version 1"),
        (v2(command=2), "unknown command 2"),
        (v2(body=b"\x01" * 8), "too short for its address family"),
        (v2(family=0x21), "too short for its address family"),  # IPv6 needs 36 bytes, got IPv4's 12
        (v2(body=b"\x00" * (V2_MAX - 15)), f"over the {V2_MAX} allowed"),
    ],
)
def test_bad_headers_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(HeaderError, match=reason.replace("+", r"\+")):
        parse(data)


def test_an_oversized_v2_length_is_refused_before_its_bytes_arrive() -> None:
    # Only the fixed 16 bytes have come; the length field says 65535: nothing more is waited for.
    header = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 65535)
    with pytest.raises(HeaderError, match="over the"):
        parse(header)


@given(st.sampled_from([V2_SIGNATURE, b"PROXY "]), st.binary(max_size=V2_MAX + 64))
def test_any_bytes_after_a_signature_parse_refuse_or_wait_within_the_bounds(prefix: bytes, tail: bytes) -> None:
    data = prefix + tail
    try:
        found = parse(data)
    except HeaderError:
        return
    if found is None:  # waiting is only ever for a header that can still fit in its limit
        assert len(data) < (V2_MAX if prefix == V2_SIGNATURE else V1_MAX)
    else:
        assert 0 < found[1] <= len(data)


def test_trust_takes_addresses_networks_and_mapped_ipv4() -> None:
    trust = ProxyTrust(["10.1.0.0/16", "192.0.2.10", "2001:db8::/32"])
    assert trust.trusts("10.1.2.3") and trust.trusts("192.0.2.10") and trust.trusts("2001:db8::5")
    assert trust.trusts("::ffff:10.1.2.3")  # a dual-stack listener's view of an IPv4 balancer
    assert not trust.trusts("10.2.0.1") and not trust.trusts("192.0.2.11") and not trust.trusts("?")
    assert not ProxyTrust([])


# -- the reader in front of a real listening socket --------------------------------------------------------


class Recorder(asyncio.Protocol):
    """Stands for the SSH connection / HTTP handler: what address it is told, what bytes it gets."""

    def __init__(self, seen: list[Recorder]) -> None:
        self.peer: tuple[str, int] | None = None
        self.data = bytearray()
        self.transport: asyncio.BaseTransport | None = None
        seen.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.data.endswith(b"\n"):
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(b"echo " + bytes(self.data))


def exchange(trusted: list[str], chunks: list[bytes]) -> tuple[list[Recorder], bytes]:
    """Send `chunks` to a listener behind the reader; (the protocols it made, what the client got back)."""
    return asyncio.run(_exchange(trusted, chunks))


async def _exchange(trusted: list[str], chunks: list[bytes]) -> tuple[list[Recorder], bytes]:
    seen: list[Recorder] = []
    refused = proxyproto.RefusedHeaders(logging.getLogger("test.proxy"), "test")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        proxyproto.accepting(lambda: Recorder(seen), ProxyTrust(trusted), refused), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)  # separate segments: the header arrives in pieces
        if not chunks:
            writer.write_eof()  # connect and close, as a plain TCP health check does
        answer = await asyncio.wait_for(reader.read(1000), 10)
        writer.close()
    finally:
        server.close()
    return seen, answer


def test_a_trusted_peer_header_in_pieces_gives_the_partner_address_and_the_rest() -> None:
    header = v2()
    chunks = [header[:3], header[3:17], header[17:] + b"hel", b"lo\n"]
    seen, answer = exchange(["127.0.0.1"], chunks)
    [protocol] = seen
    assert protocol.peer == ("203.0.113.7", 50123)
    assert protocol.transport is not None
    assert protocol.transport.get_extra_info("proxy_peername")[0] == "127.0.0.1"
    assert bytes(protocol.data) == b"hello\n" and answer == b"echo hello\n"


def test_an_untrusted_peer_header_is_just_data() -> None:
    line = b"PROXY TCP4 203.0.113.7 10.0.0.5 50123 2222\r\n"
    seen, answer = exchange(["10.0.0.0/8"], [line])
    [protocol] = seen
    assert protocol.peer is not None and protocol.peer[0] == "127.0.0.1"
    assert answer == b"echo " + line  # nothing parsed: the protocol behind decides (a failed handshake)


def test_a_trusted_peer_without_a_header_is_closed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "test.proxy")
    seen, answer = exchange(["127.0.0.1"], [SSH])
    assert seen == [] and answer == b""
    [record] = [r for r in caplog.records if r.getMessage() == "proxy.header_refused"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["peer"] == "127.0.0.1" and fields["reason"] == "no PROXY protocol header"
    assert fields["received"].startswith("SSH-2.0-OpenSSH")


def test_a_trusted_peer_that_stalls_is_closed_after_the_header_timeout(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxyproto, "HEADER_TIMEOUT", 0.3)
    caplog.set_level(logging.WARNING, "test.proxy")
    seen, answer = exchange(["127.0.0.1"], [b"PROXY TCP4 203.0.113.7"])
    assert seen == [] and answer == b""
    [record] = [r for r in caplog.records if r.getMessage() == "proxy.header_refused"]
    assert "no complete PROXY header within 0.3s" in record.fields["reason"]  # type: ignore[attr-defined]


def test_refusals_from_one_balancer_are_summarised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "test.proxy")
    refused = proxyproto.RefusedHeaders(logging.getLogger("test.proxy"), "sftp", interval=3600)
    for _ in range(5):
        refused("10.0.0.2", "no PROXY protocol header", SSH)
    refused("10.0.0.3", "no PROXY protocol header", SSH)
    lines = [r for r in caplog.records if r.getMessage() == "proxy.header_refused"]
    assert [r.fields["peer"] for r in lines] == ["10.0.0.2", "10.0.0.3"]  # type: ignore[attr-defined]


def test_a_balancer_health_check_that_sends_nothing_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "test.proxy")
    seen, answer = exchange(["127.0.0.1"], [])
    assert seen == [] and answer == b""
    assert not [r for r in caplog.records if r.getMessage() == "proxy.header_refused"]
