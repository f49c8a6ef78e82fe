"""The monitoring stack: what it watches, that it lints, and that AWS's APIs accept every piece.

moto's CloudFormation creates the topic but skips alarms and metric filters, so each of
those is also put through the CloudWatch and CloudWatch Logs APIs of the embedded AWS with
exactly the template's properties (botocore validates every parameter's shape).
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import boto3
import pytest

from chalicelib.aws import resources
from chalicelib.core.logs import JsonFormatter
from infra import monitoring

pytestmark = pytest.mark.slow
STAGE = "prod"


@pytest.fixture(scope="module")
def rendered():
    return monitoring.render(STAGE)


def _of_type(template, kind):
    return {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == kind}


def _alarms(template):
    return {props["AlarmName"].removeprefix(f"transcription-backend-{STAGE}-"): props
            for props in _of_type(template, "AWS::CloudWatch::Alarm").values()}


def test_the_template_lints_and_fits_inline(rendered, tmp_path):
    path = tmp_path / "monitoring.json"
    path.write_text(json.dumps(rendered))
    cfn_lint = os.path.join(os.path.dirname(sys.executable), "cfn-lint")
    completed = subprocess.run([cfn_lint, str(path)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert len(json.dumps(rendered, separators=(",", ":"))) < 51_200


def test_every_alarm_notifies_the_topic(rendered):
    for name, alarm in _alarms(rendered).items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["OKActions"] == [{"Ref": "AlarmTopic"}], name
    assert _of_type(rendered, "AWS::SNS::Subscription")["AlarmEmailSubscription"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_the_queues_are_watched(rendered):
    alarms = _alarms(rendered)
    dlq = alarms["catchup-dlq-not-empty"]
    assert (dlq["MetricName"], dlq["Dimensions"], dlq["Threshold"]) == (
        "ApproximateNumberOfMessagesVisible", [{"Name": "QueueName", "Value": "transcription-backend-prod-catchup-dlq"}], 1)
    oldest = alarms["catchup-queue-backlog"]
    assert oldest["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert oldest["Dimensions"] == [{"Name": "QueueName", "Value": "transcription-backend-prod-catchup"}]


@pytest.mark.parametrize("function", monitoring.FUNCTIONS)
def test_every_function_has_error_and_throttle_alarms(rendered, function):
    alarms = _alarms(rendered)
    name = "transcription-backend-prod" + ("" if function == "api_handler" else f"-{function}")
    for metric in ("errors", "throttles"):
        alarm = alarms[f"{function}-{metric}"]
        assert alarm["Namespace"] == "AWS/Lambda" and alarm["MetricName"] == metric.capitalize()
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": name}]


def test_api_5xx_latency_and_every_table_are_watched(rendered):
    alarms = _alarms(rendered)
    assert alarms["api-5xx"]["MetricName"] == "5XXError"
    assert alarms["api-p99-latency"]["ExtendedStatistic"] == "p99"
    for table in resources.TABLES:
        metrics = alarms[f"{table.suffix}-table-throttled"]["Metrics"]
        watched = {m["MetricStat"]["Metric"]["MetricName"] for m in metrics if "MetricStat" in m}
        assert watched == {"ReadThrottleEvents", "WriteThrottleEvents"}
        dimensions = {json.dumps(m["MetricStat"]["Metric"]["Dimensions"]) for m in metrics if "MetricStat" in m}
        assert dimensions == {json.dumps([{"Name": "TableName", "Value": f"transcription-backend-prod-{table.suffix}"}])}


def test_a_cleanup_that_stops_running_alarms(rendered):
    alarm = _alarms(rendered)["cleanup-did-not-run"]
    assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["Threshold"] == 1
    assert alarm["TreatMissingData"] == "breaching"  # no data at all is the failure
    assert alarm["Period"] * alarm["EvaluationPeriods"] == 2 * 3600


def _matches(pattern: str, line: dict) -> bool:
    """CloudWatch's JSON filter `{ $.field = "value" }` against a parsed line."""
    match = re.fullmatch(r'\{ \$\.(\w+) = "([^"]+)" \}', pattern)
    assert match, pattern
    return line.get(match.group(1)) == match.group(2)


@pytest.mark.parametrize("event", ["ledger.invariant_broken", "cleanup.invariant_breach",
                                   "provider.credentials_rejected", "stripe.webhook_rejected", "cleanup.finished"])
def test_operator_events_as_the_code_logs_them_are_counted_from_every_log_group(rendered, event):
    level = logging.INFO if event == "cleanup.finished" else logging.ERROR
    record = logging.LogRecord("x", level, __file__, 1, event, None, None)
    line = json.loads(JsonFormatter().format(record))
    filters = _of_type(rendered, "AWS::Logs::MetricFilter").values()
    counting = [f for f in filters if _matches(f["FilterPattern"], line)]
    groups = {f["LogGroupName"] for f in counting}
    if event == "cleanup.finished":
        assert groups == {"/aws/lambda/transcription-backend-prod-cleanup"}
    else:
        assert groups == {monitoring.log_group(STAGE, f) for f in monitoring.FUNCTIONS}
    metric = {f["MetricTransformations"][0]["MetricName"] for f in counting if "level" not in f["FilterPattern"]}
    assert len(metric) == 1 and f"{metric.pop()}" in {a.get("MetricName") for a in _alarms(rendered).values()}


def test_the_budget_and_the_dashboard(rendered):
    budget = _of_type(rendered, "AWS::Budgets::Budget")["MonthlyBudget"]
    assert budget["Budget"]["BudgetLimit"] == {"Amount": {"Ref": "MonthlyBudgetUsd"}, "Unit": "USD"}
    assert {n["Notification"]["NotificationType"] for n in budget["NotificationsWithSubscribers"]} == {
        "ACTUAL", "FORECASTED"}
    (dashboard,) = _of_type(rendered, "AWS::CloudWatch::Dashboard").values()
    widgets = json.loads(dashboard["DashboardBody"]["Fn::Sub"])["widgets"]
    assert len(widgets) >= 6


def _resolve(value, topic_arn):
    if isinstance(value, dict) and value == {"Ref": "AlarmTopic"}:
        return topic_arn
    if isinstance(value, list):
        return [_resolve(v, topic_arn) for v in value]
    return value


def test_cloudwatch_and_logs_accept_every_alarm_and_filter(rendered, aws_endpoint):
    session = boto3.session.Session(region_name="us-east-1")
    cloudwatch, logs = session.client("cloudwatch"), session.client("logs")
    topic = session.client("sns").create_topic(Name="transcription-backend-prod-alarms")["TopicArn"]
    for alarm in _of_type(rendered, "AWS::CloudWatch::Alarm").values():
        cloudwatch.put_metric_alarm(**{k: _resolve(v, topic) for k, v in alarm.items()})
    created = cloudwatch.describe_alarms(AlarmNamePrefix="transcription-backend-prod-")
    assert len(created["MetricAlarms"]) + len(created.get("CompositeAlarms", [])) == len(_alarms(rendered))
    for function in monitoring.FUNCTIONS:
        try:
            logs.create_log_group(logGroupName=monitoring.log_group(STAGE, function))
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
    for filter_id, metric_filter in _of_type(rendered, "AWS::Logs::MetricFilter").items():
        logs.put_metric_filter(
            logGroupName=metric_filter["LogGroupName"], filterName=filter_id,
            filterPattern=metric_filter["FilterPattern"],
            metricTransformations=[{"metricNamespace": t["MetricNamespace"], "metricName": t["MetricName"],
                                    "metricValue": t["MetricValue"]} for t in metric_filter["MetricTransformations"]],
        )
    assert logs.describe_metric_filters(logGroupName=monitoring.log_group(STAGE, "cleanup"))["metricFilters"]
