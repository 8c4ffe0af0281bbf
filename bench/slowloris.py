"""Slow clients against the production command: do normal uploads still get answered at once?

    python -m bench.slowloris --slow 48                 # 48 connections trickling a POST body
    python -m bench.slowloris --slow 500 --mode headers # 500 trickling their request headers
    python -m bench.slowloris --slow 48 --command gunicorn application:app   # compare a server

Starts the server (the Procfile's web command unless --command) on 127.0.0.1 with the shipped
model, opens ``--slow`` connections that each send one byte a second, and meanwhile sends
``--probes`` normal leaf uploads one after another on fresh connections. Reports probe latency,
how many answered 200 within 1 s, the slow connections the server still holds, and the server's
memory (VmRSS now, VmHWM peak; the largest of the process and its children). Bounded: at most
2,000 slow connections for at most 120 s, against 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from tests.slowclients import MAX_SLOW_CONNECTIONS, SlowClients, memory_mb, upload
from tests.support import SHIPPED_MODEL, Server, model_env, sample_bytes

MAX_SECONDS = 120


def measure(url: str, pid: int, slow: int, mode: str, seconds: float, probes: int) -> dict:
    leaf = sample_bytes("tomato_healthy.jpg")
    warm = upload(url, leaf)
    if warm.status != 200:
        raise RuntimeError(f"the warm-up upload got {warm.status}")
    before = memory_mb(pid)
    answers = []
    with SlowClients(url, slow, mode) as clients:
        time.sleep(min(2.0, seconds / 4))  # every slow connection is open and trickling
        began = time.monotonic()
        gap = seconds / max(1, probes)
        for _ in range(probes):
            answers.append(upload(url, leaf, timeout=15))
            time.sleep(max(0.0, gap - answers[-1].seconds))
        held = clients.alive
        during = memory_mb(pid)
        trickled = time.monotonic() - began
    after = upload(url, leaf)
    latencies = np.array([a.seconds * 1000 for a in answers])
    return {
        "slow_connections": slow,
        "mode": mode,
        "seconds": round(trickled, 1),
        "probes": probes,
        "probes_ok_within_1s": sum(a.status == 200 and a.seconds <= 1.0 for a in answers),
        "probe_statuses": sorted({a.status for a in answers}),
        "probe_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "probe_max_ms": round(float(latencies.max()), 1),
        "slow_connections_held_at_end": held,
        "rss_mb_before": round(before["rss"], 0),
        "rss_mb_during": round(during["rss"], 0),
        "peak_rss_mb": round(during["hwm"], 0),
        "upload_after_status": after.status,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=48, help=f"slow connections (at most {MAX_SLOW_CONNECTIONS})")
    parser.add_argument("--mode", choices=("body", "headers"), default="body", help="what the slow clients trickle")
    parser.add_argument("--seconds", type=float, default=20, help=f"how long to probe (at most {MAX_SECONDS})")
    parser.add_argument("--probes", type=int, default=30, help="normal uploads sent meanwhile, one at a time")
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="model directory")
    parser.add_argument("--command", nargs=argparse.REMAINDER, help="server command (default: Procfile web)")
    args = parser.parse_args(argv)
    if not 0 <= args.slow <= MAX_SLOW_CONNECTIONS or not 0 < args.seconds <= MAX_SECONDS or args.probes < 1:
        parser.error(f"--slow 0..{MAX_SLOW_CONNECTIONS}, --seconds up to {MAX_SECONDS}, --probes at least 1")
    server = Server(model_env(args.model), command=args.command or None, output=subprocess.DEVNULL)
    try:
        server.wait_healthy(300)
        result = measure(server.url, server.process.pid, args.slow, args.mode, args.seconds, args.probes)
        result["command"] = " ".join(args.command) if args.command else "Procfile web"
    finally:
        result_exit = server.stop()
    result["exit_status"] = result_exit
    print(json.dumps(result, indent=2))
    return 0 if result["probes_ok_within_1s"] == args.probes else 1


if __name__ == "__main__":
    sys.exit(main())
