#!/usr/bin/python3
"""Builds the language-identification task (data/lang-*.jsonl) from the gettext
catalogs Debian packages install under /usr/share/locale.

Each record is one translated user-interface message of a free-software package,
in German, French, Spanish or Italian:

    {"prompt": "<message>\\nLanguage:", "completion": " German", "source": "coreutils"}

Messages are cleaned (mnemonic markers, markup and line breaks removed), kept when
they read as a sentence (30-160 characters, at least 5 words, mostly letters),
de-duplicated, and split by their English original (msgid), so that one message's
translations never straddle train and test.  At most PER_CATALOG messages come from
one package's catalog per language, so that no package dominates.  The output is
balanced and depends only on the catalogs installed: run it on a machine with the
same packages and it writes the same bytes.

    /usr/bin/python3 data/make_lang.py [OUT_DIR]     (default: data/)

It prints the packages the messages came from (for data/README.md's licence notes).
"""

import gettext
import glob
import hashlib
import json
import os
import re
import subprocess
import sys

LANGS = {"de": " German", "fr": " French", "es": " Spanish", "it": " Italian"}
SPLITS = (("test", 250), ("valid", 100), ("train", 500))  # records per language
PER_CATALOG = 40
LOCALE = "/usr/share/locale"


def clean(s):
    s = re.sub(r"<[^>]{1,40}>", "", s)  # markup
    s = re.sub(r"(?<=\w)_(?=\w)|(?<!\w)_(?=\w)|&(?=\w)", "", s)  # mnemonics: _File, &Open
    s = s.replace("\\n", " ")
    return " ".join(s.split())


def sentence_like(s):
    if not 30 <= len(s) <= 160 or len(s.split()) < 5:
        return False
    if "%" in s or "http" in s or "{" in s or "\\" in s or "@" in s:
        return False
    letters = sum(c.isalpha() or c == " " for c in s)
    return letters >= 0.85 * len(s)


def catalog(path):
    try:
        with open(path, "rb") as f:
            return gettext.GNUTranslations(f)._catalog
    except Exception:  # a catalog in another encoding, or malformed: not ours to fix
        return None


def bucket(msgid):
    """A stable number in [0, 1) from the English original: the split key."""
    h = hashlib.blake2b(msgid.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    # One message per (language, English original); the split a message belongs to
    # is decided by its English original alone.
    by_lang = {}
    sources = set()
    for lang in LANGS:
        seen_text, seen_id, picked = set(), set(), []
        for path in sorted(glob.glob(f"{LOCALE}/{lang}/LC_MESSAGES/*.mo")):
            cat = catalog(path)
            if cat is None:
                continue
            domain = os.path.basename(path)[:-3]
            kept = []
            for msgid, msgstr in cat.items():
                if isinstance(msgid, tuple) or not msgid or not isinstance(msgstr, str):
                    continue
                text = clean(msgstr)
                if text == clean(msgid) or not sentence_like(text):
                    continue
                kept.append((bucket(msgid), msgid, text))
            # the catalog's share: its messages in hash order, a fixed number
            kept.sort()
            n = 0
            for b, msgid, text in kept:
                if n >= PER_CATALOG:
                    break
                if text in seen_text or msgid in seen_id:
                    continue
                seen_text.add(text)
                seen_id.add(msgid)
                picked.append((b, text, domain, path))
                n += 1
        by_lang[lang] = picked

    # split by bucket: test [0, .3), valid [.3, .4), train [.4, 1)
    bounds = {"test": (0.0, 0.3), "valid": (0.3, 0.4), "train": (0.4, 1.0)}
    for split, per_lang in SPLITS:
        lo, hi = bounds[split]
        rows = []
        for lang, label in LANGS.items():
            cand = sorted(r for r in by_lang[lang] if lo <= r[0] < hi)
            if len(cand) < per_lang:
                sys.exit(f"make_lang: only {len(cand)} {lang} messages for {split}, need {per_lang}")
            for b, text, domain, path in cand[:per_lang]:
                rows.append((hashlib.blake2b((text + label).encode(), digest_size=8).digest(),
                             {"prompt": text + "\nLanguage:", "completion": label, "source": domain}))
                sources.add(path)
        rows.sort(key=lambda r: r[0])  # interleave the languages, reproducibly
        with open(os.path.join(out_dir, f"lang-{split}.jsonl"), "w", encoding="utf-8") as f:
            for _, rec in rows:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(f"lang-{split}.jsonl: {len(rows)} records", file=sys.stderr)

    pkgs = set()
    for path in sorted(sources):
        r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if r.returncode == 0:
            pkgs.add(r.stdout.split(":")[0])
    print(" ".join(sorted(pkgs)))


if __name__ == "__main__":
    main()
