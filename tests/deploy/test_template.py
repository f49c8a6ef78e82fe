"""The infrastructure template: rendered from chalicelib.aws.resources, valid for cfn-lint."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chalicelib.aws import resources
from infra import template
from tests.conftest import ORIGIN


def _by_type(rendered, kind):
    return {k: v for k, v in rendered["Resources"].items() if v["Type"] == kind}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_tables_match_the_single_definition(stage):
    tables = _by_type(template.render(stage), "AWS::DynamoDB::Table")
    assert len(tables) == len(resources.TABLES)
    for table in resources.TABLES:
        properties = tables[template.logical_id(table.suffix, "Table")]["Properties"]
        assert properties["TableName"] == f"transcription-backend-{stage}-{table.suffix}"
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["KeySchema"][0] == {"AttributeName": table.hash_key, "KeyType": "HASH"}
        assert [k["AttributeName"] for k in properties["KeySchema"]] == [
            n for n in (table.hash_key, table.range_key) if n
        ]
        assert {i["IndexName"] for i in properties.get("GlobalSecondaryIndexes", [])} == {
            i.name for i in table.indexes
        }
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert properties["SSESpecification"] == {"SSEEnabled": True}
        if table.ttl_attribute:
            assert properties["TimeToLiveSpecification"] == {
                "AttributeName": "expires_at_epoch", "Enabled": True,
            }
        else:
            assert "TimeToLiveSpecification" not in properties


def test_prod_tables_are_protected_and_retained_dev_tables_are_not():
    for stage, protected in (("prod", True), ("dev", False)):
        for table in _by_type(template.render(stage), "AWS::DynamoDB::Table").values():
            assert table["Properties"]["DeletionProtectionEnabled"] is protected
            assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == ("Retain" if protected else "Delete")


def test_audio_bucket_is_private_encrypted_short_lived_and_open_to_the_extension_only():
    rendered = template.render("prod")
    bucket = rendered["Resources"]["AudioBucket"]["Properties"]
    assert bucket["BucketName"] == "transcription-backend-prod-audio"
    assert all(bucket["PublicAccessBlockConfiguration"].values()) and len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 1 and rule["Status"] == "Enabled"
    (cors,) = bucket["CorsConfiguration"]["CorsRules"]
    assert cors["AllowedMethods"] == ["PUT"] and cors["AllowedOrigins"] == {"Ref": "AllowedOrigins"}
    assert rendered["Parameters"]["AllowedOrigins"]["Type"] == "CommaDelimitedList"
    policy = rendered["Resources"]["AudioBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert policy["Effect"] == "Deny" and policy["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_catchup_queue_redrives_to_its_dead_letter_queue():
    rendered = template.render("prod")
    queue = rendered["Resources"]["CatchupQueue"]["Properties"]
    assert queue["QueueName"] == "transcription-backend-prod-catchup"
    assert queue["VisibilityTimeout"] == 1800
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["CatchupDlqQueue", "Arn"]}, "maxReceiveCount": 3,
    }
    assert queue["SqsManagedSseEnabled"] is True
    assert "RedrivePolicy" not in rendered["Resources"]["CatchupDlqQueue"]["Properties"]


def test_outputs_name_and_locate_every_resource():
    outputs = template.render("dev")["Outputs"]
    for name in template.expected_names("dev"):
        assert name in outputs
    assert outputs["UsersTableArn"]["Value"] == {"Fn::GetAtt": ["UsersTable", "Arn"]}
    assert outputs["CatchupQueueUrl"]["Value"] == {"Ref": "CatchupQueue"}


def test_gateway_responses_carry_cors_for_the_first_origin_and_our_envelope():
    responses = template.gateway_responses(ORIGIN)
    assert {"UNAUTHORIZED", "ACCESS_DENIED", "MISSING_AUTHENTICATION_TOKEN", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    unauthorized = responses["UNAUTHORIZED"]
    assert unauthorized["statusCode"] == "401"
    assert unauthorized["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == f"'{ORIGIN}'"
    assert unauthorized["responseParameters"]["gatewayresponse.header.Vary"] == "'Origin'"
    body = json.loads(unauthorized["responseTemplates"]["application/json"])
    assert body["error"] == body["message"] == "Authentication required"
    assert body["code"] == "unauthorized"
    assert "statusCode" not in responses["DEFAULT_4XX"]  # keeps the gateway's own 4xx status


@pytest.mark.slow
def test_cfn_lint_passes_for_every_deployed_stage(tmp_path):
    paths = []
    for stage in ("dev", "prod"):
        path = tmp_path / f"infra-{stage}.json"
        path.write_text(json.dumps(template.render(stage), indent=2))
        paths.append(str(path))
    cfn_lint = os.path.join(os.path.dirname(sys.executable), "cfn-lint")
    completed = subprocess.run([cfn_lint, *paths], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_deploy_state_bucket_is_private_versioned_and_kept():
    rendered = template.render("prod")
    bucket = rendered["Resources"][template.DEPLOY_STATE_BUCKET]
    assert bucket["DeletionPolicy"] == "Retain"
    properties = bucket["Properties"]
    assert "BucketName" not in properties  # CloudFormation picks a globally unique name; the output says it
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(properties["PublicAccessBlockConfiguration"].values())
    assert rendered["Outputs"]["DeployStateBucketName"]["Value"] == {"Ref": template.DEPLOY_STATE_BUCKET}


def test_the_infrastructure_template_fits_inline():
    """make deploy sends it as TemplateBody: the deploy-state bucket for larger ones is in it."""
    for stage in ("dev", "prod"):
        assert len(json.dumps(template.render(stage))) < 51_200


# --- index changes: one per table and stack update ----------------------------------------

def _gsi(name, *keys, projection="ALL"):
    kinds = ("HASH", "RANGE")[:len(keys)]
    schema = [{"AttributeName": key, "KeyType": kind} for key, kind in zip(keys, kinds, strict=True)]
    return {"IndexName": name, "KeySchema": schema, "Projection": {"ProjectionType": projection}}


def _with(rendered, table_id, *indexes):
    """`rendered` with the table's indexes replaced (attribute definitions to match)."""
    changed = json.loads(json.dumps(rendered))
    properties = changed["Resources"][table_id]["Properties"]
    properties.pop("GlobalSecondaryIndexes", None)
    if indexes:
        properties["GlobalSecondaryIndexes"] = list(indexes)
    keys = [k["AttributeName"] for schema in [properties["KeySchema"], *(i["KeySchema"] for i in indexes)]
            for k in schema]
    properties["AttributeDefinitions"] = [{"AttributeName": k, "AttributeType": "S"} for k in dict.fromkeys(keys)]
    return changed


def _index_changes(before, after):
    """Per table: index creations + deletions from one template to the next (a changed one counts 2)."""
    changes = {}
    for logical, resource in after["Resources"].items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        old = {i["IndexName"]: i for i in before["Resources"][logical]["Properties"].get("GlobalSecondaryIndexes", [])}
        new = {i["IndexName"]: i for i in resource["Properties"].get("GlobalSecondaryIndexes", [])}
        changes[logical] = (len(set(old) ^ set(new))
                            + 2 * sum(1 for name in set(old) & set(new) if old[name] != new[name]))
    return changes


def _assert_deployable_sequence(deployed, final):
    steps = template.index_steps(deployed, final)
    sequence = [deployed, *steps, final]
    for before, after in zip(sequence, sequence[1:], strict=False):
        assert max(_index_changes(before, after).values()) <= 1
        assert {k: v for k, v in after["Resources"].items() if v["Type"] != "AWS::DynamoDB::Table"} == \
            {k: v for k, v in final["Resources"].items() if v["Type"] != "AWS::DynamoDB::Table"}
        for resource in after["Resources"].values():
            if resource["Type"] == "AWS::DynamoDB::Table":  # definitions for exactly the keys used
                properties = resource["Properties"]
                used = {k["AttributeName"] for schema in [properties["KeySchema"], *(
                    i["KeySchema"] for i in properties.get("GlobalSecondaryIndexes", []))] for k in schema}
                defined = [d["AttributeName"] for d in properties["AttributeDefinitions"]]
                assert sorted(defined) == sorted(used)
                assert properties.get("GlobalSecondaryIndexes", None) != []
    return steps


def test_the_sessions_index_replacement_is_one_creation_then_one_deletion():
    """The deployed sessions index (ALL, `user_id-index`) -> the keys-only one: two stack updates,
    the new index created before the old one goes (privacy's reads never miss it)."""
    final = template.render("prod")
    deployed = _with(final, "SessionsTable", _gsi("user_id-index", "user_id", "started_at"))
    (step,) = _assert_deployable_sequence(deployed, final)
    indexes = step["Resources"]["SessionsTable"]["Properties"]["GlobalSecondaryIndexes"]
    assert [(i["IndexName"], i["Projection"]["ProjectionType"]) for i in indexes] == [
        ("user_id-index", "ALL"), ("user_id-started_at-index", "KEYS_ONLY")]
    assert {k: v for k, v in step["Resources"].items() if k != "SessionsTable"} == \
        {k: v for k, v in final["Resources"].items() if k != "SessionsTable"}


def test_index_changes_of_several_tables_move_in_parallel_one_per_table_and_update():
    keys_only = _gsi("by-status", "status", "created_at", projection="KEYS_ONLY")
    final = _with(template.render("dev"), "JobsTable", keys_only, _gsi("by-user", "user_id", "created_at"))
    deployed = _with(final, "JobsTable", _gsi("by-status", "status", "created_at"), _gsi("old", "kind"))
    deployed = _with(deployed, "SessionsTable")  # no index yet
    deployed = _with(deployed, "StatsTable", _gsi("gone", "day"))
    steps = _assert_deployable_sequence(deployed, final)
    # jobs: create by-user, delete by-status, create it keys-only, delete old: 4 changes, 3 steps
    assert len(steps) == 3
    jobs = [[i["IndexName"] for i in s["Resources"]["JobsTable"]["Properties"]["GlobalSecondaryIndexes"]]
            for s in steps]
    assert jobs == [["by-status", "old", "by-user"], ["old", "by-user"], ["old", "by-user", "by-status"]]
    assert "GlobalSecondaryIndexes" not in steps[0]["Resources"]["StatsTable"]["Properties"]


def test_a_template_without_index_changes_or_a_new_stack_needs_no_steps():
    final = template.render("prod")
    assert template.index_steps(final, final) == []
    assert template.index_steps({}, final) == []
    one_change = _with(final, "SessionsTable")
    assert template.index_steps(one_change, final) == []


@pytest.mark.slow
def test_cfn_lint_passes_for_an_intermediate_index_step(tmp_path):
    final = template.render("prod")
    (step,) = template.index_steps(_with(final, "SessionsTable", _gsi("user_id-index", "user_id", "started_at")),
                                   final)
    path = tmp_path / "step.json"
    path.write_text(json.dumps(step, indent=2))
    cfn_lint = os.path.join(os.path.dirname(sys.executable), "cfn-lint")
    completed = subprocess.run([cfn_lint, str(path)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
