#!/usr/bin/python3
"""Drives `swarmctl status` and `swarmctl peers` against fake daemons.

The fake daemon is Debian's `nngcat` (nng-utils) as an nng REP socket on an
IPC path, answering every request with one fixed reply: a realistic status
object (built here, independently of the C code), text that is not JSON, an
{"error": ...} object, an object without "peers", or nothing at all (the
timeout).  Checks that --json round-trips the object, that the human output
has its sections, short ids and one table row per peer, that every failure
exits 1 naming the control socket, that --state-dir resolves to
DIR/control.sock, and that usage errors exit 2.  Then the additions of
issue 5: the loss sparkline (against a reference written here from the
rule in docs/cli.md), agreement in words, warnings, peers by state; a
status without them (an older daemon); `status --watch` (snapshots, a tty
redraw, Ctrl-C); and the acting verbs (pause ... eval): the request each
sends (recorded by nngcat), the line it prints, --json, the daemon's errors
and usage errors.  Exits non-zero on any failure.
"""
import hashlib
import json
import math
import os
import shutil
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import nodeutil as nu  # noqa: E402
from nodeutil import check  # noqa: E402

BUILD = os.environ.get("SW_BUILD_ROOT", "build")
SWARMCTL = os.path.abspath(os.path.join(BUILD, "cli", "swarmctl"))
NNGCAT = shutil.which("nngcat") or "/usr/bin/nngcat"
NO_DAEMON = ("no daemon at {}: is swarmd running? (see `systemctl status swarmd`, "
             "or pass --control PATH / --state-dir DIR)")

_fakes = []
START_WAIT = 30  # seconds for nngcat to listen (a bound for a loaded machine, not a pace)


def sp_answers(path):
    """True when an nng socket listens on the unix socket path and answers
    the SP handshake (the greeting a REQ0 peer sends).  Closing a connection
    before the greeting would leave nngcat's REP socket deaf to the next
    client (nng-utils 1.5.2), so the probe greets it properly."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
        s.sendall(b"\x00SP\x00\x00\x30\x00\x00")  # SP header: protocol REQ0 (0x30)
        hdr = b""
        while len(hdr) < 8:
            chunk = s.recv(8 - len(hdr))
            if not chunk:
                return False
            hdr += chunk
        return hdr[:4] == b"\x00SP\x00"
    except OSError:
        return False
    finally:
        s.close()


def read_until(p, pred, timeout):
    """Reads p.stdout (a pipe) until pred(everything read) holds or timeout
    seconds pass; returns what was read."""
    data, t_end = b"", time.monotonic() + timeout
    while not pred(data) and time.monotonic() < t_end:
        ready, _, _ = select.select([p.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            data += chunk
    return data


def run(*args, timeout=20):
    p = subprocess.run([SWARMCTL, *args], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def hexid(name):
    return hashlib.sha256(name.encode()).hexdigest()


def status_object():
    """A status as the daemon documents it: three peers in different states."""
    me, run_id = hexid("node-a"), hexid("run-1")
    b, c, d = hexid("node-b"), hexid("node-c"), hexid("node-d")
    return {
        "node": {"id": me, "state": "training", "step": 1234, "max_steps": 5000,
                 "run_id": run_id, "version": "0.1.0", "uptime_s": 3723.4,
                 "pub_addr": "tcp://10.0.0.1:7701", "sync_addr": "tcp://10.0.0.1:7702"},
        "model": {"digest": hexid("digest"), "digest_updates": 3690,
                  "version_vector": {me: 1234, b: 1230, c: 1226}},
        "train": {"loss": 3.451234, "steps_per_s": 2.3125, "scale": 0.0009765625,
                  "saturations": 0},
        "ledger": {"updates": 3690, "checkpoint_updates": 3000},
        "peers": [
            {"id": b, "state": "alive", "node_state": "training", "step": 1230,
             "last_seen_ms": 1234, "addr": "tcp://10.0.0.2:7701",
             "sync_addr": "tcp://10.0.0.2:7702", "ledger_updates": 3688,
             "digest": hexid("digest-b"), "lagging": False, "banned": False},
            {"id": c, "state": "suspect", "node_state": "paused", "step": 1226,
             "last_seen_ms": 192500, "addr": "tcp://10.0.0.3:7701",
             "sync_addr": "tcp://10.0.0.3:7702", "ledger_updates": 3600, "digest": None,
             "lagging": True, "banned": False},
            # A hostile peer: an address with a terminal escape sequence.
            {"id": d, "state": "joining", "node_state": "unknown", "step": 0,
             "last_seen_ms": None, "addr": "tcp://10.0.0.4:7701\u001b[2J",
             "sync_addr": "tcp://10.0.0.4:7702", "ledger_updates": 0, "digest": None,
             "lagging": False, "banned": True},
        ],
        "net": {"bytes_out": 123456789, "bytes_in": 98765432, "updates_out": 1234,
                "updates_in": 2456, "msgs_out": 400, "msgs_in": 812,
                "dropped": {"bad_signature": 3, "replay": 0, "wrong_run": 7}},
    }


class FakeDaemon:
    """nngcat answering every request on ipc://path with `data` (None: never answering),
    at most `count` times; with record=True the requests it received are kept
    (requests())."""

    def __init__(self, path, data, record=False, count=None):
        self.path = path
        self.log = path + ".requests" if record else None
        args = [NNGCAT, "--rep", "--listen", "ipc://" + path]
        if record:
            args += ["--ascii"]
        if count is not None:
            args += ["--count", str(count)]
        if data is not None:
            args += ["--data", data]
        out = open(self.log, "wb") if record else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.PIPE)
        if record:
            out.close()
        _fakes.append(self)
        # nng creates the socket file, then listens: wait until it answers
        if not nu.wait_until(lambda: os.path.exists(path) and sp_answers(path), START_WAIT,
                             every=0.02, alive=(self.proc,)):
            raise RuntimeError(f"nngcat did not start listening on {path}")

    def requests(self):
        """The requests received so far, parsed (nngcat prints them back to back)."""
        with open(self.log, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        dec, out, i = json.JSONDecoder(), [], 0
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            try:
                obj, i = dec.raw_decode(text, i)
            except ValueError:
                out.append(text[i:])
                break
            out.append(obj)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stderr:
            self.proc.stderr.close()


def stop_all():
    for f in _fakes:
        f.stop()
    _fakes.clear()


def expect_fail(args, code, names, what):
    rc, out, err = run(*args)
    ok = check(rc == code, f"{what}: exit {rc} == {code}", err)
    check(err.startswith("swarmctl: "), f"{what}: stderr starts with 'swarmctl: '", err)
    for n in names:
        ok &= check(n in err, f"{what}: stderr names {n!r}", err)
    check(out == "", f"{what}: nothing on stdout", out)
    return err


def test_no_daemon(tmp):
    missing = os.path.join(tmp, "nothing.sock")
    rc, out, err = run("status", "--control", missing)
    check(rc == 1, f"no daemon: exit {rc} == 1", err)
    check(err == "swarmctl: " + NO_DAEMON.format(missing) + "\n",
          "no daemon: the exact message naming the path", err)
    check(out == "", "no daemon: nothing on stdout", out)
    sd = os.path.join(tmp, "nodir")
    expect_fail(["peers", "--state-dir", sd], 1, [NO_DAEMON.format(sd + "/control.sock")],
                "peers --state-dir (no daemon)")


def test_status(tmp):
    obj = status_object()
    st = os.path.join(tmp, "st")
    os.mkdir(st)
    sock = os.path.join(st, "control.sock")
    fake = FakeDaemon(sock, json.dumps(obj, indent=1))  # the client re-serialises compactly

    rc, out, err = run("status", "--json", "--control", sock)
    check(rc == 0, "status --json: exit 0", err)
    check(out.endswith("\n") and out.count("\n") == 1, "status --json: one line", out[:200])
    try:
        got = json.loads(out)
    except ValueError as e:
        got = e
    check(got == obj, "status --json: the daemon's object round-trips", out[:400])
    # key order is the daemon's
    check(list(got) == list(obj) if isinstance(got, dict) else False,
          "status --json: sections keep the daemon's order")

    for sd in (st, st + "/"):
        rc, out2, err = run("status", "--json", "--state-dir", sd)
        check(rc == 0 and out2 == out, f"status --state-dir {sd[len(tmp):]!r} == --control DIR/"
              "control.sock", err)

    rc, text, err = run("status", "--control", sock)
    check(rc == 0, "status: exit 0", err)
    lines = text.splitlines()
    for sec in ("# Node", "# Model", "# Ledger", "# Net", "# Peers"):
        check(sec in lines, f"status: section {sec}", text)
    node, model, train, net = obj["node"], obj["model"], obj["train"], obj["net"]
    expected = [
        "id:" + node["id"][:12],
        "state:training",
        "run:" + node["run_id"][:12],
        f"step:{node['step']}/{node['max_steps']}",
        f"loss:{train['loss']:.4f}",
        f"steps_per_s:{train['steps_per_s']:.2f}",
        "uptime:1h02m03s",  # 3723.4 s
        "digest:" + model["digest"][:12],
        f"digest_updates:{model['digest_updates']}",
        f"updates:{obj['ledger']['updates']}",
        f"checkpoint_updates:{obj['ledger']['checkpoint_updates']}",
        f"bytes_in:{net['bytes_in']}",
        f"bytes_out:{net['bytes_out']}",
        f"updates_in:{net['updates_in']}",
        f"updates_out:{net['updates_out']}",
        f"dropped:{sum(net['dropped'].values())}",
        "dropped_bad_signature:3",
        "dropped_wrong_run:7",
        f"origins:{len(model['version_vector'])}",
    ]
    for e in expected:
        check(e in lines, f"status: line {e!r}", text)
    check("dropped_replay:0" not in text and not any(l.startswith("dropped_replay") for l in lines),
          "status: a zero drop reason is not shown", text)
    for full in [node["id"], node["run_id"]] + [p["id"] for p in obj["peers"]]:
        check(full not in text, f"status: full id {full[:12]}... shown only in short form")
    check("\x1b" not in text, "status: a peer's escape sequence does not reach the terminal")

    def table_checks(text, what):
        lines = text.splitlines()
        hdr = [l for l in lines if l.startswith("ID ")]
        check(len(hdr) == 1 and all(h in hdr[0] for h in ("STATE", "STEP", "LAST SEEN", "ADDRESS")),
              f"{what}: one table header", text)
        seen = {"1234": "1.2s ago", "192500": "3m12s ago", "None": "never"}
        for p in obj["peers"]:
            row = [l for l in lines if l.startswith(p["id"][:12] + " ")]
            if not check(len(row) == 1, f"{what}: one row for peer {p['id'][:12]}", text):
                continue
            cols = row[0].split()
            want = [p["id"][:12], p["state"], p["node_state"], str(p["step"]),
                    str(p["ledger_updates"])]
            check(cols[:5] == want, f"{what}: peer {p['id'][:12]} row starts {want}", row[0])
            ago = seen[str(p["last_seen_ms"])]
            check(ago in row[0], f"{what}: peer {p['id'][:12]} last seen {ago!r}", row[0])
            check(p["addr"][:19] in row[0], f"{what}: peer {p['id'][:12]} address", row[0])
            flags = [f for f in ("lagging", "banned") if p[f]]
            check(all(f in cols for f in flags) and
                  not any(f in row[0] for f in ("lagging", "banned") if not p[f]),
                  f"{what}: peer {p['id'][:12]} flags {flags}", row[0])

    table_checks(text, "status")

    rc, out, err = run("peers", "--json", "--control", sock)
    check(rc == 0, "peers --json: exit 0", err)
    try:
        got = json.loads(out)
    except ValueError as e:
        got = e
    check(got == obj["peers"] and out.count("\n") == 1,
          "peers --json: the daemon's peers array, one line", out[:400])
    rc, text, err = run("peers", "--control", sock)
    check(rc == 0, "peers: exit 0", err)
    check("# Node" not in text and "id:" not in text, "peers: the table only", text)
    check(len(text.splitlines()) == 1 + len(obj["peers"]), "peers: header + one line per peer",
          text)
    table_checks(text, "peers")
    fake.stop()

    # The socket file is left behind by the killed nngcat: still "no daemon".
    check(os.path.exists(sock), "a stale socket file stays after the fake is killed")
    expect_fail(["status", "--state-dir", st], 1, [NO_DAEMON.format(sock)],
                "status on a stale socket file")
    os.unlink(sock)

    # No peers yet: an empty table, said so.
    obj["peers"] = []
    fake = FakeDaemon(sock, json.dumps(obj))
    rc, text, err = run("peers", "--state-dir", st)
    check(rc == 0 and text == "(no peers)\n", "peers with none: '(no peers)'", text + err)
    fake.stop()
    os.unlink(sock)


def test_bad_replies(tmp):
    cases = [
        ("not json", "this is not JSON", ["invalid status", "not JSON"]),
        ("not an object", "[1, 2, 3]", ["invalid status", "not a JSON object"]),
        ("no peers", json.dumps({"node": status_object()["node"]}),
         ["invalid status", '"peers"']),
        ("no node", json.dumps({"peers": []}), ["invalid status", '"node"']),
        ("peers not a list", json.dumps({"node": {}, "peers": {}}),
         ["invalid status", '"peers" is not an array']),
        ("a peer not an object", json.dumps({"node": {}, "peers": [1]}),
         ["invalid status", "peers[0]"]),
        ("daemon error", json.dumps({"error": "unknown command: status"}),
         ["unknown command: status"]),
    ]
    for i, (what, data, names) in enumerate(cases):
        sock = os.path.join(tmp, f"bad{i}.sock")
        fake = FakeDaemon(sock, data)
        for verb in ("status", "peers"):
            expect_fail([verb, "--control", sock], 1, [sock + ": "] + names,
                        f"{verb} with a reply that is {what}")
        rc, out, err = run("status", "--json", "--control", sock)
        check(rc == 1 and out == "", f"status --json with a reply that is {what}: exit 1", err)
        fake.stop()

    # A daemon that never answers: bounded by --timeout-ms.
    sock = os.path.join(tmp, "mute.sock")
    fake = FakeDaemon(sock, None)
    t0 = time.time()
    expect_fail(["status", "--control", sock, "--timeout-ms", "300"], 1,
                [sock + ": ", "within 300 ms"], "status to a daemon that never answers")
    dt = time.time() - t0
    check(dt < 5, f"the timeout is honoured ({dt:.2f} s for 300 ms)")
    fake.stop()

    # A stopped daemon accepts the connection (the kernel does) but never
    # completes nng's handshake, which nng itself would wait 10 s for.
    sock = os.path.join(tmp, "stopped.sock")
    fake = FakeDaemon(sock, json.dumps(status_object()))
    fake.proc.send_signal(signal.SIGSTOP)
    t0 = time.time()
    expect_fail(["status", "--control", sock, "--timeout-ms", "300"], 1,
                [sock + ": ", "within 300 ms"], "status to a stopped daemon")
    dt = time.time() - t0
    check(dt < 5, f"the timeout is honoured while connecting ({dt:.2f} s for 300 ms)")
    fake.stop()


def test_permission(tmp):
    """A 0600 socket of another user: refused by the kernel, said so (needs root to set up)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        print("note  not root (or no setpriv): the permission check is not run")
        return
    os.chmod(tmp, 0o755)
    exe = os.path.join(tmp, "swarmctl")
    shutil.copy(SWARMCTL, exe)
    os.chmod(exe, 0o755)
    sock = os.path.join(tmp, "private.sock")
    fake = FakeDaemon(sock, json.dumps(status_object()))
    os.chmod(sock, 0o600)
    p = subprocess.run([setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", exe,
                        "status", "--control", sock], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=20)
    err = p.stderr.decode("utf-8", "replace")
    check(p.returncode == 1 and f"{sock}: permission denied" in err,
          "status as another user on a 0600 socket: exit 1, 'permission denied' naming it", err)
    fake.stop()


def test_usage(tmp):
    sock = os.path.join(tmp, "x.sock")
    cases = [
        (["status", "--control", sock, "--state-dir", tmp], ["--control"]),
        (["status", "--timeout-ms", "0"], ["--timeout-ms"]),
        (["status", "--timeout-ms", "5s"], ["--timeout-ms"]),
        (["peers", "--bogus"], ["--bogus"]),
        (["status", "extra"], ["extra"]),
        (["status", "--control", ""], ["--control"]),
        (["peers", "--state-dir"], ["--state-dir"]),
        (["status", "--control", "/" + "a" * 200], ["--control", "unix socket"]),
        (["status", "--json=yes"], ["--json"]),
    ]
    for args, names in cases:
        err = expect_fail(args, 2, names, "swarmctl " + " ".join(a[:30] for a in args))
        check("--help" in err, f"swarmctl {' '.join(a[:30] for a in args)}: points at --help", err)
    for verb in ("status", "peers"):
        rc, out, err = run(verb, "--help")
        check(rc == 0 and out.startswith(f"Usage: swarmctl {verb}") and "--state-dir" in out,
              f"{verb} --help: usage on stdout, exit 0", out + err)
    rc, out, err = run("--help")
    check(rc == 0 and "  status " in out and "  peers " in out,
          "swarmctl --help lists status and peers", out)


# ------------------------------------------------------------ issue 5 additions

BLOCKS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"  # ▁▂▃▄▅▆▇█


def sparkline(hist):
    """docs/cli.md: eight levels between the lowest and highest loss shown,
    level = floor(7 (v - min) / (max - min) + 0.5); null a space; all equal: level 3."""
    nums = [v for v in hist if v is not None]
    lo, hi = min(nums), max(nums)
    out = []
    for v in hist:
        if v is None:
            out.append(" ")
        elif hi == lo:
            out.append(BLOCKS[3])
        else:
            out.append(BLOCKS[max(0, min(7, math.floor(7 * (v - lo) / (hi - lo) + 0.5)))])
    return "".join(out)


def status_object_v2():
    """status_object plus the fields of issue 5 (docs/cli.md)."""
    obj = status_object()
    obj["node"]["state"] = "paused"
    obj["model"]["digest_version_vector"] = dict(obj["model"]["version_vector"])
    hist = [3.6, 3.55, None, 3.5, 3.45, 3.45, 3.40] + [3.40 - 0.01 * i for i in range(20)]
    obj["train"].update({
        "loss_history": hist, "steps": 1300, "updates_made": 1234,
        "step_seconds": {"buckets": [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
                         "counts": [0, 0, 10, 900, 1200, 1300, 1300, 1300, 1300],
                         "count": 1300, "sum": 650.0}})
    obj["net"].update({"bytes_per_update": 40213.25, "updates_applied": 2400})
    obj["swarm"] = {
        "lag_updates": 12,
        "agreement": {"peers_compared": 2, "peers_agree": 2, "agree": True},
        "peers_by_state": {"joining": 1, "alive": 1, "suspect": 1, "dead": 0, "left": 0},
        "warnings": [f"peer {obj['peers'][1]['id'][:12]} is suspect (last seen 4.2 s ago)",
                     "412 messages dropped: bad_signature 400, rate_limited 12",
                     "a warning with an escape \u001b[2J sequence"]}
    return obj


def status_lines(sock, what):
    rc, text, err = run("status", "--control", sock)
    check(rc == 0, f"{what}: status exit 0", err)
    return text


def test_status_v2(tmp):
    # the sparkline rule on a hand-derived example: 4 -> top, 3 -> bottom,
    # 3.5 -> floor(3.5 + 0.5) = 4, null -> space
    check(sparkline([4.0, None, 3.0, 3.5, 3.0]) == "\u2588 \u2581\u2585\u2581",
          "the reference sparkline gives the hand-derived one")
    obj = status_object_v2()
    sock = os.path.join(tmp, "v2.sock")
    fake = FakeDaemon(sock, json.dumps(obj))
    rc, out, err = run("status", "--json", "--control", sock)
    check(rc == 0 and json.loads(out) == obj, "v2 status --json: the daemon's object verbatim",
          out[:300] + err)
    text = status_lines(sock, "v2")
    lines = text.splitlines()
    trend = [l for l in lines if l.startswith("loss_trend:")]
    hist = obj["train"]["loss_history"]
    want = "loss_trend:" + sparkline(hist) + " (min 3.2100, max 3.6000)"
    check(trend == [want], "v2: the loss trend as a sparkline with its range", trend)
    for e in ["state:paused", "steps:1300", "updates_made:1234",
              "step_seconds:0.500 mean over 1300 steps, 90% within 1 s",  # 1200 >= 0.9 * 1300
              "updates_applied:2400", "bytes_per_update:40213", "lag_updates:12",
              "agreement:yes, 2 of 2 peers at the same version vector report the same digest",
              "by_state:joining 1, alive 1, suspect 1"]:
        check(e in lines, f"v2: line {e!r}", text)
    w = lines.index("# Warnings") if "# Warnings" in lines else -1
    check(w >= 0 and lines[w + 1:w + 3] == obj["swarm"]["warnings"][:2],
          "v2: the warnings section lists the daemon's warnings", text)
    check("\x1b" not in text and "a warning with an escape ?[2J sequence" in lines,
          "v2: a warning's escape sequence does not reach the terminal", text)
    fake.stop()

    # agreement, case by case
    me = obj["model"]
    b = obj["peers"][0]
    cases = [
        ("one peer agrees", {"peers_compared": 1, "peers_agree": 1, "agree": True}, None, [],
         "agreement:yes, 1 of 1 peer at the same version vector reports the same digest"),
        ("nobody comparable", {"peers_compared": 0, "peers_agree": 0, "agree": None}, None, [],
         "agreement:not yet comparable: no peer has announced a digest at the same version "
         "vector as ours"),
        ("a peer named by its digest_version_vector",
         {"peers_compared": 2, "peers_agree": 1, "agree": False}, "peer", [],
         f"agreement:NO: peer {b['id'][:12]} reports digest {b['digest'][:12]}, ours is "
         f"{me['digest'][:12]}"),
        ("a peer named by a warning", {"peers_compared": 2, "peers_agree": 1, "agree": False},
         None, [f"digest disagrees with peer {b['id'][:12]} at 3690 updates"],
         f"agreement:NO: digest disagrees with peer {b['id'][:12]} at 3690 updates"),
        ("no peer named", {"peers_compared": 3, "peers_agree": 2, "agree": False}, None, [],
         "agreement:NO: 1 of 3 peers at the same version vector reports another digest"),
    ]
    for i, (what, ag, peer_vv, warnings, want) in enumerate(cases):
        o = status_object_v2()
        o["swarm"]["agreement"] = ag
        o["swarm"]["warnings"] = warnings
        if peer_vv:
            o["peers"][0]["digest_version_vector"] = dict(o["model"]["digest_version_vector"])
            # a peer at another version vector with another digest is no disagreement
            o["peers"][1]["digest_version_vector"] = {"00": 1}
            o["peers"][1]["digest"] = hexid("other")
        s = os.path.join(tmp, f"ag{i}.sock")
        fake = FakeDaemon(s, json.dumps(o))
        text = status_lines(s, f"agreement: {what}")
        check(want in text.splitlines(), f"agreement: {what}: {want!r}", text)
        if not warnings:
            w = text.splitlines()
            check(w[w.index("# Warnings") + 1] == "(none)", f"agreement: {what}: warnings (none)")
        fake.stop()


def test_old_daemon(tmp):
    """A status without the issue-5 fields (an older daemon) prints them as absent."""
    obj = status_object()
    sock = os.path.join(tmp, "old.sock")
    fake = FakeDaemon(sock, json.dumps(obj))
    text = status_lines(sock, "older daemon")
    lines = text.splitlines()
    for e in ["loss_trend:-", "step_seconds:-", "steps:-", "updates_made:-", "updates_applied:-",
              "bytes_per_update:-", "lag_updates:-", "agreement:-",
              "by_state:joining 1, alive 1, suspect 1"]:  # counted from the peers array
        check(e in lines, f"older daemon: line {e!r}", text)
    w = lines.index("# Warnings") if "# Warnings" in lines else -1
    check(w >= 0 and lines[w + 1] == "-", "older daemon: warnings '-'", text)
    fake.stop()
    # wrong types where objects are expected: still no crash
    obj = status_object_v2()
    obj["train"]["loss_history"] = "x"
    obj["train"]["step_seconds"] = [1]
    obj["swarm"] = {"lag_updates": "x", "agreement": [], "peers_by_state": 3, "warnings": {}}
    obj["net"]["bytes_per_update"] = None
    sock = os.path.join(tmp, "odd.sock")
    fake = FakeDaemon(sock, json.dumps(obj))
    text = status_lines(sock, "odd types")
    for e in ["loss_trend:?", "step_seconds:?", "agreement:?", "bytes_per_update:-",
              "lag_updates:x"]:
        check(e in text.splitlines(), f"odd types: line {e!r}", text)
    fake.stop()
    obj = status_object_v2()
    obj["swarm"] = "nope"
    fake = FakeDaemon(os.path.join(tmp, "odd2.sock"), json.dumps(obj))
    expect_fail(["status", "--control", fake.path], 1, ['"swarm" is not an object'],
                "status with a swarm that is not an object")
    fake.stop()


def test_watch(tmp):
    obj = status_object_v2()
    sock = os.path.join(tmp, "watch.sock")
    fake = FakeDaemon(sock, json.dumps(obj))
    _, snap, _ = run("status", "--control", sock)
    t0 = time.time()
    rc, out, err = run("status", "--control", sock, "--watch", "--count", "2",
                       "--interval-ms", "300")
    dt = time.time() - t0
    check(rc == 0 and out == snap + "\n" + snap,
          "watch --count 2 (not a tty): two snapshots separated by a blank line", out[-300:] + err)
    check(0.3 <= dt < 5, f"watch --count 2 waits one interval between them ({dt:.2f} s)")
    rc, out, err = run("status", "--control", sock, "--watch", "--count", "3", "--json",
                       "--interval-ms", "100")
    ls = out.splitlines()
    check(rc == 0 and len(ls) == 3 and all(json.loads(l) == obj for l in ls),
          "watch --json --count 3: three objects, one per line", out[:300] + err)

    # on a terminal: the screen is cleared before each snapshot
    import pty
    master, slave = pty.openpty()
    p = subprocess.Popen([SWARMCTL, "status", "--control", sock, "--watch", "--count", "2",
                          "--interval-ms", "100"], stdin=subprocess.DEVNULL, stdout=slave,
                         stderr=subprocess.PIPE)
    os.close(slave)
    data = b""
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    rc = p.wait(timeout=10)
    os.close(master)
    p.stderr.close()
    tty = data.decode("utf-8", "replace")
    check(rc == 0 and tty.count("\x1b[H\x1b[2J") == 2 and tty.count("# Node") == 2 and
          "every 0.1 s" in tty, "watch on a tty: cleared and redrawn twice, with a header",
          tty[:300])

    # Ctrl-C ends it with exit 0, between snapshots (once two have been
    # printed) and while waiting for a reply (once the request has arrived)
    p = subprocess.Popen([SWARMCTL, "status", "--control", sock, "--watch", "--interval-ms",
                          "200"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    first = read_until(p, lambda d: d.count(b"# Node") >= 2, 30)
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=30)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        rc = None
    out = first + out
    check(rc == 0 and out.decode().count("# Node") >= 2,
          f"watch: Ctrl-C exits 0 (rc {rc}, {out.decode().count('# Node')} snapshots)",
          err.decode())
    fake.stop()
    mute = FakeDaemon(os.path.join(tmp, "mutew.sock"), None, record=True)
    p = subprocess.Popen([SWARMCTL, "status", "--control", mute.path, "--watch",
                          "--timeout-ms", "20000"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    asked = nu.wait_until(lambda: mute.requests(), 30, every=0.05, alive=(p, mute.proc))
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    try:
        p.communicate(timeout=30)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        rc = None
    dt = time.monotonic() - t0
    # "at once": well inside the 20 s the request would otherwise wait
    check(asked and rc == 0 and dt < 5, f"watch: Ctrl-C during a request exits 0 at once "
          f"(rc {rc}, {dt:.2f} s after the signal)")
    mute.stop()

    # failures: none at first -> exit 1 at once; the daemon going away later -> retried, exit 1
    missing = os.path.join(tmp, "nowatch.sock")
    expect_fail(["status", "--control", missing, "--watch", "--count", "5"], 1,
                [NO_DAEMON.format(missing)], "watch with no daemon")
    once = FakeDaemon(os.path.join(tmp, "once.sock"), json.dumps(obj), count=1)
    rc, out, err = run("status", "--control", once.path, "--watch", "--count", "3",
                       "--interval-ms", "200")
    check(rc == 1 and out.count("# Node") == 1 and "asking again every 200 ms" in err,
          "watch: a daemon that goes away is asked again; exit 1 when the last try failed",
          out[-200:] + err)
    once.stop()


def test_verbs_fake(tmp):
    """The acting verbs against nngcat: the request sent, the line printed, --json."""
    d = hexid("export-digest")
    cases = [
        (["pause"], {"ok": True, "state": "paused"}, {"cmd": "pause"},
         "paused: the node keeps syncing and serving; `swarmctl resume` restarts training"),
        (["resume"], {"ok": True, "state": "training"}, {"cmd": "resume"},
         "training: the node makes updates again"),
        (["resume"], {"ok": True, "state": "done"}, {"cmd": "resume"},
         "done: the run has reached max_steps; the node keeps syncing and serving"),
        (["leave"], {"ok": True}, {"cmd": "leave"},
         "leaving: the node publishes its last updates, says goodbye to its peers, writes a "
         "final checkpoint and exits"),
        (["join", "tcp://127.0.0.1:7702"], {"ok": True, "members": 3},
         {"cmd": "join", "addr": "tcp://127.0.0.1:7702"},
         "joined tcp://127.0.0.1:7702: the swarm has 3 members"),
        (["checkpoint"], {"ok": True, "updates": 120, "path": "/var/lib/swarmd/checkpoints/c120"},
         {"cmd": "checkpoint"}, "checkpoint of 120 updates: /var/lib/swarmd/checkpoints/c120"),
        (["export", "rel/out", "--dtype", "f16"],
         {"ok": True, "out": os.path.join(tmp, "rel/out"), "updates": 5, "digest": d},
         {"cmd": "export", "out": os.path.join(tmp, "rel/out"), "dtype": "f16"},
         f"exported 5 updates to {os.path.join(tmp, 'rel/out')} (F16), digest {d}"),
        (["export", "./x"], {"ok": True, "out": os.path.join(tmp, "x"), "updates": 5, "digest": d},
         {"cmd": "export", "out": os.path.join(tmp, "x"), "dtype": "f32"},
         f"exported 5 updates to {os.path.join(tmp, 'x')} (F32), digest {d}"),
        (["export", "/abs/out"], {"ok": True, "out": "/abs/out", "updates": 7, "digest": d},
         {"cmd": "export", "out": "/abs/out", "dtype": "f32"},
         f"exported 7 updates to /abs/out (F32), digest {d}"),
        (["eval", "--data", "d.jsonl"],
         {"ok": True, "loss": 3.25, "perplexity": math.exp(3.25), "tokens": 73, "records": 73,
          "accuracy": 0.25, "updates": 40},
         {"cmd": "eval", "data": os.path.join(tmp, "d.jsonl")},
         f"loss 3.250000 nats/token, perplexity {math.exp(3.25):.4f} on 73 tokens in 73 records, "
         "accuracy 0.2500; the model holds 40 updates"),
        (["eval", "--data", "/d/t.jsonl"],
         {"ok": True, "loss": 2.5, "perplexity": math.exp(2.5), "tokens": 9, "records": 2,
          "accuracy": None, "updates": 41},
         {"cmd": "eval", "data": "/d/t.jsonl"},
         f"loss 2.500000 nats/token, perplexity {math.exp(2.5):.4f} on 9 tokens in 2 records; "
         "the model holds 41 updates"),
    ]
    for i, (args, reply, want_req, want_line) in enumerate(cases):
        what = "swarmctl " + " ".join(args)
        sock = os.path.join(tmp, f"verb{i}.sock")
        fake = FakeDaemon(sock, json.dumps(reply), record=True)
        p = subprocess.run([SWARMCTL, *args, "--control", sock], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=20, cwd=tmp)
        out, err = p.stdout.decode(), p.stderr.decode()
        check(p.returncode == 0 and out == want_line + "\n", f"{what}: exit 0, {want_line!r}",
              out + err)
        p = subprocess.run([SWARMCTL, *args, "--control", sock, "--json"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=20, cwd=tmp)
        out = p.stdout.decode()
        check(p.returncode == 0 and out.count("\n") == 1 and json.loads(out) == reply,
              f"{what} --json: the reply as received, one line", out + p.stderr.decode())
        # nngcat prints a request as it answers it: wait for the second line
        reqs = nu.wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(fake.requests()),
                             10, every=0.02) or fake.requests()
        check(reqs == [want_req, want_req], f"{what}: sends {json.dumps(want_req)}", reqs)
        fake.stop()

    # the daemon's errors, and replies that are not what the contract says
    errs = [
        (["join", "tcp://10.9.9.9:7702"],
         {"error": "no answer from tcp://10.9.9.9:7702 within 10 s: is that member running?"},
         ["the daemon answered: no answer from tcp://10.9.9.9:7702 within 10 s: is that member "
          "running?"]),
        (["pause"], {"error": "unknown command: pause"},
         ["unknown command: pause", "upgrade swarmd"]),
        (["pause"], {"state": "paused"}, ['no "ok": true']),
        (["checkpoint"], "not json", ["invalid checkpoint", "not JSON"]),
    ]
    for i, (args, reply, names) in enumerate(errs):
        sock = os.path.join(tmp, f"verr{i}.sock")
        fake = FakeDaemon(sock, reply if isinstance(reply, str) else json.dumps(reply))
        expect_fail(args + ["--control", sock], 1, [sock + ": "] + names,
                    f"{' '.join(args)} answered {str(reply)[:40]}")
        fake.stop()
    for verb in (["pause"], ["resume"], ["leave"], ["join", "tcp://127.0.0.1:1"], ["checkpoint"],
                 ["export", "/tmp/x"], ["eval", "--data", "/tmp/x.jsonl"]):
        sd = os.path.join(tmp, "nodir")
        expect_fail(verb + ["--state-dir", sd], 1, [NO_DAEMON.format(sd + "/control.sock")],
                    f"{verb[0]} with no daemon")
    mute = FakeDaemon(os.path.join(tmp, "mutev.sock"), None)
    t0 = time.time()
    expect_fail(["export", "/tmp/x", "--control", mute.path, "--timeout-ms", "300"], 1,
                ["within 300 ms"], "export to a daemon that never answers")
    check(time.time() - t0 < 5, "export: --timeout-ms is honoured")
    mute.stop()


def test_verbs_usage(tmp):
    cases = [
        (["join"], ["missing ADDR"]),
        (["join", "10.0.0.1:7702"], ["10.0.0.1:7702", "tcp://HOST:PORT"]),
        (["join", "tcp://a:1", "tcp://b:2"], ["tcp://b:2"]),
        (["export"], ["missing OUT_DIR"]),
        (["export", "o", "--dtype", "bf16"], ["--dtype", "bf16"]),
        (["export", ""], ["OUT_DIR", "empty"]),
        (["eval"], ["--data", "missing"]),
        (["eval", "--data", ""], ["--data", "empty"]),
        (["eval", "x.jsonl"], ["x.jsonl"]),
        (["pause", "now"], ["now"]),
        (["checkpoint", "--bogus"], ["--bogus"]),
        (["leave", "--control", "x", "--state-dir", "y"], ["--control"]),
        (["resume", "--timeout-ms", "-1"], ["--timeout-ms"]),
        (["status", "--count", "2"], ["--count", "only with --watch"]),
        (["status", "--watch", "--interval-ms", "50"], ["--interval-ms"]),
        (["status", "--watch", "--count", "0"], ["--count"]),
    ]
    for args, names in cases:
        err = expect_fail(args, 2, names, "swarmctl " + " ".join(args))
        check("--help" in err, f"swarmctl {' '.join(args)}: points at --help", err)
    verbs = ["pause", "resume", "leave", "join", "checkpoint", "export", "eval"]
    for verb in verbs:
        rc, out, err = run(verb, "--help")
        check(rc == 0 and out.startswith(f"Usage: swarmctl {verb}") and "--state-dir" in out and
              "--json" in out and "--timeout-ms" in out,
              f"{verb} --help: usage on stdout, exit 0", out + err)
    rc, out, err = run("--help")
    check(rc == 0 and all(f"  {v} " in out for v in verbs), "swarmctl --help lists the verbs", out)


def main():
    for p in (SWARMCTL, NNGCAT):
        if not os.access(p, os.X_OK):
            print(f"{p}: not found")
            return 1
    t0 = time.time()
    # Unix socket paths are short (108 bytes): keep the temp dir near the root.
    tmp = tempfile.mkdtemp(prefix="sw_st_", dir="/tmp")
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    try:
        test_no_daemon(tmp)
        test_status(tmp)
        test_bad_replies(tmp)
        test_permission(tmp)
        test_usage(tmp)
        test_status_v2(tmp)
        test_old_daemon(tmp)
        test_watch(tmp)
        test_verbs_fake(tmp)
        test_verbs_usage(tmp)
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"cli_status: {time.time() - t0:.1f} s")
    print(f"{nu.passed} passed, {nu.failed} failed")
    return 1 if nu.failed or nu.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(nu.run_test(main))
