"""What the checks of deploy/ share (local_swarm, netns_swarm, systemd_unit).

run() runs a command the way a user at a terminal would, without stdin;
alive() tells a live process from an exited one; ini_entries() reads the
INI-style files the scripts write (swarmd.ini) and ship (swarmd.service).
"""
import subprocess


def run(args, timeout=120, **kw):
    """Runs args with stdin closed: (exit code, stdout, stderr), as text."""
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       **kw)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def alive(pid):
    """True while pid is a process that has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def ini_entries(path):
    """(section, key, value) of each `key = value` line, in order, stripped
    (blank lines and # or ; comments skipped; section None before the first)."""
    section = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            k, _, v = line.partition("=")
            yield section, k.strip(), v.strip()
