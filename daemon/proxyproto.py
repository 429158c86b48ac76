"""The PROXY protocol (v1 text, v2 binary) on the SFTP and HTTP ports: the partner's real address behind a
load balancer listed in `sftp.proxy_protocol_from`; from every other address nothing is read."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from proxyprotocol import ProxyProtocolIncompleteError
from proxyprotocol.result import ProxyResultIPv4, ProxyResultIPv6
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from daemon.logs import event

# The header's framing (where it ends, how long it may be) is ours: the connection's first bytes arrive in
# pieces, glued to what the client sends next, and must be bounded. Decoding a framed header (addresses,
# TLVs, their CRC32C) is the proxy-protocol library's.
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the spec's longest v1 line, CRLF included ("PROXY UNKNOWN" + two full IPv6 addresses + ports)
# What a v1 line may hold, checked before decoding: plain decimal ports, no IPv6 scope ("%eth0").
_V1_LINE = re.compile(
    rb"PROXY (?:UNKNOWN(?: [^\r\n]*)?"
    rb"|TCP4 [0-9.]{7,15} [0-9.]{7,15} [0-9]{1,5} [0-9]{1,5}"
    rb"|TCP6 [0-9A-Fa-f:.]{2,45} [0-9A-Fa-f:.]{2,45} [0-9]{1,5} [0-9]{1,5})\r\n"
)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/protocol, length
V2_MAX = 4096  # a whole v2 header: addresses and TLVs; HAProxy's, even with SSL and AWS TLVs, is far below
# The address block each v2 family needs at least (the length may be more: TLVs follow).
V2_ADDRESS_SIZE = {0x1: 12, 0x2: 36, 0x3: 216}  # AF_INET, AF_INET6, AF_UNIX
HEADER_TIMEOUT = 5.0  # seconds a trusted peer gets to send its whole header (a balancer sends it at once)
REFUSED_LOG_INTERVAL = 10.0  # one refusal line per balancer per interval; the others are counted in it


class HeaderError(ValueError):
    """The connection's first bytes are not a valid PROXY protocol header; the message says why."""


@dataclass(frozen=True)
class ProxyHeader:
    version: int  # 1 or 2
    # The partner's (address, port); None for v2 LOCAL (the balancer's own health check), v1 UNKNOWN and
    # families without an IP address: then the connection's own address stands, as the spec says.
    source: tuple[str, int] | None


def parse(data: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    """(header, its length in bytes) once `data` starts with a whole header; None while more bytes are needed.

    HeaderError when `data` cannot start with one, or the header is over its size limit. Reads nothing past
    V1_MAX / V2_MAX bytes, so a peer cannot make us buffer more."""
    if data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)]:
        return _parse_v2(data) if len(data) >= V2_FIXED else None
    if data[: len(V1_PREFIX)] == V1_PREFIX[: len(data)]:
        return _parse_v1(data)
    raise HeaderError("no PROXY protocol header")


def _parse_v1(data: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise HeaderError(f"PROXY v1 header longer than {V1_MAX} bytes")
        return None
    if data[end - 1 : end] != b"\r":
        raise HeaderError("PROXY v1 header does not end with CRLF")
    line = bytes(data[: end + 1])
    if not _V1_LINE.fullmatch(line):
        raise HeaderError("PROXY v1 header is malformed")
    try:
        result = ProxyProtocolV1().unpack(line)
    except (ValueError, ProxyProtocolIncompleteError) as exc:  # the library's syntax errors are ValueErrors
        raise HeaderError(f"PROXY v1 header is malformed ({exc or type(exc).__name__})") from None
    return ProxyHeader(1, _source(result)), end + 1


def _parse_v2(data: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    version, command = data[12] >> 4, data[12] & 0x0F
    family = data[13] >> 4
    length = V2_FIXED + int.from_bytes(data[14:16], "big")
    if version != 2:
        raise HeaderError(f"PROXY v2 header with version {version}")
    if command not in (0x0, 0x1):  # LOCAL, PROXY
        raise HeaderError(f"PROXY v2 header with unknown command {command}")
    if length > V2_MAX:
        raise HeaderError(f"PROXY v2 header of {length} bytes, over the {V2_MAX} allowed")
    if command == 0x1 and length - V2_FIXED < V2_ADDRESS_SIZE.get(family, 0):
        raise HeaderError(f"PROXY v2 header too short for its address family ({length} bytes)")
    if len(data) < length:
        return None
    try:
        result = ProxyProtocolV2().unpack(bytes(data[:length]))
    except (ValueError, struct.error, ProxyProtocolIncompleteError) as exc:  # checksum errors are ValueErrors
        raise HeaderError(f"PROXY v2 header is malformed ({exc or type(exc).__name__})") from None
    return ProxyHeader(2, _source(result) if command == 0x1 else None), length


def _source(result: object) -> tuple[str, int] | None:
    if not isinstance(result, ProxyResultIPv4 | ProxyResultIPv6):
        return None  # UNKNOWN / UNSPEC, AF_UNIX: no partner address to use
    address, port = result.source
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # one partner, one address: bans and per-source limits key on it
    return str(address), int(port)


class ProxyTrust:
    """The addresses and networks of `sftp.proxy_protocol_from`: only these send a PROXY header."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(network, strict=False) for network in networks]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 balancers as ::ffff:a.b.c.d
        return any(ip in network for network in self.networks)


class ProxiedTransport(asyncio.Transport):
    """The connection's transport, but its `peername` is the partner's address from the PROXY header (and
    `proxy_peername` the balancer's). Reading goes to the protocol directly; this only sits on writes."""

    def __init__(self, transport: asyncio.Transport, peername: tuple[str, int]) -> None:
        super().__init__()
        self._transport = transport
        self._info = {"peername": peername, "proxy_peername": transport.get_extra_info("peername")}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._info:
            return self._info[name]
        return self._transport.get_extra_info(name, default)

    def write(self, data: Any) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._transport.abort()

    def close(self) -> None:
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class RefusedHeaders:
    """Logs a trusted peer's refused header at once, then at most once per REFUSED_LOG_INTERVAL per peer
    (with how many were left out meanwhile): a misconfigured balancer must not flood the log."""

    _KEEP = 1000  # peers remembered; they are configured balancers, so few

    def __init__(self, logger: logging.Logger, port: str, interval: float = REFUSED_LOG_INTERVAL) -> None:
        self.logger = logger
        self.port = port
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}  # peer -> (when last logged, refused since)

    def __call__(self, peer: str, reason: str, received: bytes) -> None:
        now = time.monotonic()
        logged, since = self._last.get(peer, (float("-inf"), 0))
        if now - logged < self.interval:
            self._last[peer] = (logged, since + 1)
            return
        if len(self._last) >= self._KEEP:
            self._last.clear()
        self._last[peer] = (now, 0)
        event(
            self.logger,
            "proxy.header_refused",
            logging.WARNING,
            port=self.port,
            peer=peer,
            reason=reason,
            received=repr(received[:16])[2:-1],  # escaped: what came instead says what the balancer lacks
            also_refused=since or None,
        )


def accepting(
    factory: Callable[[], asyncio.BaseProtocol], trust: ProxyTrust, refused: RefusedHeaders
) -> Callable[[], asyncio.BaseProtocol]:
    """A protocol factory for `loop.create_server`: connections from `trust` first give their PROXY header,
    then `factory`'s protocol takes over with the partner's address; all others go straight to it."""
    if not trust:
        return factory
    return lambda: _HeaderFirst(factory, trust, refused)


class _HeaderFirst(asyncio.Protocol):
    def __init__(self, factory: Callable[[], asyncio.BaseProtocol], trust: ProxyTrust, refused: RefusedHeaders) -> None:
        self._factory = factory
        self._trust = trust
        self._refused = refused
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._peer = "?"
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        if not peer or not self._trust.trusts(str(peer[0])):
            self._hand_over(transport, transport, b"")  # a PROXY header from here is just bad input
            return
        self._transport = transport
        self._peer = str(peer[0])
        self._timer = asyncio.get_running_loop().call_later(HEADER_TIMEOUT, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return  # refused already; the close is on its way
        self._buffer += data
        try:
            found = parse(self._buffer)
        except HeaderError as exc:
            self._refuse(str(exc))
            return
        if found is None:
            return
        header, length = found
        self._cancel_timer()
        transport, self._transport = self._transport, None
        seen: asyncio.Transport = transport if header.source is None else ProxiedTransport(transport, header.source)
        self._hand_over(transport, seen, bytes(self._buffer[length:]))
        self._buffer = bytearray()

    def eof_received(self) -> bool | None:
        if self._transport is not None:
            if self._buffer:
                self._refuse("the connection closed before the PROXY header was complete")
            else:  # a balancer's plain TCP health check: connects and closes, nothing to report
                self._transport.close()
                self._transport = None
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._transport = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._refuse(f"no complete PROXY header within {HEADER_TIMEOUT:g}s")

    def _refuse(self, reason: str) -> None:
        self._cancel_timer()
        assert self._transport is not None
        self._refused(self._peer, reason, bytes(self._buffer))
        self._transport.abort()
        self._transport = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _hand_over(self, transport: asyncio.Transport, seen: asyncio.Transport, rest: bytes) -> None:
        protocol = self._factory()
        transport.set_protocol(protocol)
        protocol.connection_made(seen)
        # The protocol may have handed the transport on (the SFTP gate gives it to the SSH connection) or
        # closed it: what the client sent after the header goes to whoever holds it now.
        if rest and not transport.is_closing():
            current = transport.get_protocol()
            assert isinstance(current, asyncio.Protocol)
            current.data_received(rest)
