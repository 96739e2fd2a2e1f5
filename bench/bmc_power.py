#!/usr/bin/env python3
"""Power status of 48 simulated BMCs: rackforge in parallel vs one BMC vs an ipmitool loop.

48 OpenIPMI ``ipmi_sim`` processes listen on 127.0.1.1 ... 127.0.1.48 (one
UDP port), each an independent BMC.  Measured, in this order:

1. ``rackforge power status`` on one BMC (the command line, cold process);
2. the same on all 48 BMCs at once, at the default concurrency (16) and at 48;
3. a sequential ``ipmitool -I lanplus -C 3 ... power status`` loop over the 48
   (password from a file, never on the command line);
4. in-process (warm sessions): the parallel runner on 1 and on 48 BMCs.

Ratios: parallel-48 / single (should stay near 1, bounded by
ceil(48 / concurrency)), and ipmitool-loop / parallel-48.  Retries (attempts
beyond the first) are counted, since UDP under load loses packets, and so are
calls that stalled (pyghmi's own retransmission after ~0.5 s).  Figures
are printed and written to ``bench/results/bmc_power.json``.

Usage: bench/bmc_power.py [COUNT]   (default 48; needs root, ipmi_sim, ipmitool)
"""

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))

import bmcsim  # noqa: E402

PASSWORD = "Bench-Pw-3319"
REPEAT = 3


def cli(args, env):
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "rackforge", *args, "--json"], env=env,
                         capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    if PASSWORD in res.stdout + res.stderr:
        raise SystemExit("bench: the password leaked into the output")
    data = json.loads(res.stdout)
    ok = sum(r["ok"] for r in data["results"])
    retries = sum(max(0, r["attempts"] - 1) for r in data["results"])
    return took, ok, retries


def median_cli(args, env):
    runs = [cli(args, env) for _ in range(REPEAT)]
    return (statistics.median(r[0] for r in runs), min(r[1] for r in runs),
            sum(r[2] for r in runs))


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    if os.geteuid() != 0 or not shutil.which("ipmi_sim") or not shutil.which("ipmitool"):
        print("bench/bmc_power: needs root, ipmi_sim and ipmitool (tools/setup-host --test)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="rackforge-bench-bmc-"))
    pwfile = work / "pw"
    pwfile.write_text(PASSWORD + "\n")
    pwfile.chmod(0o600)
    env = dict(os.environ, RACKFORGE_CLUSTER_KEY_FILE=str(work / "cluster.key"))
    env.pop("RACKFORGE_BMC_PASSWORD", None)
    port = bmcsim.free_udp_port("127.0.1.1")
    figures = {"bmcs": count, "repeat": REPEAT}
    try:
        with ExitStack() as stack:
            start = time.monotonic()
            sims = [stack.enter_context(bmcsim.ipmi_sim(
                work / ("bmc%02d" % i), host="127.0.1.%d" % i, port=port,
                password=PASSWORD, serial="B%02d" % i, power=i % 2 == 0))
                for i in range(1, count + 1)]
            figures["start_simulators_s"] = round(time.monotonic() - start, 2)
            common = ["--user", "admin", "--password-file", str(pwfile)]

            single, ok1, r1 = median_cli(["power", "status", "--bmc", sims[0].address]
                                         + common, env)
            figures["cli_single_s"] = round(single, 3)
            bmcs = [a for s in sims for a in ("--bmc", s.address)]
            for conc in (16, count):
                took, ok, retries = median_cli(["power", "status", *bmcs, "--concurrency",
                                                str(conc)] + common, env)
                figures["cli_parallel_c%d_s" % conc] = round(took, 3)
                figures["cli_parallel_c%d_ok" % conc] = ok
                figures["cli_parallel_c%d_retries" % conc] = retries
                figures["ratio_parallel_c%d_vs_single" % conc] = round(took / single, 2)
                figures["bound_c%d" % conc] = math.ceil(count / conc)

            start = time.monotonic()
            ok = 0
            for s in sims:
                out = subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", s.host,
                                      "-p", str(s.port), "-U", "admin", "-f", str(pwfile),
                                      "power", "status"], capture_output=True, text=True,
                                     timeout=60)
                ok += out.stdout.startswith("Chassis Power is")
            loop = time.monotonic() - start
            figures["ipmitool_loop_s"] = round(loop, 3)
            figures["ipmitool_loop_ok"] = ok
            figures["ratio_ipmitool_loop_vs_parallel_c16"] = round(
                loop / figures["cli_parallel_c16_s"], 2)

            # warm, in-process: what a long-running service sees
            from rackforge.bmc import base, ipmi, parallel
            drv = ipmi.IPMIDriver()
            targets = [base.BMC(address=s.host, port=s.port, username="admin",
                                password=PASSWORD) for s in sims]
            parallel.run_all(targets, drv.power.get_power_state, "warm-up", concurrency=16)
            t1 = []
            for _ in range(REPEAT):
                start = time.monotonic()
                res1 = parallel.run_all(targets[:1], drv.power.get_power_state, "status")
                t1.append(time.monotonic() - start)
            tn, retries, per_call = [], 0, []
            for _ in range(REPEAT):
                start = time.monotonic()
                res = parallel.run_all(targets, drv.power.get_power_state, "status",
                                       concurrency=16)
                tn.append(time.monotonic() - start)
                retries += sum(r.attempts - 1 for r in res)
                per_call += [r.seconds for r in res]
            expected = ["on" if (i + 1) % 2 == 0 else "off" for i in range(count)]
            figures["warm_states_correct"] = [r.value for r in res] == expected and \
                res1[0].ok
            figures["warm_single_ms"] = round(statistics.median(t1) * 1000, 1)
            figures["warm_parallel_c16_ms"] = round(statistics.median(tn) * 1000, 1)
            figures["warm_parallel_retries"] = retries
            # pyghmi retransmits a lost UDP packet itself after ~0.5 s: such calls show
            # as stalls, not as rackforge retries
            figures["warm_per_bmc_median_ms"] = round(statistics.median(per_call) * 1000, 1)
            figures["warm_per_bmc_max_ms"] = round(max(per_call) * 1000, 1)
            figures["warm_stalled_calls_over_300ms"] = sum(t > 0.3 for t in per_call)
            figures["warm_ratio_parallel_vs_single"] = round(
                statistics.median(tn) / statistics.median(t1), 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bmc_power.json").write_text(json.dumps(figures, indent=2) + "\n")
    width = max(map(len, figures))
    for k, v in figures.items():
        print("%-*s  %s" % (width, k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
