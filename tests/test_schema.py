"""Schemathesis against /swagger.json: no server errors, answers that match the documented models."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/swagger.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_documentation(case):
    case.call_and_validate(
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    )


def json_schema(swagger):
    """Swagger 2.0 schemas as JSON Schema: ``x-nullable`` becomes a null among the allowed types."""
    if isinstance(swagger, list):
        return [json_schema(item) for item in swagger]
    if not isinstance(swagger, dict):
        return swagger
    schema = {key: json_schema(value) for key, value in swagger.items() if key != "x-nullable"}
    if swagger.get("x-nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


def test_a_real_diagnosis_matches_the_documented_model(client):
    import io

    import jsonschema

    from tests.support import sample_bytes

    spec = client.get("/swagger.json").get_json()
    r = client.post("/Diagnosis/prediction", data={"image": (io.BytesIO(sample_bytes("apple_scab.jpg")), "a.jpg")})
    assert r.status_code == 200
    documented = {"$ref": "#/definitions/Diagnosis", "definitions": json_schema(spec["definitions"])}
    jsonschema.validate(r.get_json(), documented)
    error = client.post("/Diagnosis/prediction", data={}).get_json()
    jsonschema.validate(error, {"$ref": "#/definitions/Error", "definitions": spec["definitions"]})
