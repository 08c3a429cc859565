#!/usr/bin/python3
"""Guarantee: the test suite, the build and CI read nothing outside the tree.

A user clones the repository alone; a test that reads a folder beside the
clone (the old fixture folder of the development tree, a developer's home)
passes only on the machine
that has it.  This check reads every tracked file under tests/, .ci/ and
deploy/, and every meson.build and meson_options.txt, and fails when one
names a path outside the source root:
  - a relative path whose `..` components climb above the root, whether
    written as one string ('../../core') or as separate components
    (os.path.join(HERE, "..", ".."), meson's root / '..'), counted from the
    file's own folder, or from the root where the path starts at a name for
    the root (SOURCE, SRC, project_source_root(), ...);
  - an absolute path into a checkout or a home (the work, home and root
    folders and the like) or into this checkout itself;
  - the old fixture folder by name.
Before it reads the tree it proves it can fail: known-bad lines must be
caught and known-good ones let through.  The bad lines are assembled from
pieces, so this file holds none of them and is checked like any other.
Exits non-zero on any finding.
"""
import os
import re
import subprocess
import sys

import nodeutil as nu
from nodeutil import check

SOURCE = os.path.realpath(nu.SOURCE)

# Names the code uses for the source root: a '..' right after one climbs out.
ROOT_NAMES = r"(?:SOURCE|SRC|SOURCE_ROOT|SW_SOURCE_ROOT|ROOT|REPO|source_root\(\)|" \
             r"project_source_root\(\)|global_source_root\(\))"
# A run of separate '..' components: "..", ".." or '..' / '..'.
DOTDOT_RUN = re.compile(r"""(?P<anchor>%s\s*[,/]\s*)?"""
                        r"""(?P<run>(["'])\.\.\3(?:\s*[,/]\s*(["'])\.\.\4)*)""" % ROOT_NAMES)
# A relative path inside one literal or one ini value: ../x, ../../x, ...
DOTDOT_PATH = re.compile(r"""(?:^|[\s"'=(:,;])(?P<path>(?:\.\.(?:/|(?![\w.-])))+)""")
ABSOLUTE = re.compile(r"""(?<![\w.$}])/(?:work|home|root|Users|mnt|srv|media|opt/[\w-]*swarm)/""")
# The checkout's own path, as a whole path component: a checkout at R must not
# flag a temporary path that merely starts with R's text (R + "_test_XXXXXX").
NAMES_SOURCE = re.compile(re.escape(SOURCE.rstrip("/")) + r"(?![\w.-])")
OLD_FIXTURES = re.compile(r"shared[/\\\"', ]+fixtures")


def findings_in(text, rel_dir):
    """(line number, what) for every outside path in text, a file in rel_dir."""
    depth = 0 if rel_dir in ("", ".") else len(rel_dir.split("/"))
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        for m in DOTDOT_RUN.finditer(line):
            ups = m.group("run").count("..")
            if m.group("anchor"):
                out.append((no, f"'..' after the source root: {m.group(0).strip()}"))
            elif ups > depth:
                out.append((no, f"{ups} '..' from {rel_dir or '.'}/ climbs above the root: "
                                f"{m.group(0).strip()}"))
        for m in DOTDOT_PATH.finditer(line):
            ups = m.group("path").count("..")
            if ups > depth:
                out.append((no, f"relative path climbs {ups} levels from {rel_dir or '.'}/: "
                                f"{line.strip()[:100]}"))
        if ABSOLUTE.search(line) or (SOURCE != "/" and NAMES_SOURCE.search(line)):
            out.append((no, f"absolute path into a checkout or a home: {line.strip()[:100]}"))
        if OLD_FIXTURES.search(line):
            out.append((no, f"names the old fixture folder: {line.strip()[:100]}"))
    return out


def self_test():
    """The checker catches what it should and lets the tree's idioms through."""
    up, work, home, shared = "." + ".", "wo" + "rk", "ho" + "me", "sha" + "red"
    bad = [
        ("tests", f"fixtures_dir = meson.project_source_root() / '{up}' / '{shared}' / 'fixtures'"),
        ("tests/ref", f'X = os.path.join(SOURCE, "{up}", "data")'),
        ("tests/fuzz", f'open(os.path.join(HERE, "{up}", "{up}", "{up}", "models"))'),
        ("tests/ref", f'P = os.path.join(os.path.dirname(__file__), "{up}/{up}/{up}/x")'),
        ("tests", f"#define M \"{up}/{up}/model\""),
        (".ci", f"cd {up}/{up}; sh tests/run.sh"),
        ("tests/ref", f'MODEL = "/{work}/main/models/tiny-gpt2-fortunes"'),
        ("tests/ref", f'MODEL = "/{home}/dev/swarmtune/models"'),
        ("tests/ref", f"DATA = os.environ.get('X', 'fixtures')  # from {shared}/fixtures"),
        ("deploy/three-nodes", f"path = {up}/{up}/{up}/models/tiny-gpt2-fortunes"),
    ]
    good = [
        ("tests/ref", 'SOURCE = os.path.join(os.path.dirname(__file__), "..", "..")'),
        ("tests/fuzz", "include_directories('../../core')"),
        ("tests/fuzz", 'open(os.path.join(HERE, "..", "..", "models", "config.json"))'),
        ("deploy/three-nodes", "path = ../../models/tiny-gpt2-fortunes"),
        ("tests/ref", 'PY = "/usr/bin/python3"; T = "/tmp/x"; P = "/proc/self/status"'),
        ("tests/ref", 'cfg["node"]["state_dir"] = os.path.join(root, "state")'),
        ("tests", "model_dir = meson.project_source_root() / 'models' / 'tiny-gpt2-fortunes'"),
    ]
    ok = True
    for rel, line in bad:
        if not findings_in(line, rel):
            ok = False
            print(f"FAIL self-test: not caught in {rel}/: {line}")
    for rel, line in good:
        f = findings_in(line, rel)
        if f:
            ok = False
            print(f"FAIL self-test: false finding in {rel}/: {line}: {f}")
    return check(ok, f"self-test: {len(bad)} outside paths caught, {len(good)} inside paths "
                 "let through")


def tracked_files():
    """Tracked files (git ls-files), or every file when the tree is not a git checkout."""
    try:
        p = subprocess.run(["git", "-C", SOURCE, "ls-files", "-z"], capture_output=True,
                           timeout=60)
        if p.returncode == 0 and p.stdout:
            return sorted(p.stdout.decode().split("\0")[:-1])
    except (OSError, subprocess.TimeoutExpired):
        pass
    files = []
    for dirpath, dirnames, filenames in os.walk(SOURCE):
        # build directories (meson-private inside) and VCS/npm folders are not the tree
        dirnames[:] = [d for d in dirnames if d not in (".git", "node_modules") and
                       not os.path.exists(os.path.join(dirpath, d, "meson-private"))]
        for name in filenames:
            files.append(os.path.relpath(os.path.join(dirpath, name), SOURCE))
    return sorted(files)


def in_scope(rel):
    top = rel.split("/", 1)[0]
    if rel.startswith("tests/fuzz/corpus/"):
        return False  # fuzzer seeds are bytes, not paths
    return (top in ("tests", ".ci", "deploy") or os.path.basename(rel) in
            ("meson.build", "meson_options.txt"))


def main():
    if not self_test():
        return 1
    files = [f for f in tracked_files() if in_scope(f)]
    check(len(files) >= 40 and "tests/meson.build" in files and ".ci/run" in files,
          f"{len(files)} files in scope, tests/meson.build and .ci/run among them")
    bad = 0
    for rel in files:
        try:
            with open(os.path.join(SOURCE, rel), encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        for no, what in findings_in(text, os.path.dirname(rel)):
            bad += 1
            print(f"  {rel}:{no}: {what}")
    check(bad == 0, f"no path outside the source root in {len(files)} files ({bad} found)")
    return 0 if nu.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
