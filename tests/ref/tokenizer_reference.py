#!/usr/bin/python3
"""Reference check of the GPT-2 tokenizer (core/tokenizer.c, driven through
$SW_BUILD_ROOT/tests/tok_batch) against two independent encoders:

  1. the npm package gpt-3-encoder 1.1.4 (JavaScript), run with node over the
     whole corpus in one process; tests/run.sh installs the version and
     checksum tests/npm/package-lock.json pins:
         cp tests/npm/package*.json "$SW_BUILD_ROOT/npm/" && npm ci --prefix "$SW_BUILD_ROOT/npm"
  2. a Python transcription of OpenAI's GPT-2 encoder.py (below), using
     Debian's python3-regex as GPT-2 does.

GPT-2's reference is Python; where JavaScript's regex classes disagree with
Python's (U+0085, U+FEFF, letters newer than Python's Unicode), the strings
containing such characters are compared with Python only, and counted.

Checks: ids on a large seeded corpus (fixture text, random Unicode from many
blocks, whitespace runs, contractions, digit runs, emoji sequences); the
pre-tokenizer split against Python's regex on every code point; the decode
round trip; invalid UTF-8 against Python's decode('utf-8', 'replace').
Exits non-zero on any mismatch.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SEED = 20240611

# ---------------------------------------------------------------- the Python reference
# A transcription of https://github.com/openai/gpt-2/blob/master/src/encoder.py (MIT).


def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    pairs = set()
    prev_char = word[0]
    for char in word[1:]:
        pairs.add((prev_char, char))
        prev_char = char
    return pairs


class Encoder:
    def __init__(self, encoder, bpe_merges):
        self.encoder = encoder
        self.decoder = {v: k for k, v in encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.bpe_ranks = dict(zip(bpe_merges, range(len(bpe_merges))))
        self.cache = {}
        self.pat = regex.compile(GPT2_PATTERN)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return token
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = " ".join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        bpe_tokens = []
        for token in regex.findall(self.pat, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            bpe_tokens.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return bpe_tokens


# ---------------------------------------------------------------- the JavaScript driver

JS_DRIVER = r"""
const fs = require('fs');
const [mode, modPath] = process.argv.slice(2);
const input = fs.readFileSync(0, 'utf8');
if (mode === 'classes') {
  // code points each of \s, \p{L}, \p{N} matches, over the string given
  const res = [/\s/gu, /\p{L}/gu, /\p{N}/gu].map(
      re => Array.from(input.matchAll(re), m => m[0].codePointAt(0)));
  process.stdout.write(JSON.stringify(res));
} else {
  const enc = require(modPath);
  const out = [];
  for (const line of input.split('\n')) {
    if (line === '') continue;
    try {
      out.push(enc.encode(JSON.parse(line)).join(' '));
    } catch (e) {
      out.push('ERROR ' + e);
    }
  }
  process.stdout.write(out.join('\n') + '\n');
}
"""

# ---------------------------------------------------------------- the corpus


def cp_range(a, b):
    return [c for c in range(a, b + 1) if not 0xD800 <= c <= 0xDFFF]


_BLOCK_CPS = {}


def block_cps(name):
    if name not in _BLOCK_CPS:
        a, b = BLOCKS[name]
        _BLOCK_CPS[name] = cp_range(a, min(b, a + 4000))
    return _BLOCK_CPS[name]


BLOCKS = {
    "ascii": (0x20, 0x7E), "latin1": (0xA0, 0xFF), "latin-ext": (0x100, 0x24F),
    "ipa": (0x250, 0x2AF), "combining": (0x300, 0x36F), "greek": (0x370, 0x3FF),
    "cyrillic": (0x400, 0x4FF), "armenian": (0x531, 0x58A), "hebrew": (0x591, 0x5F4),
    "arabic": (0x600, 0x6FF), "syriac": (0x700, 0x74F), "devanagari": (0x900, 0x97F),
    "bengali": (0x980, 0x9FE), "tamil": (0xB82, 0xBFA), "thai": (0xE01, 0xE5B),
    "tibetan": (0xF00, 0xFDA), "georgian": (0x10A0, 0x10FF), "jamo": (0x1100, 0x11FF),
    "ethiopic": (0x1200, 0x137C), "mongolian": (0x1800, 0x18AA), "vedic": (0x1CD0, 0x1CFA),
    "punct": (0x2000, 0x206F), "supsub": (0x2070, 0x209C), "currency": (0x20A0, 0x20C0),
    "letterlike": (0x2100, 0x214F), "numberforms": (0x2150, 0x218B), "math": (0x2200, 0x22FF),
    "box": (0x2500, 0x257F), "symbols": (0x2600, 0x27BF), "cjk-punct": (0x3000, 0x303F),
    "kana": (0x3041, 0x30FF), "cjk": (0x4E00, 0x9FFF), "hangul": (0xAC00, 0xD7A3),
    "pua": (0xE000, 0xF8FF), "presentation": (0xFB00, 0xFDFF), "varsel": (0xFE00, 0xFE0F),
    "fullwidth": (0xFF00, 0xFFEF), "specials": (0xFFF0, 0xFFFF), "gothic": (0x10330, 0x1034A),
    "kawi": (0x11F00, 0x11F59), "mathalnum": (0x1D400, 0x1D7FF),
    "emoji": (0x1F300, 0x1FAFF), "cjk-b": (0x20000, 0x2A6DF), "cjk-h": (0x31350, 0x323AF),
    "tags": (0xE0000, 0xE007F), "unassigned": (0x50000, 0x5FFFF), "plane16": (0x10FFF0, 0x10FFFF),
}
SPACES = ([" ", "\t", "\n", "\r", "\x0b", "\x0c", "\xa0", "\u1680", "\u2028", "\u2029", "\u202f",
           "\u205f", "\u3000", "\u180e", "\u200b", "\x1c", "\x1d", "\x1e", "\x1f"] +
          [chr(c) for c in range(0x2000, 0x200B)])
# Characters the regex flavours disagree on (JavaScript's \s has U+FEFF, not U+0085; letters
# and digits of Unicode 16 and 17, which Python's Unicode 15.0 lacks): kept to their own
# strings so that the rest can be compared with JavaScript too.
DIVERGENT = ["\x85", "\ufeff", "\U00010D40", "\U00010D4A", "\U00010D50", "\u088F", "\uA7CB",
             "\U000323B0", "\U00016D40", "\U00016D70", "\u1C89"]
EMOJI = ["👨‍👩‍👧‍👦", "👍🏽", "👋🏿", "🧑🏻‍🤝‍🧑🏾", "🏳️‍🌈", "🇺🇸", "🇩🇪🇫🇷", "1️⃣", "#️⃣",
         "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "❤️", "❤︎", "☺️", "👩‍💻", "🤷‍♀️", "😀", "🙂", "🫠", "🦄", "🍕"]
CONTRACTIONS = ["it's", "IT'S", "It'S", "don't", "DON'T", "we're", "WE'RE", "they've", "I'm",
                "I'M", "you'll", "YOU'LL", "he'd", "HE'D", "'s", "'S", "''s", "'ss", "' s", "’s",
                "rock'n'roll", "'", "''", "'re'", "'ll've", "x's's", "'d'd", "a'b", "'t's",
                "O'Neil's", "'tis", "y'all", "ma'am", "'em", "'Twas", " 's", "  's", "\n's",
                "1's", "'1", "'é", "é's", "'ß", "don’t", "'sé", "''''", "'s'", "'re're"]


def random_text(rng, blocks, runs):
    parts = []
    for _ in range(runs):
        kind = rng.random()
        if kind < 0.55:
            cps = block_cps(rng.choice(blocks))
            parts.append("".join(chr(rng.choice(cps)) for _ in range(rng.randint(1, 8))))
        elif kind < 0.75:
            parts.append("".join(rng.choice(SPACES) for _ in range(rng.randint(1, 4))))
        elif kind < 0.85:
            parts.append(rng.choice(EMOJI))
        elif kind < 0.92:
            parts.append(rng.choice(CONTRACTIONS))
        else:
            parts.append(str(rng.randint(0, 10**rng.randint(1, 12))))
    return "".join(parts)


def fixture_texts(data):
    out = []
    for name in sorted(os.listdir(data)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(data, name), encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                for k in ("text", "prompt", "completion"):
                    if k in rec:
                        out.append(rec[k])
                if "prompt" in rec and "completion" in rec:
                    out.append(rec["prompt"] + rec["completion"])
    return out


def generated_texts(rng):
    names = sorted(BLOCKS)
    out = []
    for name in names:  # every block alone, then mixed with spaces
        out.append(random_text(rng, [name], 40))
        cps = block_cps(name)
        out.append("".join(chr(rng.choice(cps)) for _ in range(rng.randint(5, 60))))
    for _ in range(1500):
        out.append(random_text(rng, names, rng.randint(1, 60)))
    for _ in range(400):  # whitespace runs, also leading and trailing
        out.append("".join(rng.choice(SPACES) if rng.random() < 0.8 else rng.choice("ab1.!é")
                           for _ in range(rng.randint(1, 40))))
    for _ in range(300):
        out.append("".join(rng.choice(["'", "s", "t", "re", "ve", "m", "ll", "d", "S", "T", "RE",
                                       "VE", "M", "LL", "D", " ", "a", "1", "’", "\n"])
                           for _ in range(rng.randint(1, 25))))
    out.extend(CONTRACTIONS)
    out.extend(" " + c + " " for c in CONTRACTIONS)
    for _ in range(150):  # the characters on which JavaScript differs from Python
        t = random_text(rng, names, rng.randint(1, 20))
        for _ in range(rng.randint(1, 4)):
            k = rng.randrange(len(t) + 1)
            t = t[:k] + rng.choice(DIVERGENT) * rng.randint(1, 3) + t[k:]
        out.append(t)
    digit_sets = ["0123456789", "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "０１２３４５６７８９", "²³¹¼½¾",
                  "ⅠⅡⅢⅫↀ", "①②③"]
    for i in range(120):
        n = rng.choice([1, 2, 3, 7, 16, 50, 200]) if i % 20 else (3000 if i == 60 else 1000)
        ds = digit_sets[0] if i % 3 else rng.choice(digit_sets)
        s = "".join(rng.choice(ds) for _ in range(n))
        out.append(s if i % 2 else rng.choice(["", " ", "x", "$"]) + s + rng.choice(["", ".5", " "]))
    out.extend(["1,000,000.00", "3.14159", "1e10", "-42", "+1 (555) 010-9999", "0x7fff",
                "2024-06-11T12:00:00Z", "v1.2.3", "10%", "½", "x²"])
    out.extend(EMOJI)
    out.append(" ".join(EMOJI))
    out.append("".join(EMOJI))
    out.extend(["", " ", "  ", "\n", "\n\n\n", "\t", " \t\n", "a ", "a  ", "a \n", " a", "  a",
                "<|endoftext|>", "Hello<|endoftext|>world", "e\u0301", "Z\u0335\u0321\u0317a",
                "שָׁלוֹם", "مرحبا بالعالم", "नमस्ते", "สวัสดี", "你好，世界", "こんにちは",
                "안녕하세요", "\x00", "a\x00b", "\x7f", "\ufffd", "\uffff", "\U0010ffff",
                "\u00ad", "A\u200dB", "\u061c", "\u2066x\u2069"])
    long_word = "".join(rng.choice("abcdefghij") for _ in range(3000))
    out.append(long_word)
    out.append("".join(chr(rng.choice(cp_range(0x4E00, 0x9FFF))) for _ in range(1500)))
    out.append(" " * 2000 + "x" + "\n" * 500)
    return out


def prose_texts(rng, fixture, count, size):
    """Bulk text: the fixture's words reshuffled, recased and mixed with the rest."""
    words = " ".join(fixture).split()
    names = sorted(BLOCKS)
    seps = [" "] * 24 + ["\n", "  ", "\n\n", "\t", ", ", ". ", " - ", "\r\n", "\xa0", "   "]
    out = []
    for _ in range(count):
        parts = []
        total = 0
        while total < size:
            k = rng.random()
            if k < 0.84:
                w = rng.choice(words)
            elif k < 0.88:
                w = rng.choice(words).upper()
            elif k < 0.92:
                w = rng.choice(words).capitalize() + rng.choice(["'s", "'S", "'ll", "'d", "n't"])
            elif k < 0.97:
                w = random_text(rng, names, rng.randint(1, 3))
            else:
                w = rng.choice(EMOJI + [str(rng.randint(0, 10**9)), "3.14", "$5", "100%"])
            parts.append(w)
            parts.append(rng.choice(seps))
            total += len(w) + 1
        out.append("".join(parts))
    return out


def invalid_inputs(rng, texts):
    fixed = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\x9f\xbf",
             b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf",
             b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xff",
             b"\xf0\x9f\x98", b"\xf0\x9f", b"\xf0", b"\xe2\x82", b"\xe2", b"\xc3", b"a\xc3",
             b"\xc3 b", b"\xe2\x82\xac\xe2\x82", b"\x80\x80\x80", b"\xc3\xa9\x80\xc3\xa9",
             b"\xf0\x9f\x98\x80\x9f\x98", b"it\xe2\x80s", b" \xff ", b"\xed\x9f\xbf\xed\xa0",
             b"\xf4\x8f\xbf\xbf\xf4\x90", b"\xef\xbb\xbf\xef\xbb"]
    out = list(fixed)
    for _ in range(800):
        k = rng.random()
        if k < 0.3:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))))
        elif k < 0.6:
            out.append(bytes(rng.choice([0x80, 0xbf, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xf5, 0xff,
                                         0x9f, 0xa0, 0x20, 0x61, 0x27, 0x73])
                             for _ in range(rng.randint(1, 30))))
        else:
            b = bytearray(rng.choice(texts)[:300].encode("utf-8") or b"x")
            for _ in range(rng.randint(1, 4)):
                op = rng.random()
                pos = rng.randrange(len(b) + 1)
                if op < 0.4:
                    b[pos:pos] = bytes([rng.randrange(0x80, 0x100)])
                elif op < 0.7 and len(b) > 1:
                    del b[pos:pos + 1]
                else:
                    b = b[:pos]
            out.append(bytes(b))
    return out


# ---------------------------------------------------------------- helpers


def run(cmd, data, what):
    p = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit("tokenizer_reference: FAIL: %s exited %d: %s" %
                 (what, p.returncode, p.stderr.decode(errors="replace")[-2000:]))
    return p.stdout.decode("utf-8"), p.stderr.decode("utf-8", errors="replace")


def parse_ids(lines):
    return [[int(x) for x in line.split()] for line in lines]


def short(x, n=120):
    r = repr(x)
    return r if len(r) <= n else r[:n] + "..."


class Report:
    def __init__(self):
        self.failures = 0

    def mismatch(self, what, inp, ours, theirs):
        self.failures += 1
        if self.failures <= 10:
            i = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                     min(len(ours), len(theirs)))
            print("MISMATCH %s: input %s\n  first difference at id %d\n  ours:   %s\n  theirs: %s" %
                  (what, short(inp), i, short(ours[max(0, i - 3):i + 8]),
                   short(theirs[max(0, i - 3):i + 8])))


def main():
    started = time.time()
    build = os.environ.get("SW_BUILD_ROOT")
    model = os.environ.get("SW_MODEL_DIR")
    data = os.environ.get("SW_DATA_DIR")
    if not build or not model or not data:
        sys.exit("tokenizer_reference: set SW_BUILD_ROOT, SW_MODEL_DIR and SW_DATA_DIR "
                 "(meson test does)")
    tok_batch = os.path.join(build, "tests", "tok_batch")
    npm_root = os.path.join(build, "npm")
    js_mod = os.path.join(npm_root, "node_modules", "gpt-3-encoder")
    if not os.access(tok_batch, os.X_OK):
        sys.exit("tokenizer_reference: FAIL: %s is missing (build the tests first)" % tok_batch)
    node = shutil.which("node")
    if node is None:
        sys.exit("tokenizer_reference: FAIL: node is not installed (the JS reference needs it)")
    if not os.path.isfile(os.path.join(js_mod, "Encoder.js")):
        sys.exit("tokenizer_reference: FAIL: the reference encoder is missing at %s; install it "
                 "with:\n  cp tests/npm/package*.json \"%s\" && npm ci --prefix \"%s\""
                 % (js_mod, npm_root, npm_root))
    with open(os.path.join(js_mod, "package.json")) as f:
        js_version = json.load(f)["version"]
    if js_version != "1.1.4":
        sys.exit("tokenizer_reference: FAIL: gpt-3-encoder is %s, expected 1.1.4" % js_version)

    with open(os.path.join(model, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(model, "merges.txt"), encoding="utf-8") as f:
        merges_text = f.read()
    # both references must hold the very files the tokenizer loads
    with open(os.path.join(js_mod, "encoder.json"), encoding="utf-8") as f:
        if json.load(f) != vocab:
            sys.exit("tokenizer_reference: FAIL: gpt-3-encoder's encoder.json != vocab.json")
    with open(os.path.join(js_mod, "vocab.bpe"), encoding="utf-8") as f:
        if f.read() != merges_text:
            sys.exit("tokenizer_reference: FAIL: gpt-3-encoder's vocab.bpe != merges.txt")
    bpe_merges = [tuple(m.split()) for m in merges_text.split("\n")[1:-1]]
    ref = Encoder(vocab, bpe_merges)
    report = Report()

    with tempfile.TemporaryDirectory(prefix="sw_tokref_") as tmp:
        js_path = os.path.join(tmp, "driver.js")
        with open(js_path, "w") as f:
            f.write(JS_DRIVER)

        # ---- 1. the split on every code point, against Python's regex
        all_cps = cp_range(0, 0x10FFFF)
        all_chars = "".join(map(chr, all_cps))
        # a then c: joined only if c is a letter; " c1": one piece only if c is a digit
        # (or, with a space, a different split); c alone next to ' ' shows \s
        probe = "".join("a%s %s1" % (c, c) for c in all_chars)
        want = [len(p.encode("utf-8")) for p in regex.findall(ref.pat, probe)]
        out, _ = run([tok_batch, "--split", model],
                     (json.dumps(probe) + "\n").encode(), "tok_batch --split")
        got = [int(x) for x in out.split()]
        if got != want:
            i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b),
                     min(len(got), len(want)))
            off = sum(want[:i])
            around = probe.encode("utf-8")[max(0, off - 12):off + 12].decode("utf-8", "replace")
            report.mismatch("split (every code point)", around, got[i:i + 6], want[i:i + 6])
        print("split: %d code points, %d pieces compared with Python regex %s (%.1f s)" %
              (len(all_cps), len(want), regex.__version__, time.time() - started))

        # ---- where JavaScript's classes differ from Python's (not our bug: documented)
        t0 = time.time()
        out, _ = run([node, js_path, "classes", ""], all_chars.encode(), "node (classes)")
        js_classes = [set(x) for x in json.loads(out)]
        py_classes = [set(map(ord, regex.findall(p, all_chars)))
                      for p in (r"\s", r"\p{L}", r"\p{N}")]
        js_diverge = set()
        for name, a, b in zip(("\\s", "\\p{L}", "\\p{N}"), py_classes, js_classes):
            d = a ^ b
            js_diverge |= {chr(c) for c in d}
            if d:
                print("JS vs Python %s: %d code points differ (e.g. %s)" %
                      (name, len(d), " ".join("U+%04X" % c for c in sorted(d)[:6])))
        print("classes compared in %.1f s" % (time.time() - t0))

        # ---- 2. ids on the corpus
        rng = random.Random(SEED)
        fixture = fixture_texts(data)
        generated = generated_texts(rng) + prose_texts(rng, fixture, 800, 1500)
        corpus = fixture + generated
        corpus_bytes = sum(len(s.encode("utf-8")) for s in corpus)
        data = "".join(json.dumps(s) + "\n" for s in corpus).encode()
        out, err = run([tok_batch, "--time", model], data, "tok_batch")
        ours = parse_ids(out.split("\n")[:len(corpus)])
        speed = err.strip().splitlines()[-1] if err.strip() else ""
        # node works while Python does
        t0 = time.time()
        js_out = os.path.join(tmp, "js.out")
        with open(js_out, "wb") as f:
            js_proc = subprocess.Popen([node, js_path, "encode", js_mod], stdin=subprocess.PIPE,
                                       stdout=f)
            js_proc.stdin.write(data)
            js_proc.stdin.close()
        py_ids = [ref.encode(s) for s in corpus]
        t_py = time.time() - t0
        if js_proc.wait() != 0:
            sys.exit("tokenizer_reference: FAIL: node gpt-3-encoder exited %d" % js_proc.returncode)
        t_js = time.time() - t0
        with open(js_out, encoding="utf-8") as f:
            js_ids = f.read().split("\n")[:len(corpus)]
        n_js = n_js_skipped = n_ids = 0
        for s, o, j, p in zip(corpus, ours, js_ids, py_ids):
            n_ids += len(p)
            if o != p:
                report.mismatch("vs Python encoder.py", s, o, p)
            if js_diverge.intersection(s):
                n_js_skipped += 1
                continue
            n_js += 1
            if j.startswith("ERROR"):
                report.mismatch("gpt-3-encoder threw " + j[:80], s, o, [])
            elif o != [int(x) for x in j.split()]:
                report.mismatch("vs gpt-3-encoder", s, o, [int(x) for x in j.split()])
        if len(ours) != len(corpus):
            report.mismatch("line count", "", [len(ours)], [len(corpus)])
        print("ids: %d strings (%d fixture, %d generated), %.2f MB, %d ids: all %d compared with "
              "Python encoder.py (%.1f s); %d with gpt-3-encoder %s (%.1f s), %d left to Python "
              "only as they hold code points JS classifies differently" %
              (len(corpus), len(fixture), len(generated), corpus_bytes / 1e6, n_ids, len(corpus),
               t_py, n_js, js_version, t_js, n_js_skipped))
        print("speed: " + speed)

        # ---- 3. decode(encode(x)) == x
        out, _ = run([tok_batch, "--decode", model],
                     "".join(" ".join(map(str, o)) + "\n" for o in ours).encode(),
                     "tok_batch --decode")
        decoded = out.split("\n")[:len(corpus)]
        bad = 0
        for s, d in zip(corpus, decoded):
            if bytes.fromhex(d) != s.encode("utf-8"):
                bad += 1
                report.mismatch("round trip", s, list(bytes.fromhex(d)[:40]),
                                list(s.encode("utf-8")[:40]))
        print("round trip: %d strings decoded to their bytes (%d mismatches) (at %.1f s)" %
              (len(corpus), bad, time.time() - started))

        # ---- 4. invalid UTF-8: U+FFFD per maximal invalid subsequence, as Python replaces
        raw = invalid_inputs(rng, corpus)
        out, _ = run([tok_batch, "--hex", model], "".join(b.hex() + "\n" for b in raw).encode(),
                     "tok_batch --hex")
        ours_bad = parse_ids(out.split("\n")[:len(raw)])
        n_invalid = 0
        for b, o in zip(raw, ours_bad):
            text = b.decode("utf-8", "replace")
            n_invalid += text.encode("utf-8") != b
            p = ref.encode(text)
            if o != p:
                report.mismatch("invalid UTF-8 vs Python decode('replace') + encoder.py", b, o, p)
        out, _ = run([tok_batch, "--decode", model],
                     "".join(" ".join(map(str, o)) + "\n" for o in ours_bad).encode(),
                     "tok_batch --decode (invalid)")
        for b, d in zip(raw, out.split("\n")):
            if bytes.fromhex(d) != b.decode("utf-8", "replace").encode("utf-8"):
                report.mismatch("round trip of replaced text", b, list(bytes.fromhex(d)),
                                list(b.decode("utf-8", "replace").encode("utf-8")))
        print("invalid UTF-8: %d byte strings (%d of them invalid) compared with Python's "
              "decode('utf-8', 'replace') + encoder.py, and round-tripped" % (len(raw), n_invalid))

    print("tokenizer_reference: %s in %.1f s" %
          ("FAIL: %d mismatches" % report.failures if report.failures else "all match",
           time.time() - started))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
