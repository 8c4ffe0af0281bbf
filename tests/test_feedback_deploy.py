"""Feedback storage on Kubernetes: the example Secret and the Deployment's env agree, and both are valid."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from util.config import ENV_PREFIX, Settings

yaml = pytest.importorskip("yaml", reason="pip install -r deploy/requirements-test.txt")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate.utils", reason="pip install -r deploy/requirements-test.txt"
)

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
SECRET = K8S / "feedback" / "secret.example.yaml"


@pytest.fixture(scope="module")
def secret() -> dict:
    return yaml.safe_load(SECRET.read_text())


@pytest.fixture(scope="module")
def from_secret() -> dict[str, dict]:
    """The Deployment's env entries that read the Secret: name -> secretKeyRef."""
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}


def test_the_example_secret_is_valid_kubernetes(secret):
    kubernetes_validate.validate(secret, kubernetes_validate.latest_version(), strict=True)


def test_the_deployment_reads_every_key_of_the_secret_optionally(secret, from_secret):
    assert set(secret["stringData"]) == set(from_secret)
    for name, reference in from_secret.items():
        assert reference == {"name": secret["metadata"]["name"], "key": name, "optional": True}, name


def test_the_secret_turns_feedback_on_with_settings_the_service_knows(secret):
    knobs = {ENV_PREFIX + field.name.upper() for field in fields(Settings)}
    settings = {k: v for k, v in secret["stringData"].items() if k.startswith(ENV_PREFIX)}
    assert set(settings) <= knobs
    parsed = Settings.from_env(settings)
    assert parsed.feedback is True and parsed.database_url.startswith("postgresql+psycopg://")
    assert parsed.photo_store.startswith("s3://")
