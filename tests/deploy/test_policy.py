"""The IAM policy files allow exactly what the code calls, on exactly our resources."""
from __future__ import annotations

import json
import textwrap

import pytest

from infra import policy


@pytest.mark.parametrize("function", sorted(policy.FUNCTIONS))
@pytest.mark.parametrize("stage", policy.DEPLOY_STAGES)
def test_policy_file_matches_the_code(stage, function):
    path = policy.policy_path(stage, function)
    with open(path, encoding="utf-8") as handle:
        current = json.load(handle)
    expected = policy.expected_policy(stage, function)
    difference = policy.describe_difference(current, expected)
    assert not difference, (
        f"{path} is out of step with the code (regenerate: python -m infra policy --write):\n{difference}"
    )


def _granted(stage, function):
    with open(policy.policy_path(stage, function), encoding="utf-8") as handle:
        return json.load(handle)


def test_the_internet_facing_authorizer_reads_its_secrets_and_accounts_and_writes_its_logs_nothing_else():
    document = _granted("prod", "jwt_auth")
    # chalicelib.accounts.standing: one GetItem of the account per token per cache period, made
    # with json_client (declared by its literal call); nothing else of DynamoDB, no other table.
    assert policy.allowed_actions(document) == {
        "logs:CreateLogStream", "logs:PutLogEvents", "ssm:GetParameters", "dynamodb:GetItem",
    }
    tables = next(s for s in document["Statement"] if s["Sid"] == "Tables")
    assert tables["Action"] == ["dynamodb:GetItem"]
    assert tables["Resource"] == ["arn:aws:dynamodb:*:*:table/transcription-backend-prod-users"]
    logs = next(s for s in document["Statement"] if s["Sid"] == "Logs")
    assert logs["Resource"] == ["arn:aws:logs:*:*:log-group:/aws/lambda/transcription-backend-prod-jwt_auth:*"]
    # every other function names some of its tables through variables: all our tables
    api = next(s for s in _granted("prod", "api_handler")["Statement"] if s["Sid"] == "Tables")
    assert "arn:aws:dynamodb:*:*:table/transcription-backend-prod-stats" in api["Resource"]


def test_json_client_calls_are_read_like_client_calls_and_name_their_table(tmp_path):
    root = _tree(tmp_path, {
        "app.py": "",
        "reader.py": """
            from chalicelib.aws import json_client
            from chalicelib.core.settings import get_settings

            def standing(user_id, operation):
                json_client.call("dynamodb", "GetItem", {"TableName": get_settings().resource("users"), "Key": {}})
                json_client.call("ssm", "GetParameters", {"Names": []}, region="eu-west-1")
                json_client.call("dynamodb", operation, {})
        """,
    })
    result = policy.scan(root)
    assert {(c.service, c.operation, c.table) for c in result.calls} == {
        ("dynamodb", "GetItem", "users"), ("ssm", "GetParameters", None)}
    assert len(result.unresolved) == 1 and "name the service and operation literally" in result.unresolved[0]


def test_only_the_worker_polls_the_queue_and_only_the_api_lists_the_bucket():
    poller = set(policy.SQS_EVENT_SOURCE_ACTIONS) - {"sqs:DeleteMessage"}
    for function in policy.FUNCTIONS:
        actions = policy.allowed_actions(_granted("prod", function))
        assert (poller <= actions) == (function == "catchup_worker"), function
        assert ("s3:ListBucket" in actions) == (function == "api_handler"), function
    worker = policy.allowed_actions(_granted("prod", "catchup_worker"))
    assert "sqs:ChangeMessageVisibility" in worker  # it delays its own redelivery
    assert "sqs:ChangeMessageVisibility" not in policy.allowed_actions(_granted("prod", "api_handler"))


def test_each_function_is_granted_what_its_own_code_calls(tmp_path):
    root = _tree(tmp_path, {
        "app.py": textwrap.dedent("""
            from chalice import Chalice
            from chalicelib import worker
            from chalicelib.web import middleware
            from chalicelib.web.authorizer import authorize
            app = Chalice(app_name="x")

            @app.authorizer()
            def jwt_auth(request):
                return authorize(request)

            @app.route("/")
            def index():
                return middleware.page()

            @app.on_sqs_message(queue="q")
            def catchup_worker(event):
                worker.handle(event)
        """),
        "web/authorizer.py": """
            from chalicelib.aws import ssm_secrets

            def authorize(request):
                return ssm_secrets.read()
        """,
        "aws/ssm_secrets.py": """
            from chalicelib.aws.clients import client

            def read():
                return client("ssm").get_parameters(Names=[])
        """,
        "web/middleware.py": """
            from chalicelib.aws.clients import client

            def page():
                return client("dynamodb").get_item(TableName="t", Key={})
        """,
        "worker.py": """
            def handle(event):
                from chalicelib.aws.clients import client  # a deferred import counts too
                client("s3").put_object(Bucket="b", Key="k")
        """,
    })
    functions = {"api_handler": "app", "jwt_auth": "chalicelib.web.authorizer", "catchup_worker": "chalicelib.worker"}
    original = dict(policy.FUNCTIONS)
    policy.FUNCTIONS.clear()
    policy.FUNCTIONS.update(functions)
    try:
        granted = {f: policy.function_actions(f, root) - set(policy.LOG_ACTIONS) for f in functions}
    finally:
        policy.FUNCTIONS.clear()
        policy.FUNCTIONS.update(original)
    assert granted == {
        "api_handler": {"dynamodb:GetItem"},  # the other handlers' bodies are not the API's code
        "jwt_auth": {"ssm:GetParameters"},
        "catchup_worker": {"s3:PutObject", *policy.SQS_EVENT_SOURCE_ACTIONS},
    }


def test_a_table_override_in_the_stage_config_moves_the_grant(tmp_path):
    """docs/operations.md, restoring a table: the restored table's name is what gets granted."""
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps({"stages": {"prod": {"environment_variables": {
        "USERS_TABLE": "transcription-backend-prod-users-restored-20261201"}}}}))
    rendered = policy.render_policy("prod", ["dynamodb:GetItem"], root=str(tmp_path))
    tables = rendered["Statement"][0]["Resource"]
    assert "arn:aws:dynamodb:*:*:table/transcription-backend-prod-users-restored-20261201" in tables
    assert "arn:aws:dynamodb:*:*:table/transcription-backend-prod-users" not in tables


def test_scan_resolves_every_client_call():
    result = policy.scan()
    assert not result.unresolved, result.unresolved
    assert ("dynamodb", "TransactWriteItems") in result.operations
    assert ("ssm", "GetParameters") in result.operations


def _tree(tmp_path, files):
    (tmp_path / "chalicelib").mkdir()
    (tmp_path / "app.py").write_text(files.pop("app.py", ""))
    for name, source in files.items():
        (tmp_path / "chalicelib" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "chalicelib" / name).write_text(textwrap.dedent(source))
    return str(tmp_path)


def test_scan_follows_clients_through_helpers_variables_paginators_presigns_and_waiters(tmp_path):
    root = _tree(
        tmp_path,
        {
            "app.py": textwrap.dedent(
                """
                from chalice import Chalice
                app = Chalice(app_name="x")

                @app.on_sqs_message(queue="q")
                def worker(event):
                    pass
                """
            ),
            "store.py": """
                from chalicelib.aws.clients import client

                def ddb():
                    return client("dynamodb")

                def put():
                    ddb().transact_write_items(TransactItems=[{"Put": {}}, {"ConditionCheck": {}}])
            """,
            "jobs.py": """
                from chalicelib.aws import store
                from chalicelib.aws.clients import client

                def run():
                    s3, bucket = client("s3"), "b"
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": []})
                    sqs = client("sqs")
                    sqs.send_message(QueueUrl="u", MessageBody="b")
                    for page in store.ddb().get_paginator("query").paginate():
                        pass
                    client("s3").generate_presigned_url("put_object", Params={})
                    client("s3").generate_presigned_url(ClientMethod="get_object", Params={})
                    store.ddb().get_waiter("table_exists").wait(TableName="t")
                    store.ddb().exceptions.ConditionalCheckFailedException
            """,
        },
    )
    result = policy.scan(root)
    assert result.operations == {
        ("dynamodb", "TransactWriteItems"),
        ("dynamodb", "Query"),
        ("dynamodb", "DescribeTable"),
        ("sqs", "SendMessage"),
        ("s3", "PutObject"),
        ("s3", "GetObject"),
        ("s3", "DeleteObjects"),
    }
    assert result.transact_kinds == {"Put", "ConditionCheck"}
    assert result.sqs_subscriptions == ["app.py:worker"]
    assert policy.required_actions(result) == {
        "logs:CreateLogStream", "logs:PutLogEvents",
        "dynamodb:PutItem", "dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:DescribeTable",
        "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
        "s3:PutObject", "s3:GetObject", "s3:DeleteObject",
    }


def test_scan_reports_a_presign_it_cannot_name(tmp_path):
    root = _tree(
        tmp_path,
        {"x.py": """
            from chalicelib.aws.clients import client

            def url(method):
                return client("s3").generate_presigned_url(method, Params={})
        """},
    )
    assert policy.scan(root).unresolved == ["chalicelib/x.py:5 s3.generate_presigned_url"]


@pytest.mark.parametrize(
    "service, operation, expected",
    [
        ("dynamodb", "GetItem", {"dynamodb:GetItem"}),
        ("dynamodb", "TransactGetItems", {"dynamodb:GetItem"}),
        ("s3", "HeadObject", {"s3:GetObject"}),
        ("s3", "ListObjectsV2", {"s3:ListBucket"}),
        ("s3", "DeleteObjects", {"s3:DeleteObject"}),
        ("sqs", "SendMessageBatch", {"sqs:SendMessage"}),
        ("ssm", "GetParameters", {"ssm:GetParameters"}),
    ],
)
def test_operations_map_to_documented_actions(service, operation, expected):
    assert policy.actions_for(service, operation) == expected


def test_transact_write_needs_the_per_item_actions_of_the_kinds_used():
    assert policy.actions_for("dynamodb", "TransactWriteItems", {"Update", "Delete"}) == {
        "dynamodb:UpdateItem", "dynamodb:DeleteItem",
    }


def test_rendered_policy_scopes_each_service_to_our_resources():
    rendered = policy.render_policy(
        "prod",
        ["dynamodb:Query", "s3:PutObject", "s3:ListBucket", "sqs:SendMessage", "ssm:GetParameters",
         "logs:PutLogEvents"],
    )
    by_sid = {s["Sid"]: s for s in rendered["Statement"]}
    assert "arn:aws:dynamodb:*:*:table/transcription-backend-prod-users" in by_sid["Tables"]["Resource"]
    assert "arn:aws:dynamodb:*:*:table/transcription-backend-prod-sessions/index/*" in by_sid["Tables"]["Resource"]
    for table in ("users", "emails"):  # no indexes there
        assert not any("index" in r and f"-{table}/" in r for r in by_sid["Tables"]["Resource"])
    assert by_sid["AudioObjects"]["Resource"] == ["arn:aws:s3:::transcription-backend-prod-audio/uploads/*"]
    assert by_sid["AudioBucket"]["Condition"] == {"StringLike": {"s3:prefix": ["uploads/*"]}}
    assert by_sid["Queues"]["Resource"] == ["arn:aws:sqs:*:*:transcription-backend-prod-catchup"]
    assert by_sid["Secrets"]["Resource"] == ["arn:aws:ssm:*:*:parameter/transcription-backend/prod/*"]
    every_resource = [r for s in rendered["Statement"] for r in s["Resource"]]
    assert all("prod" in r for r in every_resource) and "*" not in every_resource


def test_a_service_without_a_defined_scope_is_refused():
    with pytest.raises(ValueError, match="kms"):
        policy.render_policy("prod", ["kms:Decrypt"])


def test_difference_names_missing_and_extra_actions():
    expected = policy.render_policy("dev", ["dynamodb:GetItem", "logs:PutLogEvents"])
    current = policy.render_policy("dev", ["dynamodb:Scan", "logs:PutLogEvents"])
    text = policy.describe_difference(current, expected)
    assert "missing (the code calls these): dynamodb:GetItem" in text
    assert "extra (nothing in the code needs these): dynamodb:Scan" in text
