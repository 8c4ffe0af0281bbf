"""Issue 27's attacks against the production command, each with its target: does the hole stay closed?

    python -m bench.attacks progressive   # 16 concurrent 36 MP progressive JPEGs, 3 rounds: memory
    python -m bench.attacks methods       # 300 requests with made-up 1-2 kB methods: /metrics growth
    python -m bench.attacks flood         # 1,500 connections from 127.0.0.2 trickling: do others get answers?
    python -m bench.attacks many          # 16 concurrent ~58 MB many-photo uploads: memory, statuses

Each starts ``python -m util.server`` (the Procfile's web command) on 127.0.0.1 with the shipped
model, runs one probe and prints JSON: its numbers, the target and ``passed``. Environment
variables pass through to the server (PLANTNET_DECODE_BUDGET_MB, MALLOC_ARENA_MAX, ...).
Bounded: 127.x addresses only, at most 1,500 connections, each probe a minute or two.
Resident memory is the server's VmRSS / VmHWM (tests/slowclients.memory_mb).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from tests.slowclients import ATTACKER, SlowClients, memory_mb, upload
from tests.support import PREDICTIONS, SHIPPED_MODEL, Server, free_port, model_env, multipart_body, sample_bytes

MB = 1024 * 1024
TARGETS = {
    "progressive": "peak RSS < 1,500 MB, no 5xx, RSS within 20% of warm 30 s later",
    "methods": "/metrics grows by < 20 KB after 300 made-up methods",
    "flood": "uploads and /health/live from 127.0.0.1 answered within 1 s during a 1,500-connection flood",
    "many": "peak RSS < 1,500 MB, no 5xx but 503 with Retry-After, RSS within 30% of warm 30 s later",
}


# --- photos ----------------------------------------------------------------------------------------


def textured_photo(
    megapixels: float, seed: int, quality: int = 85, progressive: bool = False, grain: float = 0.12
) -> bytes:
    """A 4:3 JPEG with fine texture, so it is as big on the wire and as slow to decode as a real photo."""
    height = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = int(height * 4 / 3)
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(30, 220, (24, 32, 3), dtype=np.uint8)).resize((width, height))
    noise = Image.fromarray(rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)).resize((width, height))
    image = Image.blend(coarse, noise, grain)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, progressive=progressive)
    return buffer.getvalue()


# --- HTTP helpers ----------------------------------------------------------------------------------


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None, timeout: float = 30):
    """(status, seconds, headers, body); status 0 when nothing came back."""
    began = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body or None, headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, time.perf_counter() - began, dict(response.getheaders()), data
    except (OSError, http.client.HTTPException):
        return 0, time.perf_counter() - began, {}, b""
    finally:
        connection.close()


def post_many(port: int, photos: list[bytes], timeout: float = 120):
    body = multipart_body([("images", f"p{i}.jpg", data) for i, data in enumerate(photos)])
    headers = {"Content-Type": "multipart/form-data; boundary=XyZ", "Content-Length": str(len(body))}
    return request(port, "POST", PREDICTIONS, body, headers, timeout)


def settle_memory(pid: int, seconds: float) -> dict:
    right_after = memory_mb(pid)
    time.sleep(seconds)
    return {"right_after": right_after, "settled": memory_mb(pid)}


# --- probes ----------------------------------------------------------------------------------------


def probe_progressive(server: Server, clients: int = 16, rounds: int = 3, settle: float = 30) -> dict:
    photo = textured_photo(36.0, seed=1, quality=80, progressive=True)
    port, pid = server.port, server.process.pid
    warm = warm_up(server)
    statuses: Counter = Counter()
    began = time.monotonic()
    for _ in range(rounds):
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda _: upload(server.url, photo, "big.jpg", timeout=120), range(clients)))
        statuses.update(str(a.status) for a in answers)
    seconds = time.monotonic() - began
    memory = settle_memory(pid, settle)
    peak, settled = memory["right_after"]["hwm"], memory["settled"]["rss"]
    five_xx = sum(n for status, n in statuses.items() if status.startswith("5") or status == "0")
    return {
        "photo_mb": round(len(photo) / 1e6, 2),
        "uploads": clients * rounds,
        "statuses": dict(statuses),
        "seconds": round(seconds, 1),
        "warm_rss_mb": round(warm),
        "peak_rss_mb": round(peak),
        f"rss_after_{settle:.0f}s_mb": round(settled),
        "settled_vs_warm": f"{(settled / warm - 1) * 100:+.1f}%",
        "passed": peak < 1500 and five_xx == 0 and settled <= warm * 1.2 and port > 0,
    }


def probe_methods(server: Server, count: int = 300) -> dict:
    port = server.port
    before = len(request(port, "GET", "/metrics")[3])
    statuses: Counter = Counter()
    for i in range(count):
        method = "M" + "ETHOD"[i % 5 :] + "X" * (1000 + 3 * i) + str(i)  # 1-2 kB tokens, all different
        statuses[str(request(port, method, f"/made/up/{i}", timeout=10)[0])] += 1
    after = len(request(port, "GET", "/metrics")[3])
    return {
        "requests": count,
        "statuses": dict(statuses),
        "metrics_bytes_before": before,
        "metrics_bytes_after": after,
        "growth_kb": round((after - before) / 1024, 1),
        "passed": after - before < 20 * 1024,
    }


def probe_flood(server: Server, admin_port: int, connections: int = 1500, seconds: float = 40) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, connections + 512)), hard))
    leaf = sample_bytes("tomato_healthy.jpg")
    warm_up(server)
    rows = []
    # A request line trickled one byte every 5 s: the classic slowloris, from another loopback address.
    with SlowClients(server.url, connections, mode="headers", interval=5.0) as flood:
        time.sleep(2)
        opened_after_2s = flood.alive
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            answer = upload(server.url, leaf, timeout=10)
            live = request(server.port, "GET", "/health/live", timeout=10)
            admin = request(admin_port, "GET", "/health/live", timeout=10)
            rows.append((answer.status, answer.seconds, live[0], live[1], admin[0], admin[1]))
            time.sleep(max(0.0, 2.0 - answer.seconds - live[1] - admin[1]))
        held_at_end = flood.alive
    upload_ok = sum(r[0] == 200 and r[1] < 1 for r in rows)
    live_ok = sum(r[2] == 200 and r[3] < 1 for r in rows)
    admin_ok = sum(r[4] == 200 and r[5] < 1 for r in rows)
    return {
        "flood_connections": connections,
        "flood_source": ATTACKER,
        "flood_connect_failures": flood.refused,
        "flood_open_after_2s": opened_after_2s,
        "flood_open_at_end": held_at_end,
        "probes": len(rows),
        "uploads_within_1s": upload_ok,
        "public_live_within_1s": live_ok,
        "admin_live_within_1s": admin_ok,
        "slowest_upload_s": round(max(r[1] for r in rows), 3),
        "slowest_public_live_s": round(max(r[3] for r in rows), 3),
        "slowest_admin_live_s": round(max(r[5] for r in rows), 3),
        "passed": upload_ok == live_ok == admin_ok == len(rows) > 0,
    }


def probe_many(server: Server, clients: int = 16, photos: int = 30, settle: float = 30) -> dict:
    distinct = [textured_photo(5.0, seed, quality=98, grain=0.4) for seed in range(6)]
    per_request = [distinct[i % len(distinct)] for i in range(photos)]
    total = sum(map(len, per_request))
    warm = warm_up(server)
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda _: post_many(server.port, per_request), range(clients)))
    memory = settle_memory(server.process.pid, settle)
    statuses = Counter(str(a[0]) for a in answers)
    photo_statuses: Counter = Counter()
    for status, _, _, body in answers:
        if status == 200:
            photo_statuses.update(str(r["status"]) for r in json.loads(body)["results"])
    bad = [a for a in answers if a[0] >= 500 and (a[0] != 503 or "Retry-After" not in a[2])] + [
        a for a in answers if a[0] == 0
    ]
    peak, settled = memory["right_after"]["hwm"], memory["settled"]["rss"]
    return {
        "request_mb": round(total / 1e6, 1),
        "photos_per_request": photos,
        "requests": clients,
        "statuses": dict(statuses),
        "photo_statuses_in_200s": dict(photo_statuses),
        "slowest_s": round(max(a[1] for a in answers), 1),
        "warm_rss_mb": round(warm),
        "peak_rss_mb": round(peak),
        f"rss_after_{settle:.0f}s_mb": round(settled),
        "settled_vs_warm": f"{(settled / warm - 1) * 100:+.1f}%",
        "passed": peak < 1500 and not bad and settled <= warm * 1.3,
    }


def warm_up(server: Server) -> float:
    """A few normal uploads (every engine batch shape is warm already); the server's RSS then, in MB."""
    leaf = sample_bytes("tomato_healthy.jpg")
    for _ in range(3):
        if upload(server.url, leaf).status != 200:
            raise RuntimeError("a normal upload failed before the probe")
    return memory_mb(server.process.pid)["rss"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=sorted(TARGETS))
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="model directory")
    args = parser.parse_args(argv)
    admin_port = free_port()
    server = Server(model_env(args.model, PLANTNET_ADMIN_PORT=str(admin_port)), output=subprocess.DEVNULL)
    try:
        started = server.wait_healthy(300)
        if args.probe == "progressive":
            result = probe_progressive(server)
        elif args.probe == "methods":
            result = probe_methods(server)
        elif args.probe == "flood":
            result = probe_flood(server, admin_port)
        else:
            result = probe_many(server)
    finally:
        status = server.stop()
    report = {"probe": args.probe, "target": TARGETS[args.probe], **result}
    print(json.dumps({**report, "start_s": round(started, 1), "exit": status}, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
