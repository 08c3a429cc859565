#!/usr/bin/python3
"""deploy/swarmd.service and deploy/install.sh, without systemd as PID 1.

  - `systemd-analyze verify` accepts the unit (on a copy whose ExecStart names
    the built swarmd) with no message at all; on the file as shipped the only
    message is the missing /usr/local/bin/swarmd; a misspelled key in a copy
    is reported (the check can fail);
  - the unit keeps the directives the deployment relies on (Type=notify,
    watchdog, restart policy, state directory, hardening) and
    `systemd-analyze security --offline=true` rates it at most 2.0;
  - the hardening does not change training: swarmd run under the unit's
    system call filter (@system-service minus @privileged, EPERM), its
    MemoryDenyWriteExecute rules (the same seccomp rules systemd 252 loads) and
    no_new_privs, through libseccomp, gives a byte-identical model to an
    unrestricted run with the same identity;
  - `install.sh --root TMP --dry-run` changes nothing; `install.sh --root TMP`
    installs binaries (0755), model, data and docs (0644), the unit and the
    config, skips the system user with a message, and a second run changes no
    file and keeps an edited config; the installed config validates
    (`swarmd --check-config`, paths moved into TMP); --prefix moves ExecStart.
"""
import ctypes
import ctypes.util
import errno
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time

import nodeutil as nu
from nodeutil import check
from deployutil import ini_entries, run

UNIT = os.path.join(nu.SOURCE, "deploy", "swarmd.service")
INSTALL = os.path.join(nu.SOURCE, "deploy", "install.sh")
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def unit_copy(root, name, edit=None):
    """The unit with ExecStart on the built swarmd (and edit applied), in root."""
    with open(UNIT) as f:
        text = f.read()
    text = text.replace("ExecStart=/usr/local/bin/swarmd ",
                        f"ExecStart={os.path.abspath(nu.SWARMD)} ", 1)
    if edit:
        text = edit(text)
    path = os.path.join(root, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def unit_keys(path):
    """[Section] Key -> list of values, in order."""
    keys = {}
    for section, k, v in ini_entries(path):
        keys.setdefault(f"{section}.{k}", []).append(v)
    return keys


def check_unit(root):
    if not check(os.access(ANALYZE, os.X_OK), f"{ANALYZE} exists (Debian's systemd package)"):
        return
    good = unit_copy(root, "swarmd.service")
    rc, out, err = run([ANALYZE, "verify", good])
    check(rc == 0 and not err.strip() and not out.strip(),
          f"systemd-analyze verify (ExecStart={nu.SWARMD}): exit {rc}, no messages", err + out)

    rc, out, err = run([ANALYZE, "verify", UNIT])
    msgs = [l for l in (err + out).splitlines() if l.strip()]
    check(len(msgs) == 1 and "/usr/local/bin/swarmd is not executable" in msgs[0],
          "systemd-analyze verify deploy/swarmd.service: the only message is the "
          "binary not installed here", "\n".join(msgs))

    bad = unit_copy(root, "swarmd-bad.service",
                    lambda t: t.replace("LockPersonality=yes", "LockPersonallity=yes"))
    rc, out, err = run([ANALYZE, "verify", bad])
    check("LockPersonallity" in err + out,
          "systemd-analyze verify reports a misspelled key (the check can fail)", err + out)

    k = unit_keys(UNIT)
    want = {
        "Service.Type": "notify", "Service.NotifyAccess": "main", "Service.WatchdogSec": "30",
        "Service.Restart": "on-failure", "Service.RestartPreventExitStatus": "2",
        "Service.User": "swarmd", "Service.DynamicUser": "no",
        "Service.StateDirectory": "swarmd", "Service.StateDirectoryMode": "0700",
        "Service.ConfigurationDirectory": "swarmd", "Service.KillSignal": "SIGTERM",
        "Service.TimeoutStopSec": "60", "Service.NoNewPrivileges": "yes",
        "Service.ProtectSystem": "strict", "Service.ProtectHome": "yes",
        "Service.PrivateTmp": "yes", "Service.PrivateDevices": "yes",
        "Service.MemoryDenyWriteExecute": "yes", "Service.CapabilityBoundingSet": "",
        "Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "Service.ExecStart": "/usr/local/bin/swarmd --config /etc/swarmd/swarmd.ini",
    }
    wrong = {key: (k.get(key), v) for key, v in want.items() if k.get(key, [None])[-1] != v}
    check(not wrong, f"the unit sets the {len(want)} directives the deployment relies on",
          "\n".join(f"{key}: {got} (want {v})" for key, (got, v) in wrong.items()))
    check(k.get("Service.SystemCallFilter") == ["@system-service", "~@privileged"],
          f"SystemCallFilter = {k.get('Service.SystemCallFilter')}")
    # The graceful stop: up to 10 s of drain plus the final checkpoint.
    check(int(k["Service.TimeoutStopSec"][-1]) >= 30, "TimeoutStopSec leaves room for the drain")

    rc, out, err = run([ANALYZE, "security", "--offline=true", good])
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out + err)
    score = float(m.group(1)) if m else None
    check(rc == 0 and score is not None and score <= 2.0,
          f"systemd-analyze security --offline: exposure {score} <= 2.0", (out + err)[-2000:])


# --- the unit's sandbox, applied with libseccomp -----------------------------

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO_EPERM = 0x00050000 | errno.EPERM
SCMP_ACT_ERRNO_EAFNOSUPPORT = 0x00050000 | errno.EAFNOSUPPORT
SCMP_CMP_EQ, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ = 4, 6, 7
AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def syscall_set(group, seen=None):
    """The system calls of a systemd group, nested groups expanded."""
    seen = set() if seen is None else seen
    rc, out, _ = run([ANALYZE, "syscall-filter", group])
    names = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            if line not in seen:
                seen.add(line)
                names |= syscall_set(line, seen)
        else:
            names.add(line)
    return names


def sandbox_preexec(allowed):
    """A preexec_fn loading seccomp filters like the unit's: systemd 252's
    MemoryDenyWriteExecute and RestrictAddressFamilies rules, then the
    SystemCallFilter allow list (else EPERM)."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ScmpArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    nrs = [n for n in (lib.seccomp_syscall_resolve_name(s.encode()) for s in sorted(allowed))
           if n >= 0]

    def cmp(arg, op, a, b=0):
        c = (ScmpArgCmp * 1)()
        c[0] = ScmpArgCmp(arg, op, a, b)
        return c

    def masked(arg, mask, value):
        return cmp(arg, SCMP_CMP_MASKED_EQ, mask, value)

    def pre():
        # The W+X rules first: the allow list would refuse loading another filter.
        g = lib.seccomp_init(SCMP_ACT_ALLOW)
        rules = [("mmap", 2, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC),
                 ("mprotect", 2, PROT_EXEC, PROT_EXEC), ("pkey_mprotect", 2, PROT_EXEC, PROT_EXEC),
                 ("shmat", 2, SHM_EXEC, SHM_EXEC)]
        for name, arg, mask, value in rules:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr >= 0 and lib.seccomp_rule_add_array(g, SCMP_ACT_ERRNO_EPERM, nr, 1,
                                                      masked(arg, mask, value)) != 0:
                os._exit(120)
        # socket(2) of a family other than AF_UNIX, AF_INET, AF_INET6
        nr = lib.seccomp_syscall_resolve_name(b"socket")
        others = [cmp(0, SCMP_CMP_EQ, fam) for fam in range(AF_INET6)
                  if fam not in (AF_UNIX, AF_INET)] + [cmp(0, SCMP_CMP_GT, AF_INET6)]
        for c in others:
            if lib.seccomp_rule_add_array(g, SCMP_ACT_ERRNO_EAFNOSUPPORT, nr, 1, c) != 0:
                os._exit(124)
        if lib.seccomp_load(g) != 0:  # sets no_new_privs first, as NoNewPrivileges=yes
            os._exit(121)
        f = lib.seccomp_init(SCMP_ACT_ERRNO_EPERM)
        for nr in nrs:
            if lib.seccomp_rule_add_array(f, SCMP_ACT_ALLOW, nr, 0, None) != 0:
                os._exit(122)
        if lib.seccomp_load(f) != 0:
            os._exit(123)

    return pre, len(nrs)


def train(root, name, key, preexec=None):
    d = os.path.join(root, name)
    cfg = nu.default_config(os.path.join(d, "state"), max_steps=12)
    cfg["node"]["identity"] = key
    node = nu.Node(d, cfg)
    with open(node.log, "ab") as logf:
        p = subprocess.Popen([nu.SWARMD, "--config", node.config, "--until-done"],
                             stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             preexec_fn=preexec)
    nu._children.append(p)
    try:
        rc = p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = None
    if not check(rc == 0, f"{name}: swarmd --until-done exits 0 (rc {rc})", node.log_text(20)):
        return None
    return nu.export(node.state_dir, os.path.join(d, "export"))


def check_sandbox(root):
    allowed = syscall_set("@system-service") - syscall_set("@privileged")
    if not check(len(allowed) > 100, f"@system-service minus @privileged: {len(allowed)} calls"):
        return
    pre, n = sandbox_preexec(allowed)
    # The sandbox is on: W+X memory and a privileged call fail with EPERM in it,
    # a netlink socket with EAFNOSUPPORT.
    probe = ("import mmap, os, socket\n"
             "try:\n    mmap.mmap(-1, 4096, prot=7); print('wx allowed')\n"
             "except OSError as e: print('wx', e.errno)\n"
             "try:\n    os.chown('.', os.getuid(), os.getgid()); print('chown allowed')\n"
             "except OSError as e: print('chown', e.errno)\n"
             "try:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW); print('nl allowed')\n"
             "except OSError as e: print('netlink', e.errno)\n"
             "socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close(); print('inet6 ok')\n")
    p = subprocess.run([sys.executable, "-c", probe], preexec_fn=pre, capture_output=True,
                       text=True, timeout=60)
    want = ["wx", str(errno.EPERM), "chown", str(errno.EPERM), "netlink",
            str(errno.EAFNOSUPPORT), "inet6", "ok"]
    check(p.returncode == 0 and p.stdout.split() == want,
          f"in the sandbox W+X mmap and chown fail (EPERM), a netlink socket too "
          f"(EAFNOSUPPORT), an AF_INET6 one opens: {p.stdout.split()}", p.stderr)
    key, _ = nu.write_identity(os.path.join(root, "identity.key"), "systemd_unit")
    plain = train(root, "plain", key)
    boxed = train(root, "sandboxed", key, pre)
    if plain and boxed:
        same, why = nu.same_export(plain, boxed)
        check(same, f"under the unit's seccomp filter ({n} calls allowed, W+X refused) the model "
              f"is byte-identical to an unrestricted run ({why})", why)
        log = open(os.path.join(root, "sandboxed", "swarmd.log"), errors="replace").read()
        check("level=error" not in log, "the sandboxed run logged no error",
              "\n".join(l for l in log.splitlines() if "level=error" in l))


# --- install.sh ---------------------------------------------------------------

def tree(top):
    """relative path -> (mode, sha256 or None for a directory)."""
    out = {}
    for d, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            h = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, top)] = (stat.S_IMODE(st.st_mode), h)
    return out


def install(*args):
    return run(["sh", INSTALL, "--build-dir", nu.BUILD, "--no-build", *args], timeout=120)


def check_install(root):
    stage = os.path.join(root, "stage")
    os.makedirs(stage)
    rc, out, err = install("--root", stage, "--dry-run")
    check(rc == 0 and "would install" in out and os.listdir(stage) == [],
          f"install.sh --root --dry-run: exit {rc}, prints its plan, creates nothing",
          err + out[-1500:])

    rc, out, err = install("--root", stage)
    if not check(rc == 0, f"install.sh --root {stage}: exit 0", err + out[-1500:]):
        return
    check("not creating the system user" in out and "useradd --system" in out,
          "under --root no user is created, and the useradd to run is printed", out)
    check("systemctl daemon-reload && systemctl enable --now swarmd" in out
          and "journalctl -u swarmd -f" in out
          and "swarmctl status --state-dir /var/lib/swarmd" in out, "next steps printed", out)
    t = tree(stage)
    share = "usr/local/share/swarmtune"
    expect = {
        "usr/local/bin/swarmd": 0o755, "usr/local/bin/swarmctl": 0o755,
        "etc/systemd/system/swarmd.service": 0o644, "etc/swarmd/swarmd.ini": 0o644,
        f"{share}/models/tiny-gpt2-fortunes/model.safetensors": 0o644,
        f"{share}/models/tiny-gpt2-fortunes/vocab.json": 0o644,
        f"{share}/models/tiny-gpt2-fortunes/merges.txt": 0o644,
        f"{share}/models/tiny-gpt2-fortunes/config.json": 0o644,
        f"{share}/data/topic-train.jsonl": 0o644,
        "usr/local/share/doc/swarmtune/configuration.md": 0o644,
    }
    bad = {p: (oct(t[p][0]) if p in t else "missing", oct(m)) for p, m in expect.items()
           if p not in t or t[p][0] != m}
    check(not bad, f"{len(expect)} installed files with their modes ({len(t)} entries in all)",
          "\n".join(f"{p}: {got} (want {w})" for p, (got, w) in bad.items()))
    dirs = [p for p, (m, h) in t.items() if h is None and m != 0o755]
    check(not dirs, "every installed directory is 0755", "\n".join(dirs))
    leftovers = [p for p in t if ".new." in p]
    check(not leftovers, "no temporary files left", "\n".join(leftovers))
    check(t.get("usr/local/bin/swarmd", (0, 1))[1] == tree(os.path.dirname(nu.SWARMD))
          .get("swarmd", (0, 2))[1], "the installed swarmd is the built one")
    rc, out2, err2 = run([os.path.join(stage, "usr/local/bin/swarmd"), "--version"])
    check(rc == 0 and out2.startswith("swarmd "), f"installed swarmd --version: {out2.strip()}")

    k = unit_keys(os.path.join(stage, "etc/systemd/system/swarmd.service"))
    check(k.get("Service.ExecStart") == ["/usr/local/bin/swarmd --config /etc/swarmd/swarmd.ini"],
          f"installed unit: ExecStart={k.get('Service.ExecStart')}")
    ini_path = os.path.join(stage, "etc/swarmd/swarmd.ini")
    ini = open(ini_path).read()
    check(re.search(r"^state_dir = /var/lib/swarmd$", ini, re.M)
          and re.search(r"^path = /usr/local/share/swarmtune/models/tiny-gpt2-fortunes$", ini, re.M)
          and re.search(r"^train = /usr/local/share/swarmtune/data/topic-train.jsonl$", ini, re.M)
          and re.search(r"^valid = /usr/local/share/swarmtune/data/topic-test.jsonl$", ini, re.M)
          and not re.search(r"^bootstrap", ini, re.M),
          "installed config: state_dir /var/lib/swarmd, the installed model and data, "
          "no bootstrap (founds a swarm)", ini[:1500])
    # The same config, its /usr/local paths moved into the staging root, validates.
    staged = os.path.join(root, "staged.ini")
    with open(staged, "w") as f:
        f.write(ini.replace("= /usr/local/", f"= {stage}/usr/local/")
                .replace("= /var/lib/swarmd", f"= {root}/var-lib-swarmd"))
    rc, out2, err2 = run([nu.SWARMD, "--config", staged, "--check-config"])
    check(rc == 0, "the installed config passes swarmd --check-config", err2)

    # Idempotent: nothing changes, and an edited config is kept.
    with open(ini_path, "a") as f:
        f.write("# edited by the operator\n")
    before = tree(stage)
    rc, out, err = install("--root", stage)
    after = tree(stage)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    check(rc == 0 and not changed and "exists: kept" in out,
          f"a second install.sh run: exit {rc}, no file changed, the edited config kept",
          err + "\n".join(changed))

    other = os.path.join(root, "stage-opt")
    rc, out, err = install("--root", other, "--prefix", "/opt/swarmtune")
    k = unit_keys(os.path.join(other, "etc/systemd/system/swarmd.service"))
    check(rc == 0 and k.get("Service.ExecStart") ==
          ["/opt/swarmtune/bin/swarmd --config /etc/swarmd/swarmd.ini"]
          and os.access(os.path.join(other, "opt/swarmtune/bin/swarmd"), os.X_OK),
          f"--prefix /opt/swarmtune: ExecStart={k.get('Service.ExecStart')}", err)

    rc, out, err = run(["sh", INSTALL, "--bogus"])
    check(rc == 2 and "--bogus" in err, f"install.sh --bogus: exit {rc} (2), names it", err)


def main():
    t0 = time.time()
    if not nu.require_binaries():
        return 1
    root = nu.tmpdir("sw_systemd_unit_")
    check_unit(root)
    check_install(root)
    check_sandbox(root)
    return nu.finish("systemd_unit", t0)


if __name__ == "__main__":
    sys.exit(main())
