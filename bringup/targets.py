"""Which BMCs ``rack up`` works on: addresses, address ranges and port ranges.

Each argument is one of::

    ADDR[:PORT]              as ``rackforge bmc enroll`` takes it (IPv4, [IPv6], host
                             name, or an http(s) URL for Redfish)
    FIRST-LAST[:PORT]        an IPv4 range: 10.0.0.10-10.0.0.20, or 10.0.0.10-20
    ADDR:PORT-PORT           one address, a range of ports (BMCs behind one address,
                             as in the virtual rack: 127.0.0.1:6230-6237)

An argument that is none of these is refused by its position ("BMC argument
2"), never echoed: it may be a password typed in the wrong place.  The
result keeps the order given, without duplicates, at most
:data:`MAX_TARGETS` BMCs.
"""

import re

from rackforge.bmc import cli as bmc_cli
from rackforge.bmc import discover, errors

MAX_TARGETS = 1024
_QUAD = r"\d{1,3}(?:\.\d{1,3}){3}"
_ADDRESS_RANGE = re.compile(r"(%s)-(%s|\d{1,3})(?::(\d{1,5}))?" % (_QUAD, _QUAD))
_PORT_RANGE = re.compile(r"(.+):(\d{1,5})-(\d{1,5})")


def _refused(what, why):
    return errors.BMCConfigError(detail="%s is not a BMC address or range (not shown, in "
                                 "case it is a password): %s" % (what, why))


def _port(text, what):
    port = int(text)
    if not 0 < port < 65536:
        raise _refused(what, "a port is a number from 1 to 65535")
    return port


def parse_one(text, what):
    """``[(address, port or None), ...]`` for one argument.  :raises: BMCConfigError"""
    text = text.strip()
    m = _ADDRESS_RANGE.fullmatch(text)
    if m:
        try:
            addresses = discover.parse_range("%s-%s" % (m.group(1), m.group(2)))
        except errors.DiscoveryError:
            raise _refused(what, "write FIRST-LAST with IPv4 addresses, the first not "
                           "above the last, at most %d of them" % discover.MAX_RANGE) from None
        port = _port(m.group(3), what) if m.group(3) else None
        return [(address, port) for address in addresses]
    m = _PORT_RANGE.fullmatch(text)
    if m and "://" not in text:
        address, port = bmc_cli.parse_address(m.group(1), what)
        low, high = _port(m.group(2), what), _port(m.group(3), what)
        if port is not None or high < low or high - low >= MAX_TARGETS:
            raise _refused(what, "write ADDR:FIRST-LAST with the first port not above the "
                           "last, at most %d ports" % MAX_TARGETS)
        return [(address, p) for p in range(low, high + 1)]
    return [bmc_cli.parse_address(text, what)]


def expand(texts):
    """Every BMC the arguments name, in order, each once.  :raises: BMCConfigError"""
    out, seen = [], set()
    for i, text in enumerate(texts):
        for pair in parse_one(text, "BMC argument %d" % (i + 1)):
            if pair in seen:
                continue
            seen.add(pair)
            out.append(pair)
            if len(out) > MAX_TARGETS:
                raise errors.BMCConfigError(detail="more than %d BMCs in one 'rack up'; "
                                            "bring the rack up in parts" % MAX_TARGETS)
    return out
