"""The monitoring files under deploy/ use only metrics a replica exports.

Both files are parsed (the alert rules as YAML, the dashboard as JSON); every `pbft_*`
series named in a PromQL expression must appear in the metrics text of a real node, with
the labels its matchers name, and the `reason` / `type` label values it matches must be
ones the replica can produce.
"""

from __future__ import annotations

import json
import os
import re

import yaml
from prometheus_client.parser import text_string_to_metric_families

from pbft.cluster.keygen import generate_cluster
from pbft.cluster.launcher import free_ports
from pbft.node.clusterfile import load_cluster, load_identity
from pbft.node.node import build_node
from pbft.protocol.events import Reason
from pbft.protocol.messages import MsgType

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy")
SELECTOR = re.compile(r"\b(pbft_[a-z0-9_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
KNOWN_VALUES = {
    "reason": {r.value for r in Reason},
    "type": {t.name.lower().replace("_", "-") for t in MsgType} | {"unknown"},
}


def exported(tmp_path) -> dict[str, set[str]]:
    """Series name -> its label names, from the metrics text of a node with one sample in
    every labelled family (a rejected input, a frame, evidence, a transport event)."""
    path = generate_cluster(
        os.path.join(tmp_path, "d"), f=1, clients=["alice"], ports=free_ports(4), cluster_id="d",
    )
    config = load_cluster(path)
    node = build_node(config, load_identity(config, 0), 0)
    m = node.metrics
    m.on_rejected(1, Reason.BAD_SIGNATURE.value)
    m.on_received(b"\x00")
    m.on_sent(b"\x00")
    m.evidence.labels("equivocate").inc()
    node.transport.counters["dropped-queue-full"] += 1
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(m.text().decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def expressions(value, keys=("expr", "query", "definition")) -> list[str]:
    """Every string under one of `keys` anywhere in a parsed YAML/JSON document."""
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in keys and isinstance(v, str):
                out.append(v)
            else:
                out.extend(expressions(v, keys))
    elif isinstance(value, list):
        for v in value:
            out.extend(expressions(v, keys))
    return out


def check(exprs: list[str], series: dict[str, set[str]]) -> set[str]:
    """The pbft_* names the expressions use; assert each one and its matchers exist."""
    used = set()
    for expr in exprs:
        for name, matchers in SELECTOR.findall(expr):
            used.add(name)
            assert name in series, f"{name} (in {expr!r}) is not exported"
            for label, op, value in MATCHER.findall(matchers):
                if label in ("job", "instance"):  # added by Prometheus at scrape time
                    continue
                assert label in series[name], f"{name} has no label {label!r} (in {expr!r})"
                if label in KNOWN_VALUES and op in ("=", "=~"):
                    values = value.split("|") if op == "=~" else [value]
                    unknown = set(values) - KNOWN_VALUES[label]
                    assert not unknown, f"{name}: no {label} {sorted(unknown)} (in {expr!r})"
    return used


def test_alert_rules_use_exported_metrics(tmp_path):
    with open(os.path.join(DEPLOY, "prometheus-alerts.yml")) as fh:
        doc = yaml.safe_load(fh)
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert rules and all({"alert", "expr", "labels", "annotations"} <= set(r) for r in rules)
    assert len({r["alert"] for r in rules}) == len(rules)
    used = check([r["expr"] for r in rules], exported(str(tmp_path)))
    # The alerts the operator guide promises.
    for name in ("pbft_ready", "pbft_view_changes_total", "pbft_behind", "pbft_evidence_total",
                 "pbft_rejected_total", "pbft_storage_failures_total", "pbft_peer_connected"):
        assert name in used, name


def test_grafana_dashboard_uses_exported_metrics(tmp_path):
    with open(os.path.join(DEPLOY, "grafana-dashboard.json")) as fh:
        doc = json.load(fh)
    assert doc["panels"] and doc["uid"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(set(ids)) == len(ids)
    series = exported(str(tmp_path))
    used = check(expressions(doc), series)
    # Every metric family a replica exports is on the dashboard.
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in series}
    shown = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in used}
    assert families <= shown, sorted(families - shown)
