//! The PrometheusRules and the Grafana dashboard: well-formed, and on
//! metrics lifeboat exports only.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

use super::{name, one, render, repo, CRONJOB, DAEMON, DRILL};

/// The rules of a PrometheusRule.
fn rules(o: &Value) -> Vec<&Value> {
    o["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect()
}

/// Every `lifeboat_[a-z_]+` in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "lifeboat_";
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(PREFIX) {
        let tail = &rest[i + PREFIX.len()..];
        let n = tail
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        if n > 0 {
            names.insert(format!("{PREFIX}{}", &tail[..n]));
        }
        rest = &tail[n..];
    }
    names
}

/// A Prometheus duration: `5m`, `26h`, `1h30m`.
fn is_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        match ["ms", "y", "w", "d", "h", "m", "s"]
            .iter()
            .find(|u| rest.starts_with(**u))
        {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
    }
    true
}

pub(super) fn check_prometheus_rule(dir: &str, o: &Value) {
    let what = format!("{dir}: {}", name(o));
    assert_eq!(o["apiVersion"], "monitoring.coreos.com/v1", "{what}");
    let groups = o["spec"]["groups"].as_array().cloned().unwrap_or_default();
    assert!(!groups.is_empty(), "{what}: no spec.groups");
    let mut alerts = BTreeSet::new();
    for g in &groups {
        assert!(
            g["name"].as_str().is_some_and(|n| !n.is_empty()),
            "{what}: a group without a name"
        );
        let rules = g["rules"].as_array().cloned().unwrap_or_default();
        assert!(
            !rules.is_empty(),
            "{what}: group {} has no rules",
            g["name"]
        );
        for rule in &rules {
            let alert = rule["alert"]
                .as_str()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| panic!("{what}: a rule without `alert`: {rule}"));
            assert!(alerts.insert(alert.to_string()), "{what}: {alert} twice");
            for key in rule.as_object().unwrap().keys() {
                assert!(
                    [
                        "alert",
                        "expr",
                        "for",
                        "keep_firing_for",
                        "labels",
                        "annotations"
                    ]
                    .contains(&key.as_str()),
                    "{what}: {alert} has an unknown field `{key}`"
                );
            }
            assert!(
                rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{what}: {alert} has no expr"
            );
            if let Some(f) = rule.get("for") {
                assert!(
                    f.as_str().is_some_and(is_duration),
                    "{what}: {alert}: `for: {f}` is not a Prometheus duration"
                );
            }
            let severity = rule["labels"]["severity"].as_str().unwrap_or("");
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{what}: {alert}: labels.severity is {:?}",
                rule["labels"]["severity"]
            );
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.trim().is_empty()),
                    "{what}: {alert} has no annotations.{key}"
                );
            }
            let runbook = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
            assert!(
                runbook.starts_with(
                    "https://github.com/lifeboat-dev/lifeboat/blob/main/docs/RUNBOOK.md#"
                ),
                "{what}: {alert}: runbook_url {runbook:?} does not point into docs/RUNBOOK.md"
            );
        }
    }
}

/// Alerts and dashboard use only metrics lifeboat exports; the dashboard's
/// ConfigMap holds deploy/grafana-dashboard.json; deploy/README.md lists
/// every alert.
// Stays long: alerts, dashboard, its ConfigMap and the README checked against one list of metrics.
#[test]
fn deploy_alerts_and_dashboard_use_only_exported_metrics() {
    // The lib's own list: what the daemon can export.
    let known: BTreeSet<&str> = lifeboat::metrics::names().collect();
    let daemon = render(DAEMON);
    let cron = render(CRONJOB);
    let drill = render(DRILL);
    let mut alerts = Vec::new();
    for r in [&daemon, &cron, &drill] {
        for o in r.objects.iter().filter(|o| o["kind"] == "PrometheusRule") {
            for rule in rules(o) {
                let alert = rule["alert"].as_str().unwrap_or("?").to_string();
                let used = metric_names(rule["expr"].as_str().unwrap_or(""));
                for m in &used {
                    assert!(
                        known.contains(m.as_str()),
                        "{}: alert {alert} uses {m}, which lifeboat does not export",
                        r.dir
                    );
                }
                // The daemon's alerts are on lifeboat's own metrics, except
                // the one for a daemon that is not scraped at all.
                if r.dir == DAEMON && alert != "LifeboatDaemonDown" {
                    assert!(
                        !used.is_empty(),
                        "{}: alert {alert} uses no lifeboat metric",
                        r.dir
                    );
                }
                alerts.push(alert);
            }
        }
    }
    assert!(alerts.len() >= 10, "{alerts:?}");

    let path = repo().join("deploy/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let in_dashboard = metric_names(&text);
    for m in &in_dashboard {
        assert!(
            known.contains(m.as_str()),
            "deploy/grafana-dashboard.json uses {m}, which lifeboat does not export"
        );
    }
    assert!(
        in_dashboard.len() >= 15,
        "the dashboard charts lifeboat's metrics: {in_dashboard:?}"
    );
    let dashboard: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("deploy/grafana-dashboard.json is not JSON: {e}"));
    assert_eq!(dashboard["uid"], "lifeboat");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("the dashboard has no variable ${name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    assert!(
        variable("policy")["definition"].as_str().is_some_and(
            |q| q.contains("label_values(lifeboat_backup_last_success_timestamp_seconds")
        ),
        "$policy comes from the backups' label"
    );
    let mut panels: Vec<Value> = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let mut charted = 0;
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner.iter().cloned());
        }
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in &targets {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {}: queries go to the chosen data source",
                p["title"]
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "panel {}: a query without expr",
                p["title"]
            );
        }
        charted += 1;
    }
    assert!(charted >= 15, "{charted} panels");

    // The ConfigMap for Grafana's sidecar holds the same dashboard.
    let cm: ConfigMap = one(&daemon, "ConfigMap", "lifeboat-dashboard");
    assert_eq!(
        cm.metadata
            .labels
            .unwrap_or_default()
            .get("grafana_dashboard")
            .map(String::as_str),
        Some("1"),
        "the sidecar finds dashboards by label grafana_dashboard=1"
    );
    let held = cm
        .data
        .unwrap_or_default()
        .get("lifeboat.json")
        .cloned()
        .expect("ConfigMap lifeboat-dashboard: lifeboat.json");
    let held: Value = serde_json::from_str(&held)
        .unwrap_or_else(|e| panic!("ConfigMap lifeboat-dashboard: lifeboat.json is not JSON: {e}"));
    assert!(
        held == dashboard,
        "deploy/dashboard.yaml and deploy/grafana-dashboard.json differ; regenerate the ConfigMap (the command is in deploy/dashboard.yaml)"
    );

    // The README's alert table is complete.
    let readme = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    for alert in &alerts {
        assert!(
            readme.contains(alert.as_str()),
            "deploy/README.md does not list the alert {alert}"
        );
    }
}
