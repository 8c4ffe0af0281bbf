"""The model under BentoML, for bench/peers.py: ``python -m bench.peer_bentoml`` (HOST, PORT).

The same as ``bentoml serve bench.peer_bentoml:Diagnoser --host HOST --port PORT``.

POST /predict with the photo in the multipart field ``image``; one worker, adaptive batches of
up to 32 (BentoML's own batching: ``batchable=True``), each photo decoded with ``util.leaf``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bentoml
import numpy as np

from bench.peer_model import MAX_BATCH_SIZE, PeerModel


@bentoml.service(workers=1, traffic={"timeout": 60})
class Diagnoser:
    def __init__(self) -> None:
        self.model = PeerModel()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=60_000)
    def predict(self, image: list[Path]) -> list[dict]:
        return self.model.answer(np.stack([self.model.pixels(path.read_bytes()) for path in image]))


def main() -> None:
    """Become ``bentoml serve`` (same process id, so bench/peers.py measures its whole tree)."""
    program = str(Path(sys.executable).with_name("bentoml"))
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "3000")
    os.execv(program, [program, "serve", "bench.peer_bentoml:Diagnoser", "--host", host, "--port", port])


if __name__ == "__main__":
    main()
