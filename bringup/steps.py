"""What ``rack up`` does to one node, step by step, each safe to run again.

Every step with a side effect records its intent in the node's bring-up record
(:mod:`.progress`) before it acts and ``done`` after, and on a second run
looks at what the record and the machine say before it acts again:

``password``  (``--set-bmc-password``) a generated password for the BMC user,
              sealed under the cluster key and recorded as ``pending`` first;
              then set through the driver, checked by logging in with it, and
              stored in the node's BMC record.  A run stopped in between tries
              the pending password first: it is never set twice, never lost.
``install``   ``enrolled`` (``live``, ``discovered``; ``failed`` with
              ``--retry-failed``) -> ``installing``, the operator's move
              (``rackforge/states.py``); the disk settings go with it.
``power``     next boot from the network, then power on (a reset if the node
              was on).  Done once per install: a node whose power-on is
              recorded and that is on is not touched again; one that is off is
              powered on again.  The power state seen is part of the intent, so
              a run stopped after the power-on does not power on twice.
``disk``      once the node is ``installed`` (or past it): boot device disk,
              persistent, so a reboot never returns to the network.  The
              network boot of an installed node is its disk anyway
              (``pxe/bootscript.py``); this is the BMC's side of it.
``restart``   once per install, when the node is still ``installed`` (its
              first boot has not joined) ``--reboot-wait`` after its install
              report: a reset through the BMC, after the ``disk`` step, so it
              boots its disk.  The installer reboots the machine itself; this
              is for the reboot that never comes (a live system's shutdown that
              hangs, a machine stuck in its firmware), as Ironic powers a node
              off and on through its BMC at the end of a deploy.  Claimed by
              compare-and-set before it acts and done once the BMC took the
              command: a run stopped in between leaves it ``started``, and no
              later run resets again (``rack up`` says so, once).

No password reaches a result, a record in clear, a log line or an error: each
is redacted by the caller's filter, to which :meth:`NodeSteps.password` adds
the new one before it is used.
"""

import dataclasses
import secrets
import string

from rackforge import states
from rackforge.bmc import credentials, errors
from rackforge.bringup.progress import STARTED

#: IPMI takes 16 bytes everywhere (20 only with a flag some BMCs refuse)
PASSWORD_LEN = 16
INSTALLABLE = ("enrolled", "live", "discovered")


class NodeFailed(errors.RackforgeError):
    message = ("node {node} failed: {reason}; run 'rackforge rack up --retry-failed' to "
               "install it again")


class NoMac(errors.RackforgeError):
    message = ("node {node}: its BMC reported no NIC MAC, so its network boot cannot be told "
               "from a stranger's; add the MAC with 'rackforge bmc enroll' on a BMC that "
               "reports it, or install it from the ISO")


def new_password(length=PASSWORD_LEN):
    alphabet = string.ascii_letters + string.digits
    while True:
        text = "".join(secrets.choice(alphabet) for _ in range(length))
        if any(c.isdigit() for c in text) and any(c.isupper() for c in text) \
                and any(c.islower() for c in text):      # BMC complexity rules
            return text


class NodeSteps:
    """The steps on a :class:`~rackforge.bringup.rack.Tracker`'s node.

    :param driver_for: name -> driver instance
    :param on_secret: called with each new password before it is used (redaction)
    """

    def __init__(self, registry, store, key, driver_for, uefi=False, power_wait=60.0,
                 disk=None, on_secret=lambda secret: None):
        self.registry = registry
        self.store = store
        self.key = key
        self.driver_for = driver_for
        self.uefi = uefi
        self.power_wait = power_wait
        self.disk_settings = disk
        self.on_secret = on_secret

    def _driver(self, t):
        return self.driver_for(t.bmc.driver)

    # -- password ------------------------------------------------------------------------
    def password(self, t):
        """A per-node BMC password, set once (see the module's docstring)."""
        record = self.store.get(t.node_id)
        step = record.step("password") if record else None
        if record and record.is_done("password"):
            return "kept"
        driver = self._driver(t)
        if step and step.get("pending"):
            new = credentials.decrypt(step["pending"], self.key, node=t.name)
            self.on_secret(new)
            if self._logs_in(driver, t.bmc, new):     # set before the run stopped
                return self._commit(t, new)
        else:
            new = new_password()
            self.on_secret(new)
            self.store.start(t.node_id, "password", pending=credentials.encrypt(new, self.key))
        driver.management.set_user_password(t.bmc, new)
        if not self._logs_in(driver, t.bmc, new):
            raise errors.BMCCommandFailed(bmc=t.bmc.label, action="set user password",
                                          detail="the BMC took the new password but refuses "
                                          "it; log in with the old one and check the user")
        return self._commit(t, new)

    @staticmethod
    def _logs_in(driver, bmc, password):
        try:
            driver.power.get_power_state(dataclasses.replace(bmc, password=password))
            return True
        except errors.BMCAuthFailed:
            return False

    def _commit(self, t, new):
        sealed = credentials.encrypt(new, self.key)
        self.registry.update_node(t.node_id, lambda n: n.bmc.__setitem__("password", sealed))
        t.bmc.password = new
        self.store.done(t.node_id, "password")
        return "set"

    # -- install -------------------------------------------------------------------------
    def to_installing(self, t, node):
        """The operator's move to ``installing``; the install's power and disk steps are
        forgotten (a new install powers on and sets the disk again)."""
        self.store.start(t.node_id, "install", frm=node.state)
        node = self.registry.transition(
            t.node_id, "installing", states.OPERATOR, frm=node.state,
            change=lambda n: setattr(n, "boot", {k: v for k, v in n.boot.items()
                                                 if k != "error"}))
        self.store.forget(t.node_id, "power", "disk", "restart")
        self.store.set(t.node_id, installing_rev=node.revision, disk=self.disk_settings,
                       error=None)
        self.store.done(t.node_id, "install", rev=node.revision)
        return node

    # -- power ---------------------------------------------------------------------------
    def power(self, t, began=False):
        """Next boot from the network and power on, once per install.

        :param began: the install API answered this install already: a node that is on
            is installing, and is left alone even if no power-on was recorded.
        """
        driver = self._driver(t)
        record = self.store.get(t.node_id)
        step = record.step("power") if record else None
        state = driver.power.get_power_state(t.bmc)
        if state == "on" and began and not step:
            return "installing already, not touched"
        if step and state == "on" and (step["status"] != STARTED or step.get("was") == "off"):
            if step["status"] == STARTED:       # powered on before the last run stopped
                self.store.done(t.node_id, "power")
            return "on already, not powered on again"
        self.store.start(t.node_id, "power", was=state)
        driver.management.set_boot_device(t.bmc, "pxe", persistent=False, uefi=self.uefi)
        driver.power.change_power(t.bmc, "reset" if state == "on" else "on",
                                  timeout=self.power_wait)
        self.store.done(t.node_id, "power")
        return "network boot, powered %s" % ("off and on" if state == "on" else "on")

    # -- disk ----------------------------------------------------------------------------
    def disk(self, t):
        """Boot device disk, persistent: the node never loops back into the installer."""
        self.store.start(t.node_id, "disk")
        driver = self._driver(t)
        driver.management.set_boot_device(t.bmc, "disk", persistent=True, uefi=self.uefi)
        self.store.done(t.node_id, "disk")
        return "boot device disk (persistent)"

    # -- restart -------------------------------------------------------------------------
    def restart(self, t, waited):
        """Reset through the BMC, once per install (see the module's docstring).

        The step is claimed by compare-and-set (two runs never both reset), and recorded
        done as soon as the BMC took the command: the reset is not tried again even if
        the node is slow to show power.  A command the BMC refused is forgotten, so the
        next try sends it again.

        :param waited: seconds since the install report, for the note
        :returns: the note, or None when there was nothing to do
        """
        if self.registry.get_node(t.node_id).state != "installed":
            return None                          # its first boot came meanwhile
        if not self.store.claim(t.node_id, "restart", waited=round(waited)):
            return None                          # another run has it
        driver = self._driver(t)
        try:
            state = driver.power.get_power_state(t.bmc)
            driver.power.set_power_state(t.bmc, "reset" if state == "on" else "on")
        except errors.RackforgeError:
            self.store.forget(t.node_id, "restart")      # not sent: the next try sends it
            raise
        self.store.done(t.node_id, "restart")
        return ("no first boot %d s after its install: reset through its BMC (once) to "
                "boot its disk" % waited)
