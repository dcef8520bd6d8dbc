#!/usr/bin/env python3
"""Write fuzz_api's hand-made seeds into corpus/api/ (run from tests/fuzz/).

The encoding is fuzz_api.c's: two bytes of sim config, then per call an op
byte (op % 16), an argument byte (region = arg % 3, worker = (arg >> 2) % 2,
sim = (arg >> 3) % 2, bit 7 a variant) and the op's own bytes. Check a seed
with RDM_FUZZ_TRACE=1 build-fuzz/tests/fuzz/fuzz_api corpus/api/NAME.
"""
import os

def arg(i=0, w=0, s=0, hi=False):
    # the smallest byte with these fields (region i, worker w, sim s)
    for a in range(256):
        if a % 3 == i and (a >> 2) % 2 == w and (a >> 3) % 2 == s and bool(a & 0x80) == hi:
            return a
    raise ValueError

def create(i, a=0, b=0, c=15):          # a: du shift|flags<<2|policy<<4; b: block shift; c: blocks-1
    return [0, arg(i), a, b, c]
def rng(a, n):                           # units [a, a + n + 1)
    return [0, a, n]
def pop(i, a, n, worker=False):
    return [1, arg(i)] + rng(a, n) + ([] if worker else [1])
def disc(i, a, n, worker=False):
    return [3, arg(i)] + rng(a, n) + ([] if worker else [1])
def dall(i, worker=False):
    return [5, arg(i)] + ([] if worker else [1])
def lis(i, k, a, n, poison=0):           # register listener k on units [a, a + n + 1)
    m = next(m for m in range(0x80) if m % 3 == k and not m & 0x20 and bool(m & 0x40) == bool(poison))
    return [6, arg(i), m] + rng(a, n) + list(poison.to_bytes(8, 'little'))
def unlis(i, k):                         # unregister (listener k registered)
    return [6, arg(i), k]
def wcreate(w, m=0, batch=3):
    return [7, arg(0, w), m, batch]
def addb(w, s):
    return [8, arg(0, w, s), 1]
def attach(i, w, s):
    return [9, arg(i, w, s)]
def detach(i, w, s):
    return [9, arg(i, w, s, True)]
def async_(changes):                     # (region, kind 1..3, a, n, callback)
    out = [10, 0, len(changes) - 1]
    for (r, kind, a, n, cb) in changes:
        out += [next(m for m in range(256) if m % 3 == r and (m >> 2) % 3 == kind - 1
                     and bool(m & 0x80) == cb)]
        if kind != 3:
            out += rng(a, n)
    return out
def poll(idx=0):
    return [11, 0, 1, idx]
def wait(idx=0):
    return [11, 0x80, 1, idx]
def stale_ticket():
    return [11, 0, 0, 0]
def inject(s, kind, nth, err):           # kind 0 map, 1 unmap, 2 any; err 0 ENOMEM 1 EFAULT 2 ENOSPC
    m = (1 if kind == 1 else 0) | (2 if kind == 2 else 0) | ((nth - 1) << 2) | (err << 5)
    return [12, arg(0, 0, s), m]
def rdestroy(i): return [13, arg(i)]
def wdestroy(w): return [14, arg(0, w)]
def pdestroy(): return [15, 0]

SIM = 0x00                               # type1, no split, default limit
SPLIT = 0x02
LIMIT8 = 0x04 | (6 << 3)                 # limit 2 + 6
seeds = {
    'sync-basic': [SIM, SIM] + create(0) + pop(0, 2, 3) + disc(0, 3, 0) + lis(0, 0, 0, 15)
        + pop(0, 8, 2) + dall(0) + pop(0, 0, 15) + unlis(0, 0) + rdestroy(0),
    'strict-listeners': [SIM, SIM] + create(0, a=1 << 2, c=31) + lis(0, 0, 0, 31, poison=1 << 20)
        + lis(0, 1, 4, 8, poison=1 << 6) + pop(0, 0, 3) + pop(0, 4, 3) + pop(0, 18, 4) + pop(0, 4, 0)
        + disc(0, 10, 2) + disc(0, 0, 1) + unlis(0, 0) + unlis(0, 1) + dall(0),
    'units-and-errors': [SIM, SIM] + create(0, a=2 | (2 << 2), b=1, c=7) + create(1, b=0x10)
        + [1, arg(0), 0xe0, 1, 1, 1] + [1, arg(0), 0xf0] + [0xff] * 16 + [1] + pop(0, 1, 0) + disc(0, 1, 0)
        + create(2, b=0x20) + create(2, c=3) + pop(2, 0, 1),
    'worker-block': [SIM, SIM] + create(0) + wcreate(0) + addb(0, 0) + pop(0, 0, 3) + attach(0, 0, 0)
        + pop(0, 6, 2, True) + disc(0, 1, 1, True) + lis(0, 0, 0, 15, poison=1 << 12)
        + pop(0, 10, 4, True) + async_([(0, 1, 12, 1, False), (0, 2, 12, 0, True), (0, 3, 0, 0, False)])
        + poll(0) + wait(1) + pop(0, 0, 1, True) + detach(0, 0, 0) + pop(0, 0, 1, True) + rdestroy(0)
        + wdestroy(0),
    'worker-policies': [SPLIT, SIM] + create(0, a=(1 << 4) | (2 << 2), c=40) + create(1, a=2 << 4, c=40)
        + wcreate(0, m=0x0f, batch=1) + addb(0, 0) + addb(0, 1) + attach(0, 0, 0) + attach(1, 0, 1)
        + attach(0, 0, 1) + pop(0, 0, 20, True) + disc(0, 5, 2, True) + pop(1, 0, 30, True)
        + disc(1, 10, 3, True) + disc(1, 0, 2, True) + pop(1, 10, 1, True)
        + async_([(1, 1, 20, 5, True), (1, 2, 22, 1, False), (0, 2, 0, 3, False), (1, 3, 0, 0, True)])
        + async_([(0, 1, 30, 3, False)]) + wait(0) + stale_ticket() + rdestroy(1) + wdestroy(0)
        + rdestroy(0) + wdestroy(0),
    'inject-failures': [SIM, LIMIT8] + create(0, c=20) + wcreate(0) + addb(0, 0) + attach(0, 0, 0)
        + inject(0, 0, 3, 0) + pop(0, 0, 5, True) + pop(0, 0, 5, True) + inject(0, 1, 1, 1)
        + disc(0, 0, 1, True) + inject(0, 1, 1, 1) + inject(0, 1, 2, 1) + disc(0, 3, 0, True)
        + pop(0, 10, 1, True) + rdestroy(0) + wdestroy(0),
    'two-workers-limit': [LIMIT8, SPLIT] + create(0, c=30) + create(1, c=30) + wcreate(0) + wcreate(1)
        + addb(0, 0) + addb(1, 1) + attach(0, 0, 0) + attach(1, 1, 1) + attach(0, 1, 1)
        + pop(0, 0, 29, True) + pop(0, 0, 1, True) + pop(1, 0, 29, True) + wdestroy(0) + rdestroy(0)
        + wdestroy(0) + pdestroy() + addb(1, 0) + attach(1, 1, 0) + dall(1, True) + rdestroy(1),
    'failed-first-attach': [SIM, SIM] + create(0, c=7) + wcreate(0) + addb(0, 0) + pop(0, 0, 3)
        + inject(0, 0, 1, 0) + attach(0, 0, 0) + disc(0, 0, 1, True) + attach(0, 0, 0) + pop(0, 4, 1, True)
        + rdestroy(0),
}
os.makedirs('corpus/api', exist_ok=True)
for name, b in seeds.items():
    assert all(0 <= x < 256 for x in b), name
    with open(os.path.join('corpus/api', name), 'wb') as f:
        f.write(bytes(b))
