#!/usr/bin/python3
"""Prints sw_gauss_table (core/fixed.c): the standard normal quantiles at
(i + 0.5) / 256, i = 0..255, in units of 2^-13, rounded to nearest.

Run once; the output is pasted into core/fixed.c as committed constants, and
tests/ref/stream_reference.py checks the committed table against this rule.
"""
import statistics

FRAC_BITS = 13


def gauss_table():
    nd = statistics.NormalDist()
    return [round(nd.inv_cdf((i + 0.5) / 256) * (1 << FRAC_BITS)) for i in range(256)]


if __name__ == "__main__":
    t = gauss_table()
    for r in range(0, 256, 12):
        print("    " + " ".join("%d," % v for v in t[r:r + 12]))
