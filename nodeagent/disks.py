"""``rackforge node disk list|replace|remove``: a data disk's OSD taken out of Ceph safely,
and made again on a new disk with the same id, or purged for good.

Run on a controller (it speaks to Ceph as client.admin).  The node's half (stop
the OSD, prepare the new disk) is its own agent's (:meth:`.osd.Osds.serve`),
asked through a request in etcd (``keys.CEPH_REQUESTS + id``), which also
records how far the operation got, so running the command again resumes it:

1. refused at once when stopping the OSD would leave PGs without enough copies
   (``ceph osd ok-to-stop``);
2. the OSD marked ``out``: Ceph copies its data to the others;
3. waited for until ``ceph osd safe-to-destroy`` says no data would be lost (a
   line every 10 s; past ``--timeout`` it stops, the OSD left out, and says so);
4. replace: ``ceph osd destroy`` (the id, CRUSH position and weight kept), the
   request ``destroyed``; the node's agent stops the OSD, wipes and prepares the
   new disk with the same id and starts it; then ``ceph osd in``, and done once
   it is up.  remove: the agent stops it and forgets it; ``ceph osd purge``,
   and the disk leaves the node's data disks (no OSD is made on it again).
"""

import json
import time

from rackforge import errors, keys
from rackforge.nodeagent.ceph import Ceph, osd_records

ACTIONS = ("replace", "remove")


class Refused(errors.RackforgeError):
    message = "{action} osd.{osd}: {why}"
    retryable = False


class NoSuchDisk(errors.ConfigError):
    message = ("node {node} has no OSD on {disk}; 'rackforge node disk list {node}' shows "
               "its disks")


def find(kv, node, ref):
    """The OSD record of ``node`` named by ``ref``: ``osd.N``, ``N``, the disk's stable id,
    its path or its serial."""
    for rec in osd_records(kv, node.id):
        names = {"osd.%d" % rec["id"], str(rec["id"]), rec.get("disk"), rec.get("path"),
                 rec.get("device"), rec.get("serial")}
        if ref in names - {None}:
            return rec
    raise NoSuchDisk(node=node.name, disk=ref)


class DiskJob:
    """One replace or remove, from the operator's side."""

    def __init__(self, kv, registry=None, ceph=None, say=print, clock=time.monotonic,
                 sleep=time.sleep):
        self.kv = kv
        self.registry = registry
        self.ceph = ceph or Ceph()
        self.say = say
        self.clock, self.sleep = clock, sleep

    def _request(self, osd_id):
        entry = self.kv.get(keys.CEPH_REQUESTS + str(osd_id))
        return json.loads(entry.value) if entry else None

    def _put(self, req):
        self.kv.txn([], [(keys.CEPH_REQUESTS + str(req["osd"]), json.dumps(req).encode())])

    def _osd(self, osd_id):
        for osd in (self.ceph("osd", "dump") or {}).get("osds", []):
            if osd.get("osd") == osd_id:
                return osd
        return None

    def _wait(self, what, test, timeout, every=10.0):
        start = last = self.clock()
        while True:
            ok, line = test()
            if ok:
                return
            now = self.clock()
            if now - start > timeout:
                raise Refused(action=what[0], osd=what[1], why=line)
            if now - last >= every:
                self.say("  osd.%d: %s (%ds)" % (what[1], line, now - start))
                last = now
            self.sleep(2)

    def _answered(self, node, osd_id, want):
        def test():
            now = self._request(osd_id) or {}
            if now.get("state") == "failed":
                raise Refused(action=now.get("action"), osd=osd_id, why="node %s: %s; fix it "
                              "and run the command again" % (node.name, now.get("error")))
            return now.get("state") == want, "waiting for node %s's agent" % node.name
        return test

    def run(self, node, rec, action, new_path=None, wipe=False, timeout=1800):
        osd_id = rec["id"]
        req = self._request(osd_id)
        if req and req.get("action") != action and req.get("state") != "done":
            raise Refused(action=action, osd=osd_id, why="a %s of it is under way; run that "
                          "again to finish it" % req.get("action"))
        if req is None or req.get("state") == "done":
            osd = self._osd(osd_id)
            if osd and osd.get("up"):
                res = self.ceph("osd", "ok-to-stop", "osd.%d" % osd_id, fmt=False, check=False)
                if res.returncode != 0:
                    raise Refused(action=action, osd=osd_id, why="Ceph says stopping it is not "
                                  "safe now (%s); wait for HEALTH_OK" % _last(res))
            req = {"osd": osd_id, "node": node.id, "node_name": node.name, "action": action,
                   "disk": rec["disk"], "disk_record": rec, "with": new_path, "wipe": wipe,
                   "state": "requested", "asked": time.time()}
            self._put(req)
        if req["state"] == "requested":
            self.ceph("osd", "out", str(osd_id), fmt=False)
            self.say("osd.%d out: Ceph copies its data to the other OSDs" % osd_id)

            def safe():
                res = self.ceph("osd", "safe-to-destroy", "osd.%d" % osd_id, fmt=False,
                                check=False)
                return res.returncode == 0, _last(res)
            try:
                self._wait((action, osd_id), safe, timeout)
            except Refused as exc:
                raise Refused(action=action, osd=osd_id, why="still not safe to destroy after "
                              "%ds (%s); it stays out, its data moving: run the command "
                              "again to go on" % (timeout, exc.kwargs["why"])) from None
            req = dict(req, state="stopping")
            self._put(req)
        if req["state"] in ("stopping", "stopped"):
            self._wait((action, osd_id), self._answered(node, osd_id, "stopped"), timeout)
            if action == "remove":
                self.ceph("osd", "purge", str(osd_id), "--yes-i-really-mean-it", fmt=False)
                self.kv.txn([], (), [keys.CEPH_OSDS + str(osd_id)])
                if self.registry is not None:
                    self.registry.update_node(node.id, lambda n: _drop_disk(n, rec["disk"]))
                self._put(dict(req, state="done"))
                self.say("osd.%d purged; %s is no longer a data disk of %s"
                         % (osd_id, rec["path"], node.name))
                return 0
            self.ceph("osd", "destroy", str(osd_id), "--yes-i-really-mean-it", fmt=False)
            self.say("osd.%d stopped and destroyed (its id kept); node %s prepares the new "
                     "disk" % (osd_id, node.name))
            req = dict(req, state="destroyed")
            self._put(req)
        if req["state"] == "failed":        # asked again: the node tries again
            req = dict(req, state="destroyed", error=None)
            self._put(req)
        self._wait((action, osd_id), self._answered(node, osd_id, "done"), timeout)
        self.ceph("osd", "in", str(osd_id), fmt=False)

        def up():
            osd = self._osd(osd_id) or {}
            return bool(osd.get("up") and osd.get("in")), "waiting for it to be up and in"
        self._wait((action, osd_id), up, timeout)
        self.say("osd.%d is up and in again, on the new disk; Ceph fills it back" % osd_id)
        return 0


def _last(res):
    lines = ((res.stderr or "") + (res.stdout or "")).strip().splitlines()
    return lines[-1][:200] if lines else "exit %d" % res.returncode


def _drop_disk(node, stable_id):
    storage = dict(node.boot.get("storage") or {})
    storage["disks"] = [d for d in storage.get("disks") or [] if d.get("stable_id") != stable_id]
    node.boot = dict(node.boot, storage=storage)
