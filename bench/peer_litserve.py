"""The model under LitServe, for bench/peers.py: ``python -m bench.peer_litserve`` (HOST, PORT).

POST /predict with the photo in the multipart field ``image``; one API process, one inference
worker, batches of up to 32 gathered for 5 ms (the issue's app).
"""

from __future__ import annotations

import os

import litserve as ls
import numpy as np

from bench.peer_model import BATCH_TIMEOUT_S, MAX_BATCH_SIZE, PeerModel


class DiagnosisAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = PeerModel()

    def decode_request(self, request) -> np.ndarray:
        return self.model.pixels(request["image"].file.read())

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, batch: np.ndarray) -> list[dict]:
        return self.model.answer(batch)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> dict:
        return output


def main() -> None:
    api = DiagnosisAPI(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        num_api_servers=1,
        generate_client_file=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
