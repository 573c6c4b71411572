"""The gateway's token check per call, cached (a hit) and not (a miss), in µs: best of 5 rounds.

    python -m bench.token_cache_cost                       # this checkout's gateway/auth.py
    (cd OTHER_CHECKOUT && python -m bench.token_cache_cost) # another one, e.g. `git archive` of main

A player's heartbeats reuse one token (hits); the gateway benchmark signs a new token per start
(misses only), so its CPU per call does not show a change to the hit path. Only the default
constructor is used, so the script runs against older caches too.
"""

from __future__ import annotations

import time
import timeit

import jwt

from gateway.auth import TokenCache, make_verifier
from gateway.settings import load_gateway_settings

SECRET = "bench-token-cache-secret-0123456789abcdef"
HITS = 200_000
MISSES = 3_000
ROUNDS = 5


def main() -> None:
    verifier = make_verifier(load_gateway_settings(gateway_auth_secret=SECRET))
    exp = int(time.time()) + 3600

    def header(user: str) -> bytes:
        claims = {"sub": user, "iat": exp - 3600, "exp": exp}
        return b"Bearer " + jwt.encode(claims, SECRET, algorithm="HS256").encode()

    fresh = iter([header(f"u{i}") for i in range(MISSES * ROUNDS)])
    cache = TokenCache(verifier)
    repeated = header("u-hit")
    cache.caller(repeated)
    hit = min(timeit.repeat(lambda: cache.caller(repeated), number=HITS, repeat=ROUNDS)) / HITS
    miss = min(timeit.repeat(lambda: cache.caller(next(fresh)), number=MISSES, repeat=ROUNDS)) / MISSES
    print(f"token check: hit {hit * 1e6:.2f} µs, miss {miss * 1e6:.2f} µs (best of {ROUNDS})")


if __name__ == "__main__":
    main()
