"""The infrastructure template deployed into moto's CloudFormation, and the app running on it.

A stage of its own (`cfntest`), so the stack's resources never collide with the test
stack that infra.bootstrap creates for the `local` stage.
"""
from __future__ import annotations

import json
import os

import boto3
import pytest

from infra import deploy, template
from tests.conftest import ORIGIN, PASSWORD, json_headers, reset_process_caches, unique_email

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Tried to parse AWS")]

CFN_STAGE = "cfntest"


def _aws(service: str, endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.session.Session().client(service, endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture(scope="module")
def cfn_stack(aws_endpoint):
    """The cfntest stack, created through the deploy command's own code path."""
    return deploy.deploy_infra(CFN_STAGE, [ORIGIN], _aws("cloudformation", aws_endpoint))


@pytest.fixture
def cfn_client(cfn_stack):
    """chalice.test.Client whose settings (and so every resource name) are the cfntest stage's.

    The settings are built before the first request and cached: the test client applies the
    `local` stage's environment per request, which must not switch the stage back.
    """
    from chalice.test import Client

    import app
    from chalicelib.core.settings import get_settings

    os.environ["STAGE"] = CFN_STAGE
    reset_process_caches()
    try:
        assert get_settings().stage == CFN_STAGE
        with Client(app.app, stage_name="local") as client:
            yield client
    finally:
        os.environ["STAGE"] = "local"
        reset_process_caches()


def test_stack_outputs_name_every_resource_the_app_derives(cfn_stack):
    for key, name in template.expected_names(CFN_STAGE).items():
        assert cfn_stack[key] == name
    assert cfn_stack["UsersTableArn"].endswith(":table/transcription-backend-cfntest-users")


def test_created_resources_have_the_defined_keys_indexes_and_redrive(cfn_stack, aws_endpoint):
    dynamodb = _aws("dynamodb", aws_endpoint)
    users = dynamodb.describe_table(TableName="transcription-backend-cfntest-users")["Table"]
    assert users["KeySchema"] == [{"AttributeName": "user_id", "KeyType": "HASH"}]
    assert users.get("GlobalSecondaryIndexes", []) == []
    assert users["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    usage = dynamodb.describe_table(TableName="transcription-backend-cfntest-usage")["Table"]
    assert [k["AttributeName"] for k in usage["KeySchema"]] == ["user_id", "timestamp"]

    sqs = _aws("sqs", aws_endpoint)
    url = sqs.get_queue_url(QueueName="transcription-backend-cfntest-catchup")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "1800"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == cfn_stack["CatchupDlqQueueArn"]
    assert int(redrive["maxReceiveCount"]) == 3

    s3 = _aws("s3", aws_endpoint)
    encryption = s3.get_bucket_encryption(Bucket="transcription-backend-cfntest-audio")
    rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_updating_an_unchanged_stack_is_a_no_op(cfn_stack, aws_endpoint):
    again = deploy.deploy_infra(CFN_STAGE, [ORIGIN], _aws("cloudformation", aws_endpoint))
    assert again == cfn_stack


def test_the_prod_shape_deploys_with_deletion_protection(aws_endpoint):
    cloudformation = _aws("cloudformation", aws_endpoint)
    name = template.stack_name("cfnprod")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(template.render("cfnprod", protected=True)),
        Parameters=[{"ParameterKey": "AllowedOrigins", "ParameterValue": ORIGIN}],
    )
    cloudformation.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1})
    table = _aws("dynamodb", aws_endpoint).describe_table(TableName="transcription-backend-cfnprod-users")["Table"]
    assert table["DeletionProtectionEnabled"] is True


def test_the_app_registers_logs_in_and_grants_credits_on_the_stack_resources(cfn_client, aws_endpoint):
    health = cfn_client.http.get("/health")
    assert health.status_code == 200 and json.loads(health.body)["stage"] == CFN_STAGE

    email = unique_email("cfn")
    registered = cfn_client.http.post(
        "/auth/register", headers=json_headers(origin=ORIGIN),
        body=json.dumps({"email": email, "password": PASSWORD, "name": "Stack"}),
    )
    assert registered.status_code == 201, registered.body
    user_id = json.loads(registered.body)["user"]["user_id"]

    login = cfn_client.http.post(
        "/auth/login", headers=json_headers(origin=ORIGIN),
        body=json.dumps({"email": email, "password": PASSWORD}),
    )
    assert login.status_code == 200, login.body
    me = cfn_client.http.get("/auth/user", headers=json_headers(json.loads(login.body)["token"], origin=ORIGIN))
    assert me.status_code == 200 and json.loads(me.body)["user"]["credits_balance"] == 200

    dynamodb = _aws("dynamodb", aws_endpoint)
    key = {"user_id": {"S": user_id}}
    assert "Item" in dynamodb.get_item(TableName="transcription-backend-cfntest-users", Key=key)
    assert "Item" not in dynamodb.get_item(TableName="transcription-backend-local-users", Key=key)
    grant = dynamodb.get_item(
        TableName="transcription-backend-cfntest-transactions",
        Key={"transaction_id": {"S": f"grant#signup#{user_id}"}},
    )
    assert grant["Item"]["credits"] == {"N": "200"}

    from chalicelib.credits import ledger

    first = ledger.grant(user_id, 50, source="admin", record_id="cfn-check")
    replay = ledger.grant(user_id, 50, source="admin", record_id="cfn-check")
    assert (first.balance_after, first.replayed, replay.replayed) == (250, False, True)
    balance = dynamodb.get_item(TableName="transcription-backend-cfntest-users", Key=key)["Item"]["credits_balance"]
    assert balance == {"N": "250"}


def test_a_deployed_stage_gets_the_sessions_index_replaced_in_two_updates(aws_endpoint, monkeypatch):
    """A stage deployed with the sessions table's former index (`user_id-index`, ALL): the deploy
    creates the keys-only index before the app is deployed and deletes the old one after it.

    The stack is created in moto and its template read back from it; the updates are recorded,
    not applied: moto's CloudFormation has no update for AWS::DynamoDB::Table and drops a
    table whose properties change (template.index_steps' own tests check each step).
    """
    cloudformation = _aws("cloudformation", aws_endpoint)
    stage = "cfnindex"
    final = template.render(stage)
    former = json.loads(json.dumps(final))
    former["Resources"]["SessionsTable"]["Properties"]["GlobalSecondaryIndexes"] = [{
        "IndexName": "user_id-index", "Projection": {"ProjectionType": "ALL"},
        "KeySchema": [{"AttributeName": "user_id", "KeyType": "HASH"},
                      {"AttributeName": "started_at", "KeyType": "RANGE"}]}]
    name = template.stack_name(stage)
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(former),
                                Parameters=[{"ParameterKey": "AllowedOrigins", "ParameterValue": ORIGIN}])
    cloudformation.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1})
    assert deploy.deployed_template(cloudformation, name) == former
    updates = []
    monkeypatch.setattr(deploy, "create_or_update_stack",
                        lambda client, request, protect=False: updates.append(json.loads(request["TemplateBody"])))

    # make deploy: before the app, the new index is created and the old one kept ...
    deploy.deploy_infra(stage, [ORIGIN], cloudformation, keep_retired_indexes=True)
    assert [_index_names(u) for u in updates] == [["user_id-started_at-index", "user_id-index"]]
    # ... after it, nothing queries the old one: it goes
    monkeypatch.setattr(deploy, "deployed_template", lambda client, stack: updates[-1])
    deploy.deploy_infra(stage, [ORIGIN], cloudformation)
    assert [_index_names(u) for u in updates[1:]] == [["user_id-started_at-index"]]
    assert updates[-1] == final
    # a stage whose deploy stopped between the two, deployed again in one go: one step at a time
    monkeypatch.setattr(deploy, "deployed_template", lambda client, stack: former)
    deploy.deploy_infra(stage, [ORIGIN], cloudformation)
    assert [_index_names(u) for u in updates[2:]] == [["user_id-index", "user_id-started_at-index"],
                                                      ["user_id-started_at-index"]]


def _index_names(rendered):
    return [i["IndexName"] for i in rendered["Resources"]["SessionsTable"]["Properties"]["GlobalSecondaryIndexes"]]
