"""A process that shares a cache folder with others (tests/test_store_sharing.py).

`mix ROOT SEED N`: N random puts, gets and evictions over a small shared key set; every tensor read
must equal the one its key names, or the process exits 3 ("a corrupt blob was served").
`big ROOT`: write large blobs under fresh keys for ever (to be killed mid-write)."""

from __future__ import annotations

import random
import sys

import torch

from graphmerge.cache import Cache, CacheMiss, CacheSettings

KEYS = 24


def value(i: int, n: int = 32 * 1024) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(i))


def key(i: int) -> str:
    return f"{i:02d}shared{i:026d}"


def mix(root: str, seed: int, n: int) -> int:
    rng = random.Random(seed)
    cache = Cache(root, CacheSettings(max_size=10 * (value(0).nbytes + 512)), log=lambda _m: None)
    served = 0
    for _ in range(n):
        i, action = rng.randrange(KEYS), rng.random()
        if action < 0.45:
            cache.put_tensor(key(i), value(i))
        elif action < 0.95:
            try:
                got = cache.get_tensor(key(i))
            except CacheMiss:
                continue
            if not torch.equal(got, value(i)):
                print(f"corrupt blob served for {key(i)}", file=sys.stderr)
                return 3
            served += 1
        else:
            cache.gc(max_bytes=rng.randrange(4) * (value(0).nbytes + 512))
        r = rng.randrange(KEYS)
        if action < 0.2:
            cache.put_result(f"result{r}", {"i": r, "pad": "x" * 1000})
        found = cache.get_result(f"result{r}")
        if found is not None and found["i"] != r:
            return 3
    cache.close()
    print(served)
    return 0


def big(root: str) -> int:
    cache = Cache(root, CacheSettings(max_size=1 << 40), log=lambda _m: None)
    big_value = value(99, n=4 << 20)  # 16 MiB: long enough to be caught mid-write
    print("ready", flush=True)
    i = 0
    while True:
        cache.put_tensor(f"bb{i:030d}", big_value)
        i += 1


if __name__ == "__main__":
    mode, root = sys.argv[1], sys.argv[2]
    sys.exit(mix(root, int(sys.argv[3]), int(sys.argv[4])) if mode == "mix" else big(root))
