"""swarmd's Prometheus metrics, checked by promtool and against the JSON status.

Two swarmd nodes on loopback (a founder and a joiner, each with
`[node] metrics = 127.0.0.1:0`) train a short run together.  Their real
`swarmctl status --json` objects, taken early and once both are done, are
rendered by tests/tools/metrics_render (daemon/metrics.c, the code swarmd
serves with); for each rendering:
  - `promtool check metrics` (Debian's prometheus package) exits 0 and
    reports no lint problem;
  - every sample equals the status field it comes from (the mapping is written
    out here, independently of the C code), a field that is null or missing
    has no metric, and no metric is left unchecked;
  - every metric is documented in docs/operations.md (whose example scrape
    configuration and alerting rules pass promtool check config / rules).
Then each live endpoint (its URL from the daemon's `msg="metrics listening"`
log line) is scraped: HTTP 200 with the exposition content type, promtool
clean, values equal to a status taken right after (counters not above it),
404 for another path and 405 for POST.
"""
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import nodeutil as nu  # noqa: E402
from nodeutil import check  # noqa: E402

MAX_STEPS = 16
RENDER = os.path.join(nu.BUILD, "tests", "metrics_render")
PROMTOOL = "/usr/bin/promtool"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# metric, type, status section, key: one unlabelled sample, or none when the
# field is null or missing
SCALARS = [
    ("swarmd_step", "gauge", "node", "step"),
    ("swarmd_max_steps", "gauge", "node", "max_steps"),
    ("swarmd_uptime_seconds", "gauge", "node", "uptime_s"),
    ("swarmd_steps_total", "counter", "train", "steps"),
    ("swarmd_updates_made_total", "counter", "train", "updates_made"),
    ("swarmd_loss", "gauge", "train", "loss"),
    ("swarmd_steps_per_second", "gauge", "train", "steps_per_s"),
    ("swarmd_update_scale", "gauge", "train", "scale"),
    ("swarmd_saturations_total", "counter", "train", "saturations"),
    ("swarmd_ledger_updates", "gauge", "ledger", "updates"),
    ("swarmd_checkpoint_updates", "gauge", "ledger", "checkpoint_updates"),
    ("swarmd_valid_step", "gauge", "valid", "step"),
    ("swarmd_valid_loss", "gauge", "valid", "loss"),
    ("swarmd_valid_accuracy", "gauge", "valid", "accuracy"),
    ("swarmd_valid_seconds", "gauge", "valid", "seconds"),
    ("swarmd_valid_evals_total", "counter", "valid", "evals"),
    ("swarmd_valid_failures_total", "counter", "valid", "failures"),
    ("swarmd_valid_best_step", "gauge", "valid", "best_step"),
    ("swarmd_valid_best_loss", "gauge", "valid", "best_loss"),
    ("swarmd_valid_best_accuracy", "gauge", "valid", "best_accuracy"),
    ("swarmd_digest_updates", "gauge", "model", "digest_updates"),
    ("swarmd_updates_received_total", "counter", "net", "updates_in"),
    ("swarmd_updates_applied_total", "counter", "net", "updates_applied"),
    ("swarmd_updates_sent_total", "counter", "net", "updates_out"),
    ("swarmd_batches_sent_total", "counter", "net", "batches_out"),
    ("swarmd_messages_received_total", "counter", "net", "msgs_in"),
    ("swarmd_messages_sent_total", "counter", "net", "msgs_out"),
    ("swarmd_bytes_received_total", "counter", "net", "bytes_in"),
    ("swarmd_bytes_sent_total", "counter", "net", "bytes_out"),
    ("swarmd_sync_requests_failed_total", "counter", "net", "requests_failed"),
    ("swarmd_sync_lag_updates", "gauge", "swarm", "lag_updates"),
]
# the and the task's list: present in every complete status
REQUIRED = ["swarmd_steps_total", "swarmd_updates_made_total", "swarmd_updates_received_total",
            "swarmd_updates_applied_total", "swarmd_messages_dropped_total",
            "swarmd_bytes_received_total", "swarmd_bytes_sent_total", "swarmd_peers",
            "swarmd_steps_per_second", "swarmd_step_duration_seconds",
            "swarmd_sync_lag_updates", "swarmd_ledger_updates", "swarmd_saturations_total",
            "swarmd_info", "swarmd_node_state", "swarmd_max_steps", "swarmd_step"]
NODE_STATES = {"joining", "training", "done", "paused", "syncing"}
PEER_STATES = ["joining", "alive", "suspect", "dead", "left"]


def parse_labels(s):
    """{name: value} from the inside of {...}, unescaping \\\\, \\" and \\n."""
    labels, i = {}, 0
    while i < len(s):
        m = re.match(r'([a-zA-Z_][a-zA-Z0-9_]*)="', s[i:])
        if not m:
            raise ValueError(f"bad labels: {s!r}")
        name, i, val = m.group(1), i + m.end(), []
        while s[i] != '"':
            if s[i] == "\\":
                val.append({"\\": "\\", '"': '"', "n": "\n"}[s[i + 1]])
                i += 2
            else:
                val.append(s[i])
                i += 1
        labels[name] = "".join(val)
        i += 1
        if i < len(s):
            if s[i] != ",":
                raise ValueError(f"bad labels: {s!r}")
            i += 1
    return labels


def parse(text):
    """(types {family: type}, samples [(name, labels, raw value)])."""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
        elif line.startswith("#") or not line:
            continue
        else:
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
            if not m:
                raise ValueError(f"bad sample line: {line!r}")
            samples.append((m.group(1), parse_labels(m.group(2) or ""), m.group(3)))
    return types, samples


def same(raw, v):
    """The sample text is exactly the JSON value (ints digit for digit)."""
    if isinstance(v, bool):
        return raw == ("1" if v else "0")
    if isinstance(v, int):
        return raw == str(v)
    if isinstance(v, float):
        return float(raw) == v
    return False


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def get(st, section, key):
    sec = st.get(section)
    return sec.get(key) if isinstance(sec, dict) else None


def expected(st):
    """The samples the status calls for: {(name, frozenset(labels)): value},
    and {family: type}.  Written from docs/operations.md, not from the C code."""
    want, types = {}, {}

    def add(family, typ, value, name=None, **labels):
        types[family] = typ
        want[(name or family, frozenset(labels.items()))] = value

    for name, typ, section, key in SCALARS:
        v = get(st, section, key)
        if is_num(v):
            add(name, typ, v)
    node = st.get("node") or {}
    info = {lab: node[k] for lab, k in (("node_id", "id"), ("run_id", "run_id"),
                                        ("version", "version")) if isinstance(node.get(k), str)}
    if info:
        add("swarmd_info", "gauge", 1, **info)
    if isinstance(node.get("state"), str):
        for s in NODE_STATES | {node["state"]}:
            add("swarmd_node_state", "gauge", int(s == node["state"]), state=s)
    for reason, n in ((get(st, "net", "dropped") or {}).items()):
        if is_num(n):
            add("swarmd_messages_dropped_total", "counter", n, reason=reason)
    by_state = get(st, "swarm", "peers_by_state")
    peers = st.get("peers")
    if isinstance(by_state, dict):
        for s, n in by_state.items():
            if is_num(n):
                add("swarmd_peers", "gauge", n, state=s)
    elif isinstance(peers, list):
        for s in PEER_STATES:
            add("swarmd_peers", "gauge", sum(p.get("state") == s for p in peers), state=s)
    if isinstance(peers, list):
        add("swarmd_peers_lagging", "gauge", sum(p.get("lagging") is True for p in peers))
        add("swarmd_peers_banned", "gauge", sum(p.get("banned") is True for p in peers))
    agreement = get(st, "swarm", "agreement") or {}
    if isinstance(agreement.get("agree"), bool):
        add("swarmd_digest_agreement", "gauge", agreement["agree"])
    for key, name in (("peers_compared", "swarmd_digest_peers_compared"),
                      ("peers_agree", "swarmd_digest_peers_agreeing")):
        if is_num(agreement.get(key)):
            add(name, "gauge", agreement[key])
    if isinstance(get(st, "swarm", "warnings"), list):
        add("swarmd_warnings", "gauge", len(st["swarm"]["warnings"]))
    h = get(st, "train", "step_seconds")
    if isinstance(h, dict):
        fam = "swarmd_step_duration_seconds"
        for le, c in zip(h["buckets"], h["counts"]):
            # Prometheus compares le as a number; the text is checked below
            add(fam, "histogram", c, fam + "_bucket", le=float(le))
        add(fam, "histogram", h["count"], fam + "_bucket", le=float("inf"))
        add(fam, "histogram", h["sum"], fam + "_sum")
        add(fam, "histogram", h["count"], fam + "_count")
    return want, types


def normalise(samples):
    """{(name, labels): raw}; le labels as numbers."""
    got = {}
    for name, labels, raw in samples:
        if "le" in labels:
            labels = dict(labels, le=float(labels["le"]))
        key = (name, frozenset(labels.items()))
        if key in got:
            raise ValueError(f"duplicate sample {name}{labels}")
        got[key] = raw
    return got


def promtool(text, what):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=60)
    out = (p.stdout + p.stderr).decode("utf-8", "replace").strip()
    check(p.returncode == 0 and out == "", f"{what}: promtool check metrics: exit 0, no problems",
          f"exit {p.returncode}\n{out}")


def value_differences(got, want, counters_at_most, skip):
    """The samples of got (normalised) whose value is not the status's (want)."""
    bad = []
    for key, v in want.items():
        name = key[0]
        if key not in got or name in skip:
            continue
        raw = got[key]
        monotonic = name.endswith("_total") or name == "swarmd_uptime_seconds"
        if counters_at_most and monotonic and is_num(v) and float(raw) <= v:
            continue
        if not same(raw, v):
            bad.append(f"{name}{dict(key[1])}: {raw} != {v!r}")
    return bad


def differences(text, st, counters_at_most, skip):
    """Why the exposition text is not (yet) the status st, [] when it is."""
    try:
        got = normalise(parse(text)[1])
    except (ValueError, KeyError, IndexError) as e:
        return [f"does not parse: {e}"]
    want, _ = expected(st)
    return ([f"missing {k}" for k in want if k not in got] +
            [f"unexpected {k}" for k in got if k not in want] +
            value_differences(got, want, counters_at_most, skip))


def compare(text, st, what, counters_at_most=False, skip=()):
    """Every sample of text against status st.  counters_at_most: text was
    scraped before st was taken, so counters and uptime may be lower."""
    try:
        types, samples = parse(text)
        got = normalise(samples)
    except (ValueError, KeyError, IndexError) as e:
        check(False, f"{what}: the exposition parses", e)
        return
    want, want_types = expected(st)
    check(types == want_types, f"{what}: {len(types)} metric families with the expected types",
          {k: (types.get(k), want_types.get(k)) for k in set(types) | set(want_types)
           if types.get(k) != want_types.get(k)})
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    check(not missing and not extra, f"{what}: {len(got)} samples, one per status field",
          f"missing {missing}\nunexpected {extra}")
    bad = value_differences(got, want, counters_at_most, skip)
    check(not bad, f"{what}: every value equals its status field", "\n".join(bad))
    le = [l for l in text.splitlines() if "_bucket{" in l]
    check(all(re.search(r'le="(\+Inf|[0-9.e+-]+)"', l) for l in le) and
          (not le or 'le="+Inf"' in le[-1]), f"{what}: histogram bounds are numbers, +Inf last",
          le)


def required_present(text, what):
    types, _ = parse(text)
    missing = [m for m in REQUIRED if m not in types]
    check(not missing, f"{what}: the {len(REQUIRED)} required metrics are all there", missing)


def documented(texts):
    with open(os.path.join(nu.SOURCE, "docs", "operations.md")) as f:
        doc = f.read()
    fams = set()
    for t in texts:
        fams |= set(parse(t)[0])
    missing = sorted(f for f in fams if f"`{f}`" not in doc)
    check(fams and not missing, f"all {len(fams)} metrics are documented in docs/operations.md",
          missing)


def doc_examples(root):
    """The scrape configuration and the alerting rules in docs/operations.md
    pass promtool check config / check rules."""
    with open(os.path.join(nu.SOURCE, "docs", "operations.md")) as f:
        blocks = re.findall(r"```yaml\n(.*?)```", f.read(), re.S)
    for head, cmd in (("scrape_configs:", "config"), ("groups:", "rules")):
        block = next((b for b in blocks if b.startswith(head)), None)
        if not check(block is not None, f"docs/operations.md has a {head} example"):
            continue
        path = os.path.join(root, f"example-{cmd}.yml")
        with open(path, "w") as f:
            f.write(block)
        p = subprocess.run([PROMTOOL, "check", cmd, path], capture_output=True, timeout=60)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        check(p.returncode == 0 and "WARNING" not in out.upper(),
              f"docs/operations.md {head} example: promtool check {cmd} exit 0", out)


def render(status_path):
    p = subprocess.run([RENDER, status_path], capture_output=True, timeout=30)
    if not check(p.returncode == 0, f"metrics_render {os.path.basename(status_path)}: exit 0",
                 p.stderr.decode("utf-8", "replace")):
        return None
    return p.stdout.decode("utf-8")


def status_text(state_dir):
    """`swarmctl status --json` as printed (saved as is) and parsed."""
    rc, out, err = nu.swarmctl("status", "--json", "--state-dir", state_dir, timeout=15)
    if rc != 0:
        return None, None
    return out, json.loads(out)


def metrics_url(node):
    m = re.search(r'msg="metrics listening" url=(\S+)', node.log_text())
    return m.group(1) if m else None


def http(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode("utf-8", "replace")


LIVE_SKIP = ("swarmd_steps_per_second",)


def live(node, name):
    """Scrapes the node's endpoint and compares with a status taken after.

    The endpoint serves what the loop published last (once a second): scrape
    and status are taken again until they agree (a bounded wait: however slow
    the machine, the published state catches up with the settled one), and
    that pair is checked."""
    url = metrics_url(node)
    if not check(url is not None,
                 f"{name}: swarmd logs msg=\"metrics listening\" url=... ([node] metrics)",
                 "no such line: does this swarmd serve [node] metrics?\n" + node.log_text(15)):
        return None
    check(url.startswith("http://127.0.0.1:") and url.endswith("/metrics"),
          f"{name}: the URL names the bound port ({url})")
    tries = []

    def scraped():
        try:
            code, ctype, text = http(url)
        except OSError as e:
            code, ctype, text = None, None, repr(e)
        _, st = status_text(node.state_dir)
        tries.append((code, ctype, text, st))
        return code == 200 and st is not None and not differences(text, st, True, LIVE_SKIP)
    agreed = nu.wait_until(scraped, 60, every=0.5, alive=(node,))
    code, ctype, text, st = tries[-1]
    print(f"      {name}: scrape and status agreed after {len(tries)} scrape(s)"
          if agreed else f"      {name}: scrape and status still differ after {len(tries)} scrapes")
    if not check(code == 200 and st is not None, f"{name}: GET {url} answers 200",
                 f"{code} {text[:500]}"):
        return None
    check(ctype == CONTENT_TYPE, f"{name}: Content-Type: {CONTENT_TYPE}", ctype)
    promtool(text, f"{name} live")
    # scraped up to a second before the status (published once a second)
    compare(text, st, f"{name} live", counters_at_most=True, skip=LIVE_SKIP)
    base = url[:-len("/metrics")]
    check(http(base + "/other")[0] == 404, f"{name}: GET /other answers 404")
    check(http(url, "POST")[0] == 405, f"{name}: POST /metrics answers 405")
    return text


def main():
    t0 = time.time()
    if not nu.require_binaries(RENDER):
        return 1
    if not check(os.access(PROMTOOL, os.X_OK), f"{PROMTOOL} is installed",
                 "install Debian's prometheus package (deploy/install-deps.sh test)"):
        return nu.finish("metrics_promtool", t0)
    root = nu.tmpdir("metrics-promtool-")
    shards = nu.shard(os.path.join(nu.DATA, "topic-train.jsonl"), 2, root)

    a_cfg = nu.swarm_config(os.path.join(root, "a", "state"), data=shards[0],
                            max_steps=MAX_STEPS, max_scale=1.0, seed=1)
    a_cfg["node"]["metrics"] = "127.0.0.1:0"
    a = nu.Node(os.path.join(root, "a"), a_cfg)
    a.start(until_done=False)
    saved = []  # (label, path to the status JSON as swarmctl printed it)
    early = nu.wait_until(lambda: status_text(a.state_dir)[0], 120, every=0.1, alive=(a,))
    if not check(early is not None, "the founder answers swarmctl status", a.log_text(20)):
        return nu.finish("metrics_promtool", t0)
    path = os.path.join(root, "status-early.json")
    with open(path, "w") as f:
        f.write(early)
    saved.append(("early status", path))

    b_cfg = nu.swarm_config(os.path.join(root, "b", "state"), bootstrap=nu.sync_addr(a_cfg),
                            data=shards[1], seed=2)
    for k in ("max_steps", "lr", "eps"):
        b_cfg["train"].pop(k)
    b_cfg["node"]["metrics"] = "127.0.0.1:0"
    b = nu.Node(os.path.join(root, "b"), b_cfg)
    b.start(until_done=False)
    nodes = [a, b]
    dirs = [n.state_dir for n in nodes]
    sts = nu.wait_done_converged(nodes)
    if not check(sts is not None, "two nodes train to max_steps and converge",
                 "\n\n".join(n.log_text(15) for n in nodes)):
        return nu.finish("metrics_promtool", t0)
    # Agreement compares with the digest a peer last announced (at most a
    # heartbeat old): wait until each node has heard the other's final one.
    agreed = nu.wait_until(lambda: all(((s or {}).get("swarm") or {}).get("agreement", {})
                                       .get("agree") is True
                                       for s in (nu.status(d) for d in dirs)), 60, every=0.25,
                           alive=nodes)
    check(agreed, "both nodes report agreement with the other's announced digest")
    for n, name in zip(nodes, ("founder", "joiner")):
        text, _ = status_text(n.state_dir)
        if check(text is not None, f"{name}: swarmctl status --json after the run"):
            path = os.path.join(root, f"status-{name}.json")
            with open(path, "w") as f:
                f.write(text)
            saved.append((f"{name} status", path))

    texts = []
    for what, path in saved:
        text = render(path)
        if text is None:
            continue
        texts.append(text)
        with open(path) as f:
            st = json.load(f)
        print(f"      {what}: node {st['node']['state']}, step {st['node']['step']}, "
              f"{len(text.splitlines())} lines")
        promtool(text, what)
        compare(text, st, what)
        if what != "early status":
            required_present(text, what)
    # the two converged replicas compared their digests
    for what, path in saved[1:]:
        with open(path) as f:
            st = json.load(f)
        ag = (st.get("swarm") or {}).get("agreement") or {}
        check(ag.get("agree") is True and "swarmd_digest_agreement 1\n" in render(path),
              f"{what}: digest agreement 1 (the replicas agree)", ag)

    for n, name in zip(nodes, ("founder", "joiner")):
        text = live(n, name)
        if text:
            texts.append(text)
    documented(texts)
    doc_examples(root)

    for n in nodes:
        n.proc.terminate()
    for n in nodes:
        check(n.wait(60) == 0, f"{os.path.basename(n.root)} stops with exit 0 on SIGTERM",
              n.log_text(10))
    return nu.finish("metrics_promtool", t0)


if __name__ == "__main__":
    sys.exit(nu.run_test(main))
