"""The stage's monitoring stack: alarms, an SNS topic, metric filters, a budget, a dashboard.

`transcription-backend-<stage>-monitoring` is deployed by `make deploy` after the app
(its metric filters need the functions' log groups, which `chalice deploy` creates), and
written as build/<stage>/monitoring.json by `make package`. Every alarm notifies one SNS
topic; its e-mail subscriber is `alarm_email` in infra/stages.json (or ALARM_EMAIL).

What is watched, and why each threshold (docs/operations.md repeats this for on-call):

- the catch-up dead-letter queue holds anything: a job's message ran out of deliveries;
- the catch-up queue's oldest message is older than CATCHUP_OLDEST_AGE_SECONDS: workers
  are not keeping up (or are throttled, or failing);
- each function's Errors and Throttles (the worker's errors include its deliberate retries,
  so it alarms on a sustained rate, not on one);
- API Gateway 5XX responses and p99 latency of the stage;
- DynamoDB read/write throttle events of every table;
- the hourly cleanup did not log `cleanup.finished` for two hours;
- operator events in the JSON logs, counted by metric filters: `ledger.invariant_broken`,
  `cleanup.invariant_breach`, `provider.credentials_rejected`, `stripe.webhook_rejected`
  (a rotated webhook secret not deployed), and any ERROR line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib.aws import resources
from chalicelib.core.settings import APP_NAME, resource_name
from infra.policy import FUNCTIONS as FUNCTION_ENTRIES
from infra.policy import function_name

FUNCTIONS = tuple(FUNCTION_ENTRIES)
API_STAGE = "api"
CATCHUP_OLDEST_AGE_SECONDS = 900
API_5XX_PER_5_MINUTES = 5
API_P99_LATENCY_MS = 10_000
CLEANUP_PERIOD_SECONDS = 3600


@dataclass(frozen=True)
class OperatorEvent:
    """A log line (by its `message`, or a JSON filter pattern) counted into a metric."""

    metric: str
    pattern: str
    threshold: int
    period: int
    description: str


OPERATOR_EVENTS = (
    OperatorEvent("LedgerInvariantBroken", '{ $.message = "ledger.invariant_broken" }', 1, 300,
                  "a user's balance does not equal their ledger records"),
    OperatorEvent("CleanupInvariantBreach", '{ $.message = "cleanup.invariant_breach" }', 1, 300,
                  "the hourly cleanup found a balance that disagrees with the ledger"),
    OperatorEvent("ProviderCredentialsRejected", '{ $.message = "provider.credentials_rejected" }', 1, 300,
                  "a provider refused our API key: that feature answers 503"),
    OperatorEvent("StripeWebhookRejected", '{ $.message = "stripe.webhook_rejected" }', 5, 900,
                  "Stripe webhooks fail signature checks: is STRIPE_WEBHOOK_SECRET current?"),
    OperatorEvent("ErrorLogLines", '{ $.level = "ERROR" }', 1, 300,
                  "some function logged an ERROR line"),
    OperatorEvent("CleanupFinished", '{ $.message = "cleanup.finished" }', 0, CLEANUP_PERIOD_SECONDS,
                  "hourly cleanup runs (alarm: fewer than one per hour for two hours)"),
)
# Errors that page at once, per function; the worker raises on purpose to retry a job later.
ERROR_THRESHOLDS = {"api_handler": 1, "jwt_auth": 1, "cleanup": 1, "catchup_worker": 5}


def stack_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-monitoring"


def log_group(stage: str, function: str) -> str:
    return f"/aws/lambda/{function_name(stage, function)}"


def namespace(stage: str) -> str:
    return f"{APP_NAME}/{stage}"


def _id(text: str) -> str:
    return "".join(part.capitalize() for part in text.replace("-", "_").split("_"))


def _alarm(stage: str, name: str, description: str, **properties: Any) -> dict[str, Any]:
    alarm = {
        "AlarmName": f"{APP_NAME}-{stage}-{name}",
        "AlarmDescription": description,
        "ActionsEnabled": True,
        "AlarmActions": [{"Ref": "AlarmTopic"}],
        "OKActions": [{"Ref": "AlarmTopic"}],
        "TreatMissingData": "notBreaching",
        "EvaluationPeriods": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        **properties,
    }
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": alarm}


def _metric_alarm(stage: str, name: str, description: str, namespace_: str, metric: str,
                  dimensions: dict[str, str], statistic: str, threshold: float, period: int = 300,
                  **extra: Any) -> dict[str, Any]:
    return _alarm(
        stage, name, description,
        Namespace=namespace_, MetricName=metric,
        Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
        Period=period, Threshold=threshold,
        **({"ExtendedStatistic": statistic} if statistic.startswith("p") else {"Statistic": statistic}),
        **extra,
    )


def alarms(stage: str, names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{logical id: AWS::CloudWatch::Alarm} for the stage ({suffix: physical name} of its resources)."""
    body: dict[str, dict[str, Any]] = {}
    catchup, dlq = names["catchup"], names["catchup-dlq"]
    body["DeadLetterQueueAlarm"] = _metric_alarm(
        stage, "catchup-dlq-not-empty", "A catch-up job's message is in the dead-letter queue "
        "(python -m infra dlq --stage %s)" % stage, "AWS/SQS", "ApproximateNumberOfMessagesVisible",
        {"QueueName": dlq}, "Maximum", 1)
    body["CatchupOldestMessageAlarm"] = _metric_alarm(
        stage, "catchup-queue-backlog", f"The oldest catch-up message waits over {CATCHUP_OLDEST_AGE_SECONDS} s",
        "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": catchup}, "Maximum",
        CATCHUP_OLDEST_AGE_SECONDS, EvaluationPeriods=2, DatapointsToAlarm=2)
    for function in FUNCTIONS:
        dimensions = {"FunctionName": function_name(stage, function)}
        body[f"{_id(function)}ErrorsAlarm"] = _metric_alarm(
            stage, f"{function}-errors", f"{function} invocations failed", "AWS/Lambda", "Errors",
            dimensions, "Sum", ERROR_THRESHOLDS[function], period=900 if function == "catchup_worker" else 300)
        body[f"{_id(function)}ThrottlesAlarm"] = _metric_alarm(
            stage, f"{function}-throttles", f"{function} invocations were throttled", "AWS/Lambda",
            "Throttles", dimensions, "Sum", 1)
    api = {"ApiName": APP_NAME, "Stage": API_STAGE}
    body["Api5xxAlarm"] = _metric_alarm(
        stage, "api-5xx", f"{API_5XX_PER_5_MINUTES}+ API 5XX responses in 5 minutes", "AWS/ApiGateway",
        "5XXError", api, "Sum", API_5XX_PER_5_MINUTES)
    body["ApiLatencyAlarm"] = _metric_alarm(
        stage, "api-p99-latency", f"API p99 latency over {API_P99_LATENCY_MS} ms for 15 minutes",
        "AWS/ApiGateway", "Latency", api, "p99", API_P99_LATENCY_MS, EvaluationPeriods=3, DatapointsToAlarm=3)
    for suffix, table in ((t.suffix, names[t.suffix]) for t in resources.TABLES):
        body[f"{_id(suffix)}TableThrottleAlarm"] = _alarm(
            stage, f"{suffix}-table-throttled", f"DynamoDB throttled requests on {table}",
            Threshold=1,
            Metrics=[
                {"Id": "reads", "ReturnData": False, "MetricStat": {"Period": 300, "Stat": "Sum", "Metric": {
                    "Namespace": "AWS/DynamoDB", "MetricName": "ReadThrottleEvents",
                    "Dimensions": [{"Name": "TableName", "Value": table}]}}},
                {"Id": "writes", "ReturnData": False, "MetricStat": {"Period": 300, "Stat": "Sum", "Metric": {
                    "Namespace": "AWS/DynamoDB", "MetricName": "WriteThrottleEvents",
                    "Dimensions": [{"Name": "TableName", "Value": table}]}}},
                {"Id": "throttled", "Expression": "reads + writes", "Label": "throttle events", "ReturnData": True},
            ],
        )
    for event in OPERATOR_EVENTS:
        if event.metric == "CleanupFinished":
            body["CleanupDidNotRunAlarm"] = _metric_alarm(
                stage, "cleanup-did-not-run", "The hourly cleanup has not finished a run for two hours",
                namespace(stage), event.metric, {}, "Sum", 1, period=event.period,
                ComparisonOperator="LessThanThreshold", EvaluationPeriods=2, DatapointsToAlarm=2,
                TreatMissingData="breaching")
            continue
        body[f"{event.metric}Alarm"] = _metric_alarm(
            stage, _kebab(event.metric), event.description, namespace(stage), event.metric, {}, "Sum",
            event.threshold, period=event.period)
    return body


def _kebab(camel: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in camel).lstrip("-")


def metric_filters(stage: str) -> dict[str, dict[str, Any]]:
    """Every operator event counted from every function's log group into one metric."""
    body = {}
    for event in OPERATOR_EVENTS:
        functions = ("cleanup",) if event.metric == "CleanupFinished" else FUNCTIONS
        for function in functions:
            body[f"{event.metric}{_id(function)}Filter"] = {
                "Type": "AWS::Logs::MetricFilter",
                "Properties": {
                    "LogGroupName": log_group(stage, function),
                    "FilterPattern": event.pattern,
                    "MetricTransformations": [
                        {"MetricNamespace": namespace(stage), "MetricName": event.metric, "MetricValue": "1"}
                    ],
                },
            }
    return body


def dashboard(stage: str, names: dict[str, str]) -> dict[str, Any]:
    def widget(title: str, metrics: list[list[Any]], x: int, y: int, stat: str = "Sum") -> dict[str, Any]:
        return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": {
            "title": title, "metrics": metrics, "stat": stat, "period": 300, "region": "${AWS::Region}",
            "view": "timeSeries"}}

    lambda_metrics = [["AWS/Lambda", m, "FunctionName", function_name(stage, f)]
                      for f in FUNCTIONS for m in ("Errors", "Throttles")]
    widgets = [
        widget("API requests and errors", [["AWS/ApiGateway", m, "ApiName", APP_NAME, "Stage", API_STAGE]
                                           for m in ("Count", "4XXError", "5XXError")], 0, 0),
        widget("API latency p99 (ms)", [["AWS/ApiGateway", "Latency", "ApiName", APP_NAME, "Stage", API_STAGE]],
               12, 0, stat="p99"),
        widget("Lambda errors and throttles", lambda_metrics, 0, 6),
        widget("Lambda duration p99 (ms)", [["AWS/Lambda", "Duration", "FunctionName", function_name(stage, f)]
                                            for f in FUNCTIONS], 12, 6, stat="p99"),
        widget("Catch-up queue", [
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", names["catchup"]],
            ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", names["catchup"]],
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", names["catchup-dlq"]],
        ], 0, 12, stat="Maximum"),
        widget("Operator events", [[namespace(stage), e.metric] for e in OPERATOR_EVENTS], 12, 12),
    ]
    return {"Type": "AWS::CloudWatch::Dashboard", "Properties": {
        "DashboardName": f"{APP_NAME}-{stage}",
        "DashboardBody": {"Fn::Sub": json.dumps({"widgets": widgets}, separators=(",", ":"))},
    }}


def render(stage: str, names: dict[str, str] | None = None) -> dict[str, Any]:
    """The monitoring template; `names` ({suffix: physical name}) default to the derived ones."""
    names = names or {suffix: resource_name(stage, suffix) for suffix in resources.RESOURCE_ENV_VARS.values()}
    body: dict[str, Any] = {
        "AlarmTopic": {"Type": "AWS::SNS::Topic", "Properties": {
            "TopicName": f"{APP_NAME}-{stage}-alarms", "Tags": [{"Key": "app", "Value": APP_NAME},
                                                               {"Key": "stage", "Value": stage}]}},
        "AlarmTopicPolicy": {"Type": "AWS::SNS::TopicPolicy", "Properties": {
            "Topics": [{"Ref": "AlarmTopic"}],
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Sid": "BudgetsAndAlarmsPublish", "Effect": "Allow",
                "Principal": {"Service": ["budgets.amazonaws.com", "cloudwatch.amazonaws.com"]},
                "Action": "sns:Publish", "Resource": {"Ref": "AlarmTopic"},
                "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
            }]},
        }},
        "AlarmEmailSubscription": {"Type": "AWS::SNS::Subscription", "Condition": "HasAlarmEmail", "Properties": {
            "TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"}}},
        "MonthlyBudget": {"Type": "AWS::Budgets::Budget", "Properties": {
            "Budget": {"BudgetName": f"{APP_NAME}-{stage}-monthly", "BudgetType": "COST", "TimeUnit": "MONTHLY",
                       "BudgetLimit": {"Amount": {"Ref": "MonthlyBudgetUsd"}, "Unit": "USD"}},
            "NotificationsWithSubscribers": [
                {"Notification": {"NotificationType": kind, "ComparisonOperator": "GREATER_THAN",
                                  "Threshold": threshold, "ThresholdType": "PERCENTAGE"},
                 "Subscribers": [{"SubscriptionType": "SNS", "Address": {"Ref": "AlarmTopic"}}]}
                for kind, threshold in (("ACTUAL", 80), ("FORECASTED", 100))
            ],
        }, "DependsOn": "AlarmTopicPolicy"},
        "Dashboard": dashboard(stage, names),
        **metric_filters(stage),
        **alarms(stage, names),
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{APP_NAME} {stage}: alarms, SNS topic, metric filters, budget and dashboard "
        "(rendered by infra/monitoring.py; deployed after the app, whose log groups it reads)",
        "Parameters": {
            "AlarmEmail": {"Type": "String", "Default": "", "Description": "who receives the alarms (empty: none)"},
            "MonthlyBudgetUsd": {"Type": "Number", "MinValue": 1, "Description": "monthly cost budget (USD)"},
        },
        "Conditions": {"HasAlarmEmail": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}},
        "Resources": body,
        "Outputs": {"AlarmTopicArn": {"Value": {"Ref": "AlarmTopic"}, "Description": "every alarm notifies it"}},
    }


def parameters(alarm_email: str, monthly_budget_usd: int) -> list[dict[str, str]]:
    return [{"ParameterKey": "AlarmEmail", "ParameterValue": alarm_email},
            {"ParameterKey": "MonthlyBudgetUsd", "ParameterValue": str(monthly_budget_usd)}]
