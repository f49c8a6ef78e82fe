"""The CloudFormation template of one stage's data resources, rendered from chalicelib.aws.resources.

One stack per stage (`transcription-backend-<stage>-infra`) holds the tables, the audio
bucket and the catch-up queues; the Chalice app is a separate deployment that finds them
by their deterministic names (`settings.resource_name`), which the stack's outputs repeat.
Keeping data in its own stack means `chalice deploy` (or deleting the app) can never
replace or drop a table, and prod tables are additionally protected three ways: deletion
protection, `DeletionPolicy: Retain` and point-in-time recovery.

The same objects build the local stack (infra.bootstrap), so keys, indexes and TTL
attributes cannot drift between a laptop and AWS. This module also defines the API
Gateway responses (401/403/4XX/5XX produced by the gateway itself, which Chalice cannot
configure), so the packaged template and the deploy step apply the same ones.
"""
from __future__ import annotations

import json
from typing import Any

from chalicelib.aws import resources
from chalicelib.core.settings import APP_NAME, resource_name

PROTECTED_STAGES = frozenset({"prod"})
DEPLOY_STATE_BUCKET = "DeployStateBucket"
UPLOAD_CORS_HEADERS = ("content-type", "content-length")
UPLOAD_CORS_MAX_AGE = 3000


def stack_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-infra"


def logical_id(suffix: str, kind: str) -> str:
    """`refresh-tokens`, `Table` -> `RefreshTokensTable` (CloudFormation ids are alphanumeric)."""
    return "".join(part.capitalize() for part in suffix.split("-")) + kind


def _tags(stage: str) -> list[dict[str, str]]:
    return [{"Key": "app", "Value": APP_NAME}, {"Key": "stage", "Value": stage}]


def _key_schema(hash_key: str, range_key: str | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return schema


def table_keys(table: resources.Table) -> dict[str, Any]:
    """Attribute definitions, key schema and indexes: the same in CloudFormation and CreateTable."""
    keys: dict[str, Any] = {
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"} for name in table.key_names()
        ],
        "KeySchema": _key_schema(table.hash_key, table.range_key),
    }
    if table.indexes:
        keys["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index.name,
                "KeySchema": _key_schema(index.hash_key, index.range_key),
                "Projection": {"ProjectionType": index.projection},
            }
            for index in table.indexes
        ]
    return keys


def _table(stage: str, table: resources.Table, protected: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "TableName": resource_name(stage, table.suffix),
        "BillingMode": "PAY_PER_REQUEST",
        **table_keys(table),
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
        "DeletionProtectionEnabled": protected,
        "Tags": _tags(stage),
    }
    if table.ttl_attribute:
        properties["TimeToLiveSpecification"] = {
            "AttributeName": table.ttl_attribute,
            "Enabled": True,
        }
    policy = "Retain" if protected else "Delete"
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": policy,
        "UpdateReplacePolicy": policy,
        "Properties": properties,
    }


# No public access, no ACLs, SSE-S3 (presigned PUTs need no KMS headers and the roles no kms:*).
_PRIVATE_BUCKET: dict[str, Any] = {
    "PublicAccessBlockConfiguration": {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    },
    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    "BucketEncryption": {
        "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    },
}


def _bucket(stage: str, bucket: resources.Bucket) -> dict[str, Any]:
    return {
        "Type": "AWS::S3::Bucket",
        "Properties": {
            "BucketName": resource_name(stage, bucket.suffix),
            **_PRIVATE_BUCKET,
            "LifecycleConfiguration": {
                "Rules": [
                    {
                        "Id": "expire-uploads",
                        "Status": "Enabled",
                        "ExpirationInDays": bucket.expire_after_days,
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    }
                ]
            },
            "CorsConfiguration": {
                "CorsRules": [
                    {
                        "AllowedMethods": list(bucket.cors_methods),
                        "AllowedOrigins": {"Ref": "AllowedOrigins"},
                        "AllowedHeaders": list(UPLOAD_CORS_HEADERS),
                        "MaxAge": UPLOAD_CORS_MAX_AGE,
                    }
                ]
            },
            "Tags": _tags(stage),
        },
    }


def _bucket_policy(bucket: resources.Bucket) -> dict[str, Any]:
    """Refuse plain-HTTP access: presigned URLs are bearer credentials."""
    bucket_id = logical_id(bucket.suffix, "Bucket")
    return {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [
                            {"Fn::GetAtt": [bucket_id, "Arn"]},
                            {"Fn::Sub": "${%s.Arn}/*" % bucket_id},
                        ],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ],
            },
        },
    }


def _queue(stage: str, queue: resources.Queue) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "QueueName": resource_name(stage, queue.suffix),
        "VisibilityTimeout": queue.visibility_timeout,
        "MessageRetentionPeriod": queue.retention_seconds,
        "SqsManagedSseEnabled": True,
        "Tags": _tags(stage),
    }
    if queue.dead_letter:
        properties["RedrivePolicy"] = {
            "deadLetterTargetArn": {"Fn::GetAtt": [logical_id(queue.dead_letter, "Queue"), "Arn"]},
            "maxReceiveCount": queue.max_receive_count,
        }
    return {"Type": "AWS::SQS::Queue", "Properties": properties}


def _deploy_state_bucket(stage: str) -> dict[str, Any]:
    """Where `make deploy` keeps the stage's deploy state (chalice's deployed/<stage>.json) and
    templates too large to send inline. Versioned: every deploy's state can be read back.
    CloudFormation names it (bucket names are global), the stack output says which it is."""
    return {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "VersioningConfiguration": {"Status": "Enabled"},
            **_PRIVATE_BUCKET,
            "LifecycleConfiguration": {
                "Rules": [
                    {
                        "Id": "old-states",
                        "Status": "Enabled",
                        "NoncurrentVersionExpiration": {"NoncurrentDays": 365},
                    }
                ]
            },
            "Tags": _tags(stage),
        },
    }


def _output(value: Any, description: str) -> dict[str, Any]:
    return {"Value": value, "Description": description}


def render(stage: str, protected: bool | None = None) -> dict[str, Any]:
    """The stage's infrastructure template as a JSON-ready dict (prod is protected)."""
    protected = stage in PROTECTED_STAGES if protected is None else protected
    template: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{APP_NAME} {stage}: tables, catch-up audio bucket and queues "
        "(rendered from chalicelib/aws/resources.py by `python -m infra template`)",
        "Parameters": {
            "AllowedOrigins": {
                "Type": "CommaDelimitedList",
                "Description": "Origins allowed to PUT catch-up audio with a presigned URL "
                "(the extension's chrome-extension://<id>, as in ALLOWED_ORIGINS)",
            }
        },
        "Resources": {},
        "Outputs": {},
    }
    body, outputs = template["Resources"], template["Outputs"]
    for table in resources.TABLES:
        table_id = logical_id(table.suffix, "Table")
        body[table_id] = _table(stage, table, protected)
        outputs[table_id + "Name"] = _output({"Ref": table_id}, table.purpose)
        outputs[table_id + "Arn"] = _output({"Fn::GetAtt": [table_id, "Arn"]}, table.purpose)
    for bucket in resources.BUCKETS:
        bucket_id = logical_id(bucket.suffix, "Bucket")
        body[bucket_id] = _bucket(stage, bucket)
        body[bucket_id + "Policy"] = _bucket_policy(bucket)
        outputs[bucket_id + "Name"] = _output({"Ref": bucket_id}, "catch-up audio uploads")
        outputs[bucket_id + "Arn"] = _output({"Fn::GetAtt": [bucket_id, "Arn"]}, "catch-up audio uploads")
    for queue in resources.QUEUES:
        queue_id = logical_id(queue.suffix, "Queue")
        body[queue_id] = _queue(stage, queue)
        outputs[queue_id + "Name"] = _output({"Fn::GetAtt": [queue_id, "QueueName"]}, queue.suffix)
        outputs[queue_id + "Url"] = _output({"Ref": queue_id}, queue.suffix)
        outputs[queue_id + "Arn"] = _output({"Fn::GetAtt": [queue_id, "Arn"]}, queue.suffix)
    body[DEPLOY_STATE_BUCKET] = _deploy_state_bucket(stage)
    outputs[DEPLOY_STATE_BUCKET + "Name"] = _output({"Ref": DEPLOY_STATE_BUCKET}, "deploy state and large templates")
    return template


# --- index changes, one per table and stack update ---------------------------------------


def _indexes(properties: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {index["IndexName"]: index for index in properties.get("GlobalSecondaryIndexes", [])}


def _index_states(deployed: dict[str, Any], final: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """A table's index lists from `deployed` to `final`, one creation or deletion apart.

    Creations come first, so readers of a replaced index find the new one before the old one
    goes; an index changed under the same name (DynamoDB cannot change keys or projection in
    place) is deleted, then created.
    """
    current, wanted = _indexes(deployed), _indexes(final)
    states = []
    for name, index in wanted.items():
        if name not in current:
            current = {**current, name: index}
            states.append(list(current.values()))
    for name, index in wanted.items():
        if current[name] != index:
            current = {k: v for k, v in current.items() if k != name}
            states.append(list(current.values()))
            current = {**current, name: index}
            states.append(list(current.values()))
    for name in list(current):
        if name not in wanted:
            current = {k: v for k, v in current.items() if k != name}
            states.append(list(current.values()))
    return states


def _with_indexes(properties: dict[str, Any], indexes: list[dict[str, Any]],
                  types: dict[str, str]) -> dict[str, Any]:
    """A table's properties with `indexes`, and attribute definitions for exactly its keys."""
    properties = {k: v for k, v in properties.items() if k != "GlobalSecondaryIndexes"}
    if indexes:
        properties["GlobalSecondaryIndexes"] = indexes
    names = [key["AttributeName"] for schema in [properties["KeySchema"], *(i["KeySchema"] for i in indexes)]
             for key in schema]
    properties["AttributeDefinitions"] = [{"AttributeName": name, "AttributeType": types[name]}
                                          for name in dict.fromkeys(names)]
    return properties


def with_retired_indexes(deployed: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    """`final`, keeping the indexes `deployed` has and `final` no longer names.

    Deployed before the app and reduced to `final` after it, so the code still running
    during a deploy finds the indexes it queries.
    """
    kept = json.loads(json.dumps(final))
    for logical, resource in kept["Resources"].items():
        before = deployed.get("Resources", {}).get(logical)
        if resource["Type"] != "AWS::DynamoDB::Table" or not before:
            continue
        wanted = _indexes(resource["Properties"])
        retired = [i for name, i in _indexes(before["Properties"]).items() if name not in wanted]
        if retired:
            types = _attribute_types(before, resource)
            resource["Properties"] = _with_indexes(resource["Properties"], [*wanted.values(), *retired], types)
    return kept


def _attribute_types(*tables: dict[str, Any]) -> dict[str, str]:
    return {d["AttributeName"]: d["AttributeType"] for t in tables for d in t["Properties"]["AttributeDefinitions"]}


def index_steps(deployed: dict[str, Any], final: dict[str, Any]) -> list[dict[str, Any]]:
    """The templates to deploy before `final` when it changes a table's indexes more than once.

    CloudFormation creates or deletes at most one global secondary index per table in one
    stack update (more fails the update), and cannot change an index in place. Each step is
    `final` with every table's indexes one change further from `deployed` (tables move in
    parallel); the last change is `final` itself, so it is not among the steps.
    """
    tables = {}
    for logical, resource in final["Resources"].items():
        before = deployed.get("Resources", {}).get(logical)
        if resource["Type"] != "AWS::DynamoDB::Table" or not before:
            continue
        types = _attribute_types(before, resource)
        states = _index_states(before["Properties"], resource["Properties"])
        tables[logical] = [_with_indexes(resource["Properties"], state, types) for state in states[:-1]]
    steps = []
    for number in range(max((len(states) for states in tables.values()), default=0)):
        step = json.loads(json.dumps(final))
        for logical, states in tables.items():
            if number < len(states):
                step["Resources"][logical]["Properties"] = states[number]
        steps.append(step)
    return steps


def expected_names(stage: str) -> dict[str, str]:
    """{output key: physical name} the app derives, to compare with a deployed stack's outputs."""
    names = {logical_id(t.suffix, "Table") + "Name": resource_name(stage, t.suffix) for t in resources.TABLES}
    names.update({logical_id(b.suffix, "Bucket") + "Name": resource_name(stage, b.suffix) for b in resources.BUCKETS})
    names.update({logical_id(q.suffix, "Queue") + "Name": resource_name(stage, q.suffix) for q in resources.QUEUES})
    return names


# --- API Gateway responses ---------------------------------------------------------------
# Responses API Gateway produces itself, before or instead of calling our function: the
# authorizer's 401/403, an unknown path, throttling, a timeout. Without CORS headers the
# browser hides them from the extension as an opaque network error. A gateway response
# cannot echo the Origin conditionally, so it names one allowed origin statically (the
# first of ALLOWED_ORIGINS, the published extension); echoing any requester's Origin would
# be an unconditional `*` on authenticated routes, which our CORS rules exclude.

GATEWAY_RESPONSES: dict[str, dict[str, str]] = {
    # type: status, code, message (None status: keep API Gateway's own status)
    "UNAUTHORIZED": {"status": "401", "code": "unauthorized", "message": "Authentication required"},
    "ACCESS_DENIED": {"status": "403", "code": "forbidden", "message": "Forbidden"},
    "MISSING_AUTHENTICATION_TOKEN": {"status": "404", "code": "not_found", "message": "Not found"},
    "THROTTLED": {"status": "429", "code": "rate_limited", "message": "Too many requests"},
    "REQUEST_TOO_LARGE": {"status": "413", "code": "payload_too_large", "message": "Request body too large"},
    "DEFAULT_4XX": {"status": "", "code": "bad_request", "message": "Bad request"},
    "DEFAULT_5XX": {"status": "", "code": "service_unavailable", "message": "Service temporarily unavailable"},
}


def gateway_response_headers(origin: str) -> dict[str, str]:
    """Response headers in API Gateway's mapping syntax (static values are single-quoted)."""
    from chalicelib.web.middleware import CORS_EXPOSE_HEADERS

    return {
        "gatewayresponse.header.Access-Control-Allow-Origin": f"'{origin}'",
        "gatewayresponse.header.Access-Control-Expose-Headers": f"'{CORS_EXPOSE_HEADERS}'",
        "gatewayresponse.header.Vary": "'Origin'",
    }


def gateway_response_body(code: str, message: str) -> str:
    """Our error envelope; `X-Request-Id` is not available, the request id is in the body."""
    return json.dumps(
        {"error": message, "message": message, "code": code, "request_id": "$context.requestId"},
        separators=(",", ":"),
    )


def gateway_responses(origin: str) -> dict[str, dict[str, Any]]:
    """{response type: {statusCode?, responseParameters, responseTemplates}} (swagger shape)."""
    rendered = {}
    for response_type, spec in GATEWAY_RESPONSES.items():
        response: dict[str, Any] = {
            "responseParameters": gateway_response_headers(origin),
            "responseTemplates": {
                "application/json": gateway_response_body(spec["code"], spec["message"])
            },
        }
        if spec["status"]:
            response["statusCode"] = spec["status"]
        rendered[response_type] = response
    return rendered


def merge_gateway_responses(sam: dict[str, Any], origin: str) -> dict[str, Any]:
    """Add the gateway responses to `chalice package`'s SAM template, in the API definition.

    They go into the swagger (`x-amazon-apigateway-gateway-responses`) rather than as
    separate AWS::ApiGateway::GatewayResponse resources: SAM redeploys the stage whenever
    the definition changes, whereas a separate resource changes nothing until some later
    deployment of the stage happens to pick it up.
    """
    definition = sam["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    definition["x-amazon-apigateway-gateway-responses"] = gateway_responses(origin)
    return sam


def repair_api_handler_log_group(sam: dict[str, Any]) -> dict[str, Any]:
    """Point the API handler's log group at the function's real logical id.

    `chalice package` (1.34) names the API handler's log group after `${ApiHandler}` and
    then renames the function to `APIHandler`, leaving a reference CloudFormation rejects
    whenever log_retention_in_days is set. `chalice deploy` is not affected.
    """
    names = sam["Resources"]
    if "APIHandler" in names and "ApiHandler" not in names:
        for resource in names.values():
            if resource.get("Type") != "AWS::Logs::LogGroup":
                continue
            name = resource["Properties"].get("LogGroupName")
            if isinstance(name, dict) and name.get("Fn::Sub") == "/aws/lambda/${ApiHandler}":
                name["Fn::Sub"] = "/aws/lambda/${APIHandler}"
    return sam


def name_packaged_functions(sam: dict[str, Any], stage: str) -> dict[str, Any]:
    """Give the packaged functions the names `chalice deploy` gives them.

    Without it CloudFormation would name them `<stack>-<LogicalId>-<random>`: the policies'
    log permissions and the monitoring stack's alarms and metric filters address each
    function by its one name, whichever way the stage was deployed.
    """
    from chalice.utils import to_cfn_resource_name

    from infra.policy import FUNCTIONS, function_name

    logical_ids = {"APIHandler" if f == "api_handler" else to_cfn_resource_name(f): f for f in FUNCTIONS}
    for logical_id, resource in sam["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function" and logical_id in logical_ids:
            resource["Properties"]["FunctionName"] = function_name(stage, logical_ids[logical_id])
    return sam
