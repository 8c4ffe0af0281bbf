"""Where a photo's milliseconds go in ``python -m util.server``, sampled with py-spy under load.

    python -m bench.profile_service                 # 16 clients, 10 s
    python -m bench.profile_service --clients 1 --env PLANTNET_MAX_WAIT_MS=1

Starts the service, warms it, then samples every Python thread (py-spy, 200 Hz) while bench/serve.py's
closed loop drives it with the 8 lab photos. Each sample is put in the first stage of STAGES that one
of its frames belongs to (most specific first), and waiting threads are left out; the table gives each
stage's samples as milliseconds per photo answered. The engine's own threads (OpenVINO's pool) are not
Python threads: the engine row is the inference thread inside ``engine.predict``. Needs py-spy
(requirements-peers.txt) and the right to trace a child process (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.peers import CONTENDERS, LEAVES, PeerServer
from bench.serve import drive
from tests.support import ROOT, leaf_samples

# (stage, frame substrings): a sample goes to the first stage any of its frames contains.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("engine (inference thread in predict)", ("OpenVINOEngine.predict",)),
    ("in-domain verdict", ("DomainCheck.judge", "domain.py")),
    ("decode + preprocess (util.leaf)", ("DiagnosisService.preprocess", "util/leaf.py")),
    ("batch assembly and hand-off", ("Batcher._infer", "split_rows", "submit_many", "util/batcher.py")),
    ("access log + metrics (requestlog)", ("util/api/requestlog.py", "util/metrics.py", "prometheus_client")),
    ("other logging", ("logging/__init__.py",)),
    ("words: top-k, labels (describe)", ("DiagnosisService.describe", "util/labels.py")),
    ("marshalling (flask-restx marshal)", ("answer (util/api/diagnosis.py", "flask_restx/marshalling.py")),
    ("feedback hook", ("util/feedback",)),
    ("JSON encoding of the answer", ("json/encoder.py", "flask/json", "flask_restx/representations.py")),
    ("multipart + argument parsing", ("formparser", "sansio/multipart", "reqparse", "FileStorage")),
    ("security / API keys", ("util/api/security.py",)),
    ("Flask / werkzeug / restx dispatch", ("flask/", "werkzeug/", "flask_restx/")),
    ("HTTP parsing (waitress)", ("waitress/parser.py", "waitress/receiver.py", "waitress/buffers.py")),
    ("response writing (waitress)", ("waitress/task.py", "handle_write", "_flush_some")),
    ("I/O loop (waitress)", ("wasyncore", "waitress/channel.py", "waitress/server.py")),
]
OTHER = "other"
# Leaf frames of a thread that is waiting, not working.
IDLE_LEAVES = (
    "wait (",
    "poll",
    "select (",
    "_wait_for_tstate_lock",
    "acquire (",
    "sleep (",
    "accept (",
    "get (queue.py",
    "_worker (concurrent/futures/thread.py",  # an executor's idle worker, blocked in its queue's C get()
)


def stage_of(frames: list[str]) -> str | None:
    """The stage of one sampled stack (root first), or None for a waiting thread."""
    if frames and any(frames[-1].startswith(idle) or idle in frames[-1] for idle in IDLE_LEAVES):
        return None
    for stage, needles in STAGES:
        if any(needle in frame for frame in frames for needle in needles):
            return stage
    return OTHER


def classify(raw: str, show: str = "") -> tuple[Counter[str], Counter[str]]:
    """Samples per stage from py-spy's raw (collapsed) output (``thread;frame;frame... count`` per line),
    and samples per innermost frame of the stages whose name starts with ``show``."""
    counts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")[1:]
        stage = stage_of(frames)
        if stage is not None:
            counts[stage] += int(count)
            if show and stage.startswith(show):
                leaves[" < ".join(frames[-1:-4:-1])] += int(count)
    return counts, leaves


def profile(env: dict[str, str], clients: int, seconds: float, rate: int, root: Path = ROOT) -> tuple[str, int]:
    """(py-spy's raw samples, photos answered) for one sampled run under ``clients`` clients."""
    server = PeerServer(CONTENDERS["service"], env, root)
    try:
        server.wait_healthy(300)
        leaves = leaf_samples()[:LEAVES]
        drive(server.url, leaves, clients, 3.0, fresh_boundaries=True)  # warm-up
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "samples.txt"
            command = [str(Path(sys.executable).with_name("py-spy")), "record", "--threads", "-r", str(rate)]
            command += ["-d", str(int(seconds)), "-f", "raw", "-o", str(out), "-p", str(server.process.pid)]
            spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            result: dict = {}
            load = threading.Thread(
                target=lambda: result.update(r=drive(server.url, leaves, clients, seconds, fresh_boundaries=True))
            )
            load.start()
            load.join()
            _, errors = spy.communicate(timeout=60)
            if not out.exists():
                raise RuntimeError(f"py-spy wrote nothing: {errors.strip()}")
            return out.read_text(), result["r"].requests
    finally:
        server.stop()


def table(counts: Counter[str], photos: int, rate: int) -> str:
    busy = sum(counts.values())
    lines = ["| stage | ms per photo | share of busy samples |", "|---|---:|---:|"]
    order = [stage for stage, _ in STAGES] + [OTHER]
    for stage in sorted(order, key=lambda s: -counts.get(s, 0)):
        if counts.get(stage):
            ms = 1000 * counts[stage] / rate / max(photos, 1)
            lines.append(f"| {stage} | {ms:.2f} | {100 * counts[stage] / busy:.1f}% |")
    outside = sum(n for s, n in counts.items() if not s.startswith("engine"))
    lines.append(f"| **all but the engine** | **{1000 * outside / rate / max(photos, 1):.2f}** | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=200, help="samples a second per thread")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the service, repeatable")
    p.add_argument("--show", default="", help="also list the innermost frames of the stages named so")
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve from (e.g. an older commit's)")
    args = p.parse_args()
    env = {"PLANTNET_MODEL_DIR": str((ROOT / "plantnet").resolve()), **dict(e.split("=", 1) for e in args.env)}
    raw, photos = profile(env, args.clients, args.seconds, args.rate, args.root.resolve())
    counts, leaves = classify(raw, args.show)
    print(f"{args.clients} clients, {photos} photos in {args.seconds:.0f} s ({photos / args.seconds:.1f} img/s)")
    print(table(counts, photos, args.rate))
    for frame, count in leaves.most_common(25):
        print(f"{1000 * count / args.rate / max(photos, 1):6.2f} ms  {frame}")


if __name__ == "__main__":
    main()
