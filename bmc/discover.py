"""Find BMCs: an RMCP/ASF presence ping (UDP 623) to every address of a range.

One UDP socket sends a ping to each address (unanswered ones are pinged again
up to ``attempts`` times) and collects the pongs until ``timeout``; the whole
range is in flight at once, bounded by :data:`MAX_RANGE` addresses.
"""

import ipaddress
import os
import select
import socket
import struct
import time

from rackforge.bmc import errors

MAX_RANGE = 4096
ASF_IANA = 4542                 # 0x000011BE
PRESENCE_PING, PRESENCE_PONG = 0x80, 0x40


def parse_range(text):
    """``FIRST-LAST`` (or ``10.0.0.5-40``, or one address) -> list of IPv4 address strings.

    :raises: DiscoveryError
    """
    first, sep, last = text.strip().partition("-")
    try:
        lo = ipaddress.IPv4Address(first.strip())
        if not sep:
            hi = lo
        elif "." in last:
            hi = ipaddress.IPv4Address(last.strip())
        else:
            hi = ipaddress.IPv4Address(int(lo) & ~0xff | int(last))
    except ValueError as e:
        raise errors.DiscoveryError(value=text, why=str(e))
    if hi < lo:
        raise errors.DiscoveryError(value=text, why="the last address is below the first")
    if int(hi) - int(lo) + 1 > MAX_RANGE:
        raise errors.DiscoveryError(value=text, why="more than %d addresses" % MAX_RANGE)
    return [str(ipaddress.IPv4Address(i)) for i in range(int(lo), int(hi) + 1)]


def ping_packet(tag):
    # RMCP header: version 6, reserved, sequence 0xff (no ACK), class 6 (ASF)
    # ASF: IANA 4542, type 0x80 presence ping, tag, reserved, data length 0
    return struct.pack(">BBBBIBBBB", 6, 0, 0xFF, 6, ASF_IANA, PRESENCE_PING, tag, 0, 0)


def parse_pong(data):
    """A presence pong -> dict, or None for anything else."""
    if len(data) < 12 + 16 or data[0] != 6 or data[3] & 0x0F != 6:
        return None
    iana, mtype = struct.unpack_from(">IB", data, 4)
    if iana != ASF_IANA or mtype != PRESENCE_PONG:
        return None
    oem_iana, oem, entities, interactions = struct.unpack_from(">IIBB", data, 12)
    return {"ipmi": bool(entities & 0x80), "asf_version": "1.0" if entities & 0x0F == 1
            else str(entities & 0x0F), "rmcp_security": bool(interactions & 0x80),
            "dash": bool(interactions & 0x20), "oem_iana": oem_iana}


def discover(addresses, port=623, timeout=1.0, attempts=2, clock=time.monotonic):
    """Ping every address; :returns: {address: pong dict or None}, in the given order."""
    found = {a: None for a in addresses}
    tag = os.getpid() & 0xFE
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for attempt in range(attempts):
            for addr in addresses:
                if found[addr] is None:
                    try:
                        sock.sendto(ping_packet(tag), (addr, port))
                    except OSError:
                        pass            # no route: stays unanswered
            deadline = clock() + timeout / attempts
            while clock() < deadline and any(v is None for v in found.values()):
                ready, _, _ = select.select([sock], [], [], max(0.0, deadline - clock()))
                if not ready:
                    break
                try:
                    data, (src, sport) = sock.recvfrom(512)
                except OSError:
                    continue            # ICMP port unreachable from a silent address
                pong = parse_pong(data)
                if pong is not None and src in found and sport == port:
                    found[src] = pong
            if all(v is not None for v in found.values()):
                break
    return found
