"""Soak test: many good and hostile uploads at many clients against the production command.

    python -m bench.soak                     # 10,000 requests at 16 clients, shipped model

Starts the Procfile's web command on 127.0.0.1, waits for /health, warms up, then sends
--requests uploads from --clients closed-loop clients, cycling through the sample leaf photos
and tests/payloads.py's hostile uploads (one hostile upload for every --good-per-hostile good
ones). Every answer is checked against the status its payload must get. Reports unexpected
statuses (must be 0), throughput and the worker's RSS after warm-up and at the end; exits
non-zero on any unexpected status or an RSS growth of 10% or more. Bounded by --max-seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from tests.payloads import Payload, hostile_payloads
from tests.support import PREDICT, ROOT, Server, leaf_samples, model_env


def mixed_payloads(good_per_hostile: int) -> list[Payload]:
    good = [Payload(name, data, name, 200) for name, data in leaf_samples()]
    hostile = hostile_payloads()
    mixed = []
    for i, bad in enumerate(hostile):
        mixed += [good[(i * good_per_hostile + j) % len(good)] for j in range(good_per_hostile)] + [bad]
    return mixed


def soak(url: str, payloads: list[Payload], total: int, clients: int, max_seconds: float) -> dict:
    """Send ``total`` requests from ``clients`` threads; count statuses and the unexpected ones."""
    counter = itertools.count()
    statuses: Counter = Counter()
    unexpected: Counter = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + max_seconds

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < stop_at:
            n = next(counter)
            if n >= total:
                return
            payload = payloads[n % len(payloads)]
            try:
                status = session.post(
                    f"{url}{PREDICT}", timeout=60, files={"image": (payload.filename, payload.data)}
                ).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            with lock:
                statuses[status] += 1
                if status != payload.status:
                    unexpected[f"{payload.name}: {status}"] += 1

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - began
    sent = sum(statuses.values())
    return {
        "requests": sent,
        "seconds": round(seconds, 1),
        "requests_per_s": round(sent / seconds, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "unexpected": dict(unexpected),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=ROOT / "plantnet")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--good-per-hostile", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=1200)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "soak.json")
    args = p.parse_args()
    payloads = mixed_payloads(args.good_per_hostile)
    server = Server(model_env(args.model_dir), output=subprocess.DEVNULL)
    try:
        server.wait_healthy(300)
        soak(server.url, payloads, len(payloads) * 2, args.clients, 120)  # warm-up: every payload twice
        rss_start = server.worker_rss_mb()
        result = soak(server.url, payloads, args.requests, args.clients, args.max_seconds)
        rss_end = server.worker_rss_mb()
        health = requests.get(f"{server.url}/health", timeout=10).status_code
    finally:
        server.stop()
    growth = 100 * (rss_end - rss_start) / rss_start
    result |= {
        "rss_mb_after_warmup": round(rss_start, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_growth_percent": round(growth, 1),
        "health_after": health,
        "clients": args.clients,
        "payload_mix": f"{args.good_per_hostile} good : 1 hostile ({len(hostile_payloads())} kinds)",
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    failed = bool(result["unexpected"]) or growth >= 10 or health != 200
    print("FAIL" if failed else "PASS", f"unexpected={sum(result['unexpected'].values())} rss growth={growth:.1f}%")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
