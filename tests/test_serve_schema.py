"""The API's contract is written down: the OpenAPI schema names every request body, every
answer and every status, and what the server sends matches it.

``assert_documented`` is what the malformed-request tests (``test_serve_errors``) check each
answer with: its status is listed for the operation, its content type is the one listed, and
its body validates against the listed schema. A short property-based run (schemathesis)
sends requests generated from the schema itself and applies the same checks.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from llavac.args import ServeArgs
from llavac.serve import create_app

ERROR_STATUSES = {"400", "401", "403", "408", "413", "415", "422", "429", "503"}


def assert_documented(schema: dict, response) -> None:
    """``response`` (an httpx response) is what ``schema`` says its operation answers."""
    request = response.request
    operation = schema["paths"].get(request.url.path, {}).get(request.method.lower())
    if operation is None:  # not an operation of the API: only the 404 / 405 is promised
        assert response.status_code in (404, 405), f"{request.method} {request.url.path}"
        return
    status = str(response.status_code)
    assert status in operation["responses"], (
        f"{request.method} {request.url.path} answered {status}, which its schema does not "
        f"list ({sorted(operation['responses'])})")
    content = operation["responses"][status].get("content", {})
    media_type = response.headers["content-type"].split(";")[0].strip()
    assert media_type in content, f"{status} came as {media_type}, documented: {list(content)}"
    body_schema = content[media_type].get("schema", {})
    if media_type == "application/json":
        validator = Draft202012Validator({**body_schema, "components": schema["components"]})
        errors = [error.message for error in validator.iter_errors(response.json())]
        assert not errors, f"{request.method} {request.url.path} {status}: {errors}"


@pytest.fixture(scope="module")
def classifier():
    from llavac.predict import Classifier

    return Classifier.from_pretrained("tiny-llava")


@pytest.fixture(scope="module")
def keyed_schema(classifier) -> dict:
    with TestClient(create_app(classifier, ServeArgs(api_key="k"))) as client:
        return client.get("/openapi.json", headers={"Authorization": "Bearer k"}).json()


def test_the_schema_is_valid_openapi_and_names_every_body_answer_and_status(keyed_schema):
    validate(keyed_schema)
    paths = keyed_schema["paths"]
    assert set(paths) == {"/health", "/ready", "/metrics", "/v1/model", "/v1/classify",
                          "/v1/classify/batch", "/v1/explain"}
    for path in ("/v1/classify", "/v1/classify/batch", "/v1/explain"):
        operation = paths[path]["post"]
        assert ERROR_STATUSES <= set(operation["responses"])
        for status in ERROR_STATUSES:
            (media_type,) = operation["responses"][status]["content"]
            assert operation["responses"][status]["content"][media_type]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"}
        assert operation["security"] == [{"bearer": []}]
        assert operation["parameters"][0]["name"] == (
            "grid" if path == "/v1/explain" else "min_confidence")
    bodies = paths["/v1/classify"]["post"]["requestBody"]["content"]
    assert set(bodies) == {"multipart/form-data", "application/json"}
    assert bodies["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    assert set(bodies["application/json"]["schema"]["required"]) == {"image_base64", "text"}
    answer = paths["/v1/classify"]["post"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/ClassifyAnswer"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert {"401", "429"} <= set(paths["/metrics"]["get"]["responses"])
    assert keyed_schema["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer"}}
    assert "security" not in paths["/health"]["get"]


def test_answers_match_the_schema(classifier, keyed_schema):
    from test_serve_ops import ITEM, bearer

    with TestClient(create_app(classifier, ServeArgs(api_key="k"))) as client:
        responses = [
            client.post("/v1/classify", json=ITEM, headers=bearer("k")),
            client.post("/v1/classify/batch", json=[ITEM, ITEM], headers=bearer("k")),
            client.post("/v1/explain?grid=2", json=ITEM, headers=bearer("k")),
            client.post("/v1/classify", json=ITEM, headers=bearer("wrong")),
            client.get("/v1/model", headers=bearer("k")),
            client.get("/metrics", headers=bearer("k")),
            client.get("/health"),
            client.get("/ready"),
        ]
    assert [r.status_code for r in responses] == [200, 200, 200, 401, 200, 200, 200, 200]
    for response in responses:
        assert_documented(keyed_schema, response)


def test_requests_generated_from_the_schema_get_documented_answers(classifier):
    """Property-based: schemathesis draws bodies, parameters and headers from the schema and
    sends them to a live server (no key: the keyed answers are checked above); every answer
    must be documented: no server error, and status, content type and body as the schema
    says. (Its check that schema-valid data is accepted does not apply: a string is valid
    JSON for image_base64, yet only the base64 of an image is accepted.)"""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )
    from test_serve_gate import live

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    statuses = set()
    with live(classifier, ServeArgs(max_wait_ms=0)) as (host, port, _app):
        schema = schemathesis.openapi.from_url(f"http://{host}:{port}/openapi.json")
        for operation in schema.get_all_operations():

            @settings(max_examples=15, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.ok().as_strategy())
            def check(case):
                statuses.add(case.call_and_validate(checks=checks).status_code)

            check()
    assert 422 in statuses  # the generated bodies did reach the validation of the routes
