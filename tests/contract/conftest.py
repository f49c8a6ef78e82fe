"""The contract suite's tools: openapi.yaml loaded once, and a caller that checks every
response it gets against the document.

`SpecCheckedApi` sends requests through chalice.test.Client and, for each answer, finds
the operation in openapi.yaml, requires its status to be documented there, and validates
the body against that status's schema with openapi_schema_validator. Validation is
stricter than the document: every object schema that does not say otherwise is closed
(`additionalProperties: false`), so a field the code returns but the document does not
describe fails here (clients are still told to ignore unknown fields: the document
itself stays open).
"""
from __future__ import annotations

import copy
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.conftest import ORIGIN, json_headers, restore_env, set_env

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def load_spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    return load_spec()


def resolve(spec: dict[str, Any], node: Any) -> Any:
    """Follow `$ref`s (local ones only: the document has no others) to the node they name."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) for every operation in the document."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def close_objects(node: Any) -> None:
    """Make every object schema that lists properties refuse undocumented ones, in place.

    Schemas that set `additionalProperties` themselves (the error envelope's details,
    maps, the export's stored items) keep what they say.
    """
    if isinstance(node, list):
        for item in node:
            close_objects(item)
        return
    if not isinstance(node, dict):
        return
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    for keyword, value in node.items():
        if keyword == "properties":
            for schema in value.values():
                close_objects(schema)
        elif keyword in ("items", "additionalProperties", "if", "then", "else", "not"):
            close_objects(value)
        elif keyword in ("oneOf", "anyOf", "allOf"):
            close_objects(value)


def strict_spec(spec: dict[str, Any]) -> dict[str, Any]:
    strict = copy.deepcopy(spec)
    for schema in strict["components"]["schemas"].values():
        close_objects(schema)
    for _, _, operation in operations(strict):
        for response in operation.get("responses", {}).values():
            for media in response.get("content", {}).values():
                close_objects(media.get("schema"))
    return strict


def template_regex(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path)) + "$")


def schema_errors(schema: dict[str, Any], document: dict[str, Any], instance: Any) -> list[str]:
    """Where `instance` breaks `schema` (OpenAPI 3.1 dialect, formats checked), refs into `document`."""
    from openapi_schema_validator import OAS31Validator, oas31_format_checker

    root = {**schema, "components": document["components"]}
    OAS31Validator.check_schema(root)
    validator = OAS31Validator(root, format_checker=oas31_format_checker)
    return [f"{'/'.join(map(str, error.absolute_path)) or '(the body)'}: {error.message}"
            for error in validator.iter_errors(instance)]


@dataclass
class Answer:
    method: str
    template: str
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class SpecCheckedApi:
    """Calls the app; every answer must be described by openapi.yaml (status and body)."""

    client: Any
    spec: dict[str, Any]
    strict: dict[str, Any]
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def operation_for(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        bare = path.split("?", 1)[0]
        for template, item in self.spec["paths"].items():
            if method in item and template_regex(template).match(bare):
                return template, item[method]
        raise AssertionError(f"{method.upper()} {bare} is not in openapi.yaml")

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             headers: dict[str, str] | None = None, raw: bytes | str | None = None) -> Answer:
        method = method.lower()
        template, operation = self.operation_for(method, path)
        payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        response = self.client.http.request(
            method.upper(), path, headers={**json_headers(token, origin=ORIGIN), **(headers or {})},
            body=payload,
        )
        media = dict(response.headers).get("Content-Type", "application/json").split(";")[0].strip()
        if media == "application/json":
            parsed = json.loads(response.body) if response.body else None
        else:  # the console's page, its assets, the audit export: text of a documented type
            parsed = response.body.decode("utf-8")
        answer = Answer(method, template, response.status_code, parsed, dict(response.headers))
        if 200 <= answer.status < 300 and body is not None:
            self.check_request(answer, operation, body)
        self.check(answer, operation)
        return answer

    def check_request(self, answer: Answer, operation: dict[str, Any], body: Any) -> None:
        """A body the app accepted must be one the document allows (the other direction)."""
        where = f"{answer.method.upper()} {answer.template} request"
        described = operation.get("requestBody")
        assert described is not None, f"{where}: the app took a body the document does not describe"
        problems = schema_errors(described["content"]["application/json"]["schema"], self.spec, body)
        assert not problems, f"{where}: {problems}"

    def check(self, answer: Answer, operation: dict[str, Any]) -> None:
        where = f"{answer.method.upper()} {answer.template} -> {answer.status}"
        documented = operation["responses"].get(str(answer.status))
        assert documented is not None, f"{where} is not documented: {answer.body}"
        content = resolve(self.strict, documented).get("content")
        if not content:
            assert answer.body is None, f"{where} is documented without a body but has {answer.body}"
        else:
            media = answer.headers.get("Content-Type", "application/json").split(";")[0].strip()
            assert media in content, f"{where}: {media} is not documented ({sorted(content)})"
            problems = schema_errors(content[media]["schema"], self.strict, answer.body)
            assert not problems, f"{where}: {problems}\n{answer.body}"
        self.seen.add((answer.method, answer.template, answer.status))

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.call("get", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        return self.call("post", path, body, **kwargs)

    def delete(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        return self.call("delete", path, body, **kwargs)


@pytest.fixture
def api(client, spec) -> SpecCheckedApi:
    return SpecCheckedApi(client, spec, strict_spec(spec))


@dataclass
class CatchupQueue:
    """A private catch-up queue for this test, so no other worker takes its messages."""

    url: str
    arn: str

    def run_worker(self) -> None:
        """Hand the queue's one message to the app's SQS handler, as Lambda would."""
        import app
        from chalicelib.aws.clients import client
        from devstack.local_events import LambdaContext, sqs_event

        messages = client("sqs").receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=1, WaitTimeSeconds=2, AttributeNames=["All"]
        ).get("Messages", [])
        assert len(messages) == 1, "expected one catch-up message"
        app.catchup_worker(sqs_event(self.arn, messages), LambdaContext("catchup_worker", 300))


@pytest.fixture
def catchup_queue(provider_env, monkeypatch) -> Iterator[CatchupQueue]:
    from chalicelib.catchup import worker as catchup_worker
    from chalicelib.aws.clients import client

    name = f"transcription-backend-local-catchup-c{uuid.uuid4().hex[:12]}"
    sqs = client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    previous = set_env({"CATCHUP_QUEUE": name, "PROVIDER_BACKOFF_SECONDS": "0", "PROVIDER_BUDGET_SECONDS": "5"})
    # The fake answers "processing" a fixed number of polls, not for a time: poll fast.
    monkeypatch.setattr(catchup_worker, "sleep", lambda seconds: time.sleep(min(seconds, 0.02)))
    try:
        yield CatchupQueue(url, arn)
    finally:
        restore_env(previous)
        client("sqs").delete_queue(QueueUrl=url)


