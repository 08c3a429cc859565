"""deploy/local-swarm.sh, driven as a user would: start, status, wait, stop.

Starts three nodes with `local-swarm.sh start 3 --dir TMP --steps 40 --bin
$SW_BUILD_ROOT` (the bundled model and data/topic-train.jsonl, the script's
defaults) and checks what it set up: three swarmd processes, each with its own
shard (record i in shard i % 3, read back here from the data file), ports and
state directory, node 0 founding and the others bootstrapping from its sync
address, and the commands it prints for watching them.  Then `wait` must
report agreement, and the three digests it prints must equal the ones each
node reports in `swarmctl status --json` (one version vector: 40 updates of
each of 3 origins).  `stop` must end every process with exit 0 (from each
node's own log), `start` again resumes the stopped swarm, and the usage and
state errors exit as documented.
"""
import atexit
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import nodeutil as nu  # noqa: E402
from nodeutil import check  # noqa: E402
from deployutil import alive, ini_entries  # noqa: E402
import deployutil  # noqa: E402

SCRIPT = os.path.join(nu.SOURCE, "deploy", "local-swarm.sh")
DATA = os.path.join(nu.SOURCE, "data", "topic-train.jsonl")
N = 3
STEPS = 40
_dirs = []


def run(*args, timeout=240):
    return deployutil.run(["sh", SCRIPT, *args], timeout=timeout)


def pid_of(d, k):
    try:
        with open(os.path.join(d, f"node{k}", "swarmd.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def ini(path):
    """The [node] / [data] ... keys of a written config: {section: {key: value}}."""
    out = {}
    for sec, k, v in ini_entries(path):
        out.setdefault(sec, {})[k] = v.strip('"')
    return out


def _kill_leftovers():
    # the nodes run in sessions of their own: nodeutil does not know them
    for d in _dirs:
        for k in range(N):
            pid = pid_of(d, k)
            if pid and alive(pid) and any(a.endswith("swarmd.ini") for a in cmdline(pid)):
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass


def main():
    t0 = time.time()
    if not nu.require_binaries():
        return 1
    d = os.path.join(nu.tmpdir("local-swarm-"), "swarm dir")  # a space: paths are quoted
    _dirs.append(d)
    atexit.register(_kill_leftovers)
    build = os.path.abspath(nu.BUILD)

    rc, out, err = run("start", str(N), "--dir", d, "--steps", str(STEPS), "--bin", build,
                       "--train", "weight_decay=0")
    if not check(rc == 0, "start 3 exits 0", out + err):
        return nu.finish("local_swarm", t0)
    pids = [pid_of(d, k) for k in range(N)]
    check(all(p and alive(p) for p in pids) and len(set(pids)) == N,
          "three recorded pids, each a running process", pids)
    check(all(cmdline(p)[:3] == [os.path.join(build, "daemon", "swarmd"), "--config",
                                 os.path.join(d, f"node{k}", "swarmd.ini")]
              for k, p in enumerate(pids)),
          "each runs $SW_BUILD_ROOT/daemon/swarmd --config DIR/nodeK/swarmd.ini",
          [cmdline(p) for p in pids])
    for what in (f"status --state-dir {d}/node0/state", f"tail -f {d}/node0/swarmd.log",
                 "--watch", f"wait --dir {d}", f"stop --dir {d}"):
        check(what in out, f"start prints how to watch: {what!r}", out)

    # shards: record i (blank lines skipped) in shard i % N, read back from the source
    with open(DATA) as f:
        records = [line for line in f if line.strip()]
    shards_ok = True
    for k in range(N):
        with open(os.path.join(d, f"shard{k}.jsonl")) as f:
            shards_ok &= f.readlines() == records[k::N]
    check(shards_ok, f"shard K holds records K, K+{N}, ... of data/topic-train.jsonl")

    cfgs = [ini(os.path.join(d, f"node{k}", "swarmd.ini")) for k in range(N)]
    urls = [c["node"][key] for c in cfgs for key in ("listen", "sync")]
    check(len(set(urls)) == 2 * N and all(u.startswith("tcp://127.0.0.1:") for u in urls),
          "every node has its own two loopback ports", urls)
    check("bootstrap" not in cfgs[0]["node"] and
          all(c["node"].get("bootstrap") == cfgs[0]["node"]["sync"] for c in cfgs[1:]),
          "node0 founds the swarm; the others bootstrap from its sync address",
          [c["node"].get("bootstrap") for c in cfgs])
    check(all(c["node"]["state_dir"] == os.path.join(d, f"node{k}", "state") and
              c["data"]["train"] == os.path.join(d, f"shard{k}.jsonl") and
              os.path.realpath(c["model"]["path"]) ==
              os.path.realpath(os.path.join(nu.SOURCE, "models", "tiny-gpt2-fortunes"))
              for k, c in enumerate(cfgs)),
          "each config names its own state dir and shard, and the bundled model",
          cfgs)
    check(cfgs[0]["train"].get("max_steps") == str(STEPS) and
          all("max_steps" not in c["train"] for c in cfgs[1:]),
          "max_steps is in the founder's config; the joiners adopt the run spec")
    check(cfgs[0]["train"].get("weight_decay") == "0" and
          all("weight_decay" not in c["train"] for c in cfgs[1:]),
          "--train weight_decay=0 is a key of the founder's config only")

    rc, out, err = run("start", str(N), "--dir", d, "--bin", build)
    check(rc == 1 and "is running" in err and "stop" in err,
          "start on a running swarm is refused (exit 1) saying to stop it", (rc, out, err))

    rc, out, err = run("status", "--dir", d)
    rows = [line for line in out.splitlines() if line.startswith("node")]
    check(rc == 0 and len(rows) == N and all(str(p) in r for p, r in zip(pids, rows)),
          "status prints one line per node with its pid", out + err)

    rc, out, err = run("wait", "--dir", d, "--timeout", "200")
    check(rc == 0, "wait exits 0", out + err)
    check(f"agreement: the {N} replicas agree" in out, "wait reports agreement", out)
    check(f"hold the same {N * STEPS} updates ({N} origins)" in out,
          f"wait reports {N * STEPS} updates from {N} origins", out)
    printed = dict(re.findall(r"^node(\d) digest ([0-9a-f]{64})$", out, re.M))

    sts = [nu.status(os.path.join(d, f"node{k}", "state")) for k in range(N)]
    if check(all(sts), "swarmctl status --json answers for the three nodes"):
        digests = [s["model"]["digest"] for s in sts]
        check(len(set(digests)) == 1 and digests[0] is not None,
              "the three digests from swarmctl status --json are equal", digests)
        check([printed.get(str(k)) for k in range(N)] == digests,
              "wait printed each node's digest", (printed, digests))
        vvs = [s["model"]["version_vector"] for s in sts]
        check(all(v == vvs[0] for v in vvs) and len(vvs[0]) == N and
              all(c == STEPS for c in vvs[0].values()),
              f"one version vector: {STEPS} updates of each of {N} origins", vvs)
        check(all(s["node"]["state"] == "done" for s in sts), "every node is done")
        check({s["node"]["id"] for s in sts} == set(vvs[0]), "every node is an origin")

    rc, out, err = run("status", "--dir", d)
    rows = [line for line in out.splitlines() if line.startswith("node")]
    check(len(rows) == N and all(" done " in r and f"{STEPS}/{STEPS}" in r and
                                 r.split()[5] == str(N - 1) for r in rows),
          f"status: every node done, {STEPS}/{STEPS}, {N - 1} peers alive", out)

    t = time.monotonic()
    rc, out, err = run("stop", "--dir", d, timeout=120)
    check(rc == 0, f"stop exits 0 ({time.monotonic() - t:.1f} s)", out + err)
    check(all(f"node{k}: stopped (exit=0)" in out for k in range(N)),
          "stop reports every node stopped with exit 0", out)
    check(not any(alive(p) for p in pids), "no swarmd process is left",
          [p for p in pids if alive(p)])
    check(not any(os.path.exists(os.path.join(d, f"node{k}", "swarmd.pid")) for k in range(N)),
          "the pid files are removed")
    rc, out, err = run("stop", "--dir", d)
    check(rc == 0 and "no node is running" in out, "stop again: nothing to do, exit 0",
          out + err)
    rc, out, err = run("wait", "--dir", d, "--timeout", "5")
    check(rc == 1 and "not running" in err, "wait on a stopped swarm exits 1", out + err)

    # the stopped swarm starts again where it left off (done: it stays done)
    rc, out, err = run("start", str(N), "--dir", d)
    check(rc == 0 and "starting it again" in out, "start again resumes the stopped swarm",
          out + err)
    rc, out, err = run("wait", "--dir", d, "--timeout", "60")
    check(rc == 0 and printed.get("0", "-") in out,
          "after the restart they agree on the same digest", out + err)
    pids = [pid_of(d, k) for k in range(N)]
    rc, out, err = run("stop", "--dir", d, timeout=120)
    check(rc == 0 and not any(p and alive(p) for p in pids), "stop after the restart", out + err)

    # errors
    rc, _, err = run("start", str(N), "--dir", d, "--steps", "41")
    check(rc == 1 and "40 steps" in err and "--fresh" in err,
          "another --steps for the same dir is refused, pointing at --fresh", err)
    rc, _, err = run("start", "0")
    check(rc == 2 and "1..32" in err, "start 0 is a usage error (exit 2)", err)
    for bad in ("nonsense", "Lr=1", "lr-x=1"):
        rc, _, err = run("start", "2", "--dir", d + "-t", "--train", bad)
        check(rc == 2 and "--train" in err, f"--train {bad}: a usage error (exit 2)", err)
    rc, _, err = run("start", "2", "--dir", d + "-x", "--bin", d)
    check(rc == 1 and "not built" in err, "a --bin without swarmd: exit 1, 'not built'", err)
    rc, _, err = run("frob")
    check(rc == 2 and "unknown command" in err, "an unknown command: exit 2", err)
    rc, _, err = run("status", "--dir", os.path.join(d, "nowhere"))
    check(rc == 1 and "no such directory" in err, "status of a missing dir: exit 1", err)
    return nu.finish("local_swarm", t0)


if __name__ == "__main__":
    sys.exit(main())
