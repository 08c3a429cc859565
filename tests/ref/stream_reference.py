"""stream_reference: the perturbation stream against independent implementations.

Drives tests/zstream_dump (tests/tools/zstream_dump.c) and compares with:
- ChaCha20 from OpenSSL through python3-cryptography, whose ChaCha20 takes a
  16-byte nonce = LE32(block counter) || the 12-byte IETF nonce.  Our nonce is
  purpose || 11 zero bytes.  Raw keystream bytes at several seeds, purposes and
  offsets (unaligned, near the end of the 32-bit counter).
- z itself, both distributions: rademacher is bit j % 8 of keystream byte j / 8
  (1 -> +2^13, 0 -> -2^13); gaussian is table[keystream byte j].
- sw_gauss_table against statistics.NormalDist (gen_gauss_table.py).
- the update seed against hashlib.blake2b(run_id || origin || LE64(step), 32).
- the per-(update, tensor) coefficient rounding with exact fractions: the
  uniform is bytes 8t..8t+7 of the SW_STREAM_ROUND (purpose 2) stream, LE.
Exits non-zero on any mismatch.
"""

import hashlib
import math
import os
import subprocess
import sys
from fractions import Fraction

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_gauss_table  # noqa: E402

BUILD = os.environ.get("SW_BUILD_ROOT", "build")
DUMP = os.path.join(BUILD, "tests", "zstream_dump")
K_MAX = 1 << 28

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def dump(*args):
    r = subprocess.run([DUMP] + [str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("zstream_dump %s failed: %s" % (" ".join(map(str, args)), r.stderr))
    return r.stdout.strip()


def keystream(seed, purpose, offset, n):
    """Keystream bytes [offset, offset + n) with OpenSSL's ChaCha20."""
    block = offset // 64
    nonce = (block).to_bytes(4, "little") + bytes([purpose]) + bytes(11)
    enc = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    skip = offset % 64
    return enc.update(bytes(skip + n))[skip:]


def seed_of(i):
    return hashlib.blake2b(b"stream-reference-%d" % i, digest_size=32).digest()


def main():
    seeds = [bytes(32), bytes(range(32)), seed_of(1), seed_of(2)]

    # raw keystream
    cases = [(0, 0, 64), (0, 10, 20), (0, 63, 130), (1, 5, 100), (2, 8 * 147, 8),
             (2, 0, 257), (0, 64 * (2**32 - 3) + 17, 150)]
    for si, seed in enumerate(seeds):
        for purpose, off, n in cases:
            got = dump("bytes", seed.hex(), purpose, off, n)
            check(got == keystream(seed, purpose, off, n).hex(),
                  "keystream seed %d purpose %d bytes [%d, %d)" % (si, purpose, off, off + n))

    # z, both distributions
    table = gen_gauss_table.gauss_table()
    for si, seed in enumerate(seeds):
        for first, n in [(0, 1000), (1, 7), (13, 4099), (511, 1030), (123456789, 333),
                         (2**33 + 5, 600)]:
            got = [int(v) for v in dump("z", seed.hex(), "rademacher", first, n).split()]
            ks = keystream(seed, 0, first // 8, (first + n + 7) // 8 - first // 8)
            want = []
            for j in range(first, first + n):
                bit = (ks[j // 8 - first // 8] >> (j % 8)) & 1
                want.append(8192 if bit else -8192)
            check(got == want, "rademacher z seed %d [%d, %d)" % (si, first, first + n))
            got = [int(v) for v in dump("z", seed.hex(), "gaussian", first, n).split()]
            ks = keystream(seed, 0, first, n)
            check(got == [table[b] for b in ks],
                  "gaussian z seed %d [%d, %d)" % (si, first, first + n))

    # the committed table
    got = [int(v) for v in dump("table").split()]
    check(got == table, "sw_gauss_table == round(NormalDist().inv_cdf((i + 0.5) / 256) * 2^13)")
    check(all(got[i] == -got[255 - i] for i in range(256)), "sw_gauss_table is symmetric")

    # seed derivation
    for run, origin, step in [(bytes(32), bytes(32), 0), (bytes(range(32)), seed_of(3), 1),
                              (seed_of(4), seed_of(5), 2**64 - 1), (seed_of(6), seed_of(7), 123456)]:
        want = hashlib.blake2b(run + origin + step.to_bytes(8, "little"), digest_size=32).hexdigest()
        check(dump("seed", run.hex(), origin.hex(), step) == want,
              "seed(run %s.., origin %s.., step %d)" % (run.hex()[:8], origin.hex()[:8], step))

    # coefficient rounding: k = floor(x) + (u < frac(x) * 2^64), x = coef * 2^e clamped
    for si, seed in enumerate(seeds):
        for tensor, coef, e in [(0, 0.3, 0), (1, -2.75, 1), (5, 1.0e-4, 31), (147, -3.1e-5, 27),
                                (9, 123.456, -3), (2, 1e30, 31), (3, -1e30, 31), (4, 7.0, 2),
                                (6, 5e-11, 31)]:
            got = int(dump("k", seed.hex(), tensor, repr(coef), e))
            u = int.from_bytes(keystream(seed, 2, 8 * tensor, 8), "little")
            x = Fraction(coef) * Fraction(2) ** e
            if x >= K_MAX:
                want = K_MAX
            elif x <= -K_MAX:
                want = -K_MAX
            else:
                fl = math.floor(x)
                want = fl + (1 if u < math.floor((x - fl) * 2**64) else 0)
            check(got == want, "k seed %d tensor %d coef %r e %d: %d" % (si, tensor, coef, e, got))

    if failures:
        print("%d mismatches" % len(failures))
        return 1
    print("stream_reference: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
