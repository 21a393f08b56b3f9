#!/usr/bin/env python3
"""Measures the disk's fsync latency: append 4 KiB and fsync, N times, in DIR.

usage: scripts/fsync-latency.py [DIR] [N]   (defaults: . and 1000)
"""
import os
import statistics
import sys
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "."
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
path = os.path.join(directory, ".kvorum-fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
lat = []
try:
    for _ in range(n):
        os.write(fd, b"x" * 4096)
        t = time.perf_counter()
        os.fsync(fd)
        lat.append((time.perf_counter() - t) * 1000)
finally:
    os.close(fd)
    os.remove(path)
lat.sort()
print(
    "fsync of a 4 KiB append in %s: n=%d p50=%.3f ms p99=%.3f ms mean=%.3f ms"
    % (directory, n, lat[n // 2], lat[int(n * 0.99)], statistics.mean(lat))
)
