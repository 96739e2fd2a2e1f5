"""Which network boots reach the node registry, and dnsmasq's list of machines that booted.

The boot network is not trusted: anyone on it can ask ``/ipxe/node`` with any
MAC.  What a request may leave behind is bounded here:

- garbage leaves nothing: the MAC must be a unicast NIC address (not all
  zeros, not broadcast or multicast) and the platform at most 32 of
  ``[a-z0-9-]`` (:func:`check_boot`), else the request is refused before the
  registry is read;
- a MAC that a node holds gets one record (``/rackforge/boots/<mac>``), updated
  at each boot; the number of such records is bounded by the registry itself;
- a MAC that no node holds (a machine booting for the first time, before
  discovery registers it) gets a record only while fewer than
  ``max_unknown`` of those exist; past that it still gets its script, and
  nothing is written (one warning a minute says so);
- the rate per client address is the HTTP server's (``http.py``).

:class:`KnownHosts` is dnsmasq's ``--dhcp-hostsdir`` in full mode: one file per
MAC whose boot was recorded, at most ``limit`` files, only normalised MACs as
names.  dnsmasq only ever adds what it reads there, so nothing is evicted.  A
node installed over PXE keeps its lease's address as its static one; its file
then reserves that address (:meth:`KnownHosts.reserve`), and since dnsmasq
keeps what it read before, the caller makes it read the directory anew
(SIGHUP) when a reservation changed.
"""

import logging
import os
import threading
from pathlib import Path

from rackforge import errors
from rackforge.fileutil import atomic_write
from rackforge.pxe.limits import LogLimiter
from rackforge.registry import normalize_mac, valid_platform

LOG = logging.getLogger("rackforge.pxe.boots")
MAX_UNKNOWN = 256          # records of MACs no node holds (a rack is rarely half that)
MAX_HOSTS = 4096           # files in dnsmasq's hosts directory


class BadBoot(errors.RackforgeError):
    message = "{field} must be {what}"


def check_boot(mac, platform):
    """``(mac, platform)`` normalised, or :class:`BadBoot` (nothing may be stored)."""
    if not isinstance(mac, str) or len(mac) > 17 or mac != mac.strip():
        raise BadBoot(field="mac=", what="a MAC address")   # checked as sent: nothing stripped
    try:
        mac = normalize_mac(mac)
    except errors.RackforgeError:
        raise BadBoot(field="mac=", what="a MAC address") from None
    first = int(mac[:2], 16)
    if first & 1 or mac == "00:00:00:00:00:00":
        raise BadBoot(field="mac=", what="a NIC's unicast MAC address")
    if platform and not valid_platform(platform):
        raise BadBoot(field="platform=", what="at most 32 of a-z, 0-9 and '-'")
    return mac, platform or None


class BootRecorder:
    """Records boots in the registry within the bounds above; see the module text.

    ``load()`` reads the records there are (the unknown-MAC count starts from
    them).  ``record(mac, decision, platform, node)`` returns True when the boot
    was written, False when the unknown-MAC bound kept it out; registry errors
    propagate.  Thread-safe.
    """

    def __init__(self, registry, max_unknown=MAX_UNKNOWN):
        self.registry = registry
        self.max_unknown = max_unknown
        self._unknown = set()
        self._lock = threading.Lock()
        self._log = LogLimiter(LOG, burst=1, interval=60)

    def load(self):
        boots = self.registry.list_boots()
        with self._lock:
            self._unknown = {b["mac"] for b in boots if not b.get("node")}
        return boots

    def record(self, mac, decision, platform, node=None):
        added = False
        with self._lock:
            if node is not None:
                self._unknown.discard(mac)
            elif mac not in self._unknown:
                if len(self._unknown) >= self.max_unknown:
                    self._log.log("full", logging.WARNING, "boot of %s not recorded: %d MACs"
                                  " no node holds have records already; enroll or discover"
                                  " them", mac, len(self._unknown))
                    return False
                self._unknown.add(mac)
                added = True
        try:
            self.registry.record_boot(mac, decision=decision, platform=platform, node=node)
        except BaseException:
            if added:               # nothing was written: the place is free again
                with self._lock:
                    self._unknown.discard(mac)
            raise
        return True

    def unknown(self):
        with self._lock:
            return len(self._unknown)


class KnownHosts:
    """dnsmasq's hosts directory: ``add(mac)`` lets that MAC get an address in full mode,
    ``reserve({mac: address})`` gives those MACs those addresses and no one else.

    At most ``limit`` entries; a MAC that does not normalise is refused
    (:class:`BadBoot`), one past the limit is not added (False, one warning a
    minute).  Files are written atomically, named by the MAC alone.
    """

    def __init__(self, directory, limit=MAX_HOSTS):
        self.directory = Path(directory)
        self.limit = limit
        self._lock = threading.Lock()
        self._names = {n for n in os.listdir(self.directory) if not n.startswith(".")}
        self._reserved = {}             # file name: address
        self._log = LogLimiter(LOG, burst=1, interval=60)

    def reserve(self, wanted):
        """Make the reservations ``{mac: address}`` exactly these (a MAC no longer in
        them is back to a plain entry); True if a file changed, so dnsmasq must
        re-read them.  Addresses are the caller's to check (one MAC each)."""
        wanted = {check_boot(mac, None)[0].replace(":", "-"): str(address)
                  for mac, address in wanted.items()}
        changed = False
        with self._lock:
            for name in set(self._reserved) | set(wanted):
                if self._reserved.get(name) == wanted.get(name):
                    continue
                if name not in self._names and len(self._names) >= self.limit:
                    self._log.log("full", logging.WARNING, "%s not reserved in the DHCP "
                                  "hosts: %d entries already", name, len(self._names))
                    continue
                mac = name.replace("-", ":")
                line = "%s,set:netboot,%s\n" % (mac, wanted[name]) if name in wanted \
                    else "%s,set:netboot\n" % mac
                atomic_write(self.directory / name, line)
                self._names.add(name)
                if name in wanted:
                    self._reserved[name] = wanted[name]
                else:
                    del self._reserved[name]
                changed = True
        return changed

    def add(self, mac):
        mac, _ = check_boot(mac, None)
        name = mac.replace(":", "-")
        with self._lock:
            if name in self._names:
                return True
            if len(self._names) >= self.limit:
                self._log.log("full", logging.WARNING, "%s not added to the DHCP hosts: %d"
                              " entries already", mac, len(self._names))
                return False
            atomic_write(self.directory / name, "%s,set:netboot\n" % mac)
            self._names.add(name)
            return True

    def reserved(self):
        with self._lock:
            return {n.replace("-", ":"): a for n, a in self._reserved.items()}

    def __len__(self):
        with self._lock:
            return len(self._names)
