"""Record every AWS operation the application code makes while the test suite runs
(through boto3, or through chalicelib.aws.json_client).

Installed for the whole session by tests/deploy/conftest.py. A call counts as the
application's when the innermost caller outside boto3/botocore is in chalicelib/ or
app.py: the tests' own setup (bootstrap, direct table reads, the CloudFormation deploy)
is not the deployed code and needs no permission. Presigned URLs are recorded too: they
are signed with the role's credentials, so the role needs the operation they name.
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP_PATHS = (os.path.join(ROOT, "chalicelib") + os.sep, os.path.join(ROOT, "app.py"))
LIBRARY_MARKERS = (f"{os.sep}botocore{os.sep}", f"{os.sep}boto3{os.sep}", f"{os.sep}s3transfer{os.sep}")


@dataclass(frozen=True)
class RecordedCall:
    service: str
    operation: str
    site: str
    tables: tuple[str, ...] = ()
    transact_kinds: tuple[str, ...] = ()
    bucket: str = ""
    keys: tuple[str, ...] = ()
    queue: str = ""
    parameters: tuple[str, ...] = ()


def _caller_site() -> str | None:
    """`chalicelib/x.py:12` for an application call, None for anything else."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename != __file__ and not any(marker in filename for marker in LIBRARY_MARKERS):
            if filename.startswith(APP_PATHS[0]) or filename == APP_PATHS[1]:
                return f"{os.path.relpath(filename, ROOT)}:{frame.f_lineno}"
            return None
        frame = frame.f_back
    return None


def _overrides() -> dict[str, str]:
    """{physical name: suffix} of the `<SUFFIX>_TABLE/_BUCKET/_QUEUE` overrides now in force.

    Tests give some resources names of their own this way; they still stand for our suffix.
    """
    from chalicelib.aws.resources import RESOURCE_ENV_VARS

    return {os.environ[var]: suffix for var, suffix in RESOURCE_ENV_VARS.items() if os.environ.get(var)}


def _canonical(name: str, overrides: dict[str, str]) -> str:
    """An overridden name as the derived name of its suffix, so checks see what it stands for."""
    from chalicelib.core.settings import resource_name

    return resource_name("override", overrides[name]) if name in overrides else name


def _object_keys(params: dict[str, Any]) -> tuple[str, ...]:
    """Every object key (or listing prefix) an S3 call names."""
    if "Key" in params:
        return (params["Key"],)
    if "Prefix" in params:
        return (params["Prefix"],)
    if "Delete" in params:
        return tuple(o.get("Key", "") for o in params["Delete"].get("Objects", []))
    return ("",)


def _describe(service: str, operation: str, params: dict[str, Any], site: str) -> RecordedCall:
    tables: list[str] = []
    kinds: list[str] = []
    if service == "dynamodb":
        if "TableName" in params:
            tables.append(params["TableName"])
        for item in params.get("TransactItems", []):
            for kind, body in item.items():
                kinds.append(kind)
                tables.append(body.get("TableName", ""))
        tables += list(params.get("RequestItems", {}))
    queue = params.get("QueueName") or params.get("QueueUrl", "").rsplit("/", 1)[-1]
    overrides = _overrides()
    return RecordedCall(
        service=service,
        operation=operation,
        site=site,
        tables=tuple(_canonical(t, overrides) for t in tables),
        transact_kinds=tuple(sorted(set(kinds))),
        bucket=_canonical(params.get("Bucket", ""), overrides),
        keys=_object_keys(params) if service == "s3" else (),
        queue=_canonical(queue, overrides) if service == "sqs" else "",
        parameters=tuple(params.get("Names", [])) if service == "ssm" else (),
    )


class Recorder:
    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []
        self._lock = threading.Lock()
        self._undo: list[Callable[[], None]] = []

    def record(self, service: str, operation: str, params: dict[str, Any]) -> None:
        site = _caller_site()
        if site is None:
            return
        call = _describe(service, operation, params or {}, site)
        with self._lock:
            self.calls.append(call)

    def install(self) -> None:
        from botocore import client as botocore_client
        from botocore import signers

        recorder = self
        original_call = botocore_client.BaseClient._make_api_call
        original_presign = signers.generate_presigned_url

        def _make_api_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            recorder.record(client.meta.service_model.service_name, operation_name, api_params)
            return original_call(client, operation_name, api_params)

        def generate_presigned_url(client: Any, ClientMethod: str, Params: Any = None, *args: Any, **kwargs: Any) -> Any:  # noqa: N803 (botocore's names)
            operation = client.meta.method_to_api_mapping.get(ClientMethod, ClientMethod)
            recorder.record(client.meta.service_model.service_name, operation, Params or {})
            return original_presign(client, ClientMethod, Params, *args, **kwargs)

        from chalicelib.aws import json_client

        original_json_call = json_client.call

        def json_call(service: str, operation: str, payload: dict[str, Any], **kwargs: Any) -> Any:
            recorder.record(service, operation, payload)  # the standard-library client: same check
            return original_json_call(service, operation, payload, **kwargs)

        botocore_client.BaseClient._make_api_call = _make_api_call
        signers.generate_presigned_url = generate_presigned_url
        json_client.call = json_call
        self._undo = [
            lambda: setattr(botocore_client.BaseClient, "_make_api_call", original_call),
            lambda: setattr(signers, "generate_presigned_url", original_presign),
            lambda: setattr(json_client, "call", original_json_call),
        ]

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo = []


RECORDER = Recorder()
