//! Policy parsing and validation, with the file and line each error names.

use super::*;

const R: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, Path::new("/etc/lifeboat/app.yaml"))
}

fn minimal() -> String {
    format!(
        "name: app\nrepository:\n  url: ./backups\nencryption:\n  recipients: [{R}]\nsources:\n  - name: main-db\n    postgres:\n      host: db\n"
    )
}

fn with_kube(block: &str) -> String {
    format!(
        "name: app\nrepository:\n  url: ./backups\nencryption:\n  recipients: [{R}]\nsources:\n  - name: cluster\n    kubernetes:\n{block}"
    )
}

#[test]
fn kubernetes_sources_say_which_namespaces() {
    let p = parse(&with_kube(
        "      kubeconfig: kube/config\n      namespaces: [prod]\n      cluster_resources: [ClusterRole]\n",
    ))
    .unwrap();
    let k = p.sources[0].kubernetes.as_ref().unwrap();
    assert_eq!(
        k.namespaces,
        Some(crate::kinds::kubernetes::config::Namespaces::List(vec![
            "prod".into()
        ]))
    );
    assert_eq!(
        k.kubeconfig.as_deref(),
        Some(Path::new("/etc/lifeboat/kube/config"))
    );
    let p = parse(&with_kube(
        "      namespaces: all\n      exclude_namespaces: [ops]\n",
    ))
    .unwrap();
    let k = p.sources[0].kubernetes.as_ref().unwrap();
    assert_eq!(k.excluded_namespaces(), vec!["ops".to_string()]);
    let p = parse(&with_kube("      namespace_selector: team=payments\n")).unwrap();
    assert_eq!(
        p.sources[0]
            .kubernetes
            .as_ref()
            .unwrap()
            .excluded_namespaces(),
        ["kube-system", "kube-public", "kube-node-lease"]
    );
    for (block, message) in [
        ("      context: prod\n", "say which namespaces"),
        (
            "      namespaces: [a]\n      namespace_selector: x=y\n",
            "not both",
        ),
        (
            "      namespaces: [a]\n      exclude_namespaces: [b]\n",
            "applies to `namespaces: all`",
        ),
        (
            "      namespace_selector: ' '\n",
            "namespace_selector is empty",
        ),
        ("      namespaces: some\n", "namespaces: 'some' is neither"),
        ("      namespaces: []\n", "name at least one namespace"),
        (
            "      namespaces: all\n      labels: x\n",
            "unknown field `labels`",
        ),
    ] {
        let e = parse(&with_kube(block)).unwrap_err().to_string();
        assert!(e.contains(message), "{block:?}: {e}");
    }
    let both = with_kube("      namespaces: all\n").replace(
        "    kubernetes:",
        "    postgres:\n      host: db\n    kubernetes:",
    );
    let e = parse(&both).unwrap_err().to_string();
    assert!(
        e.contains("both a `postgres:` and a `kubernetes:` block"),
        "{e}"
    );
}

#[test]
fn minimal_policy_gets_defaults_and_absolute_paths() {
    let p = parse(&minimal()).unwrap();
    assert_eq!(p.name.as_str(), "app");
    assert_eq!(
        p.repository.url,
        RepositoryUrl::Local {
            path: "/etc/lifeboat/./backups".into()
        }
    );
    assert_eq!(p.compression.algorithm, Algorithm::Zstd);
    assert_eq!(p.compression.effective_level(), 1);
    assert_eq!(p.repository.part_size.0, 8 << 20);
    let pg = p.sources[0].postgres.as_ref().unwrap();
    assert_eq!((pg.port, pg.user.as_str()), (5432, "postgres"));
    assert_eq!(pg.databases, Databases::All);
}

/// Each broken policy and the (line, message fragment) its error must carry.
#[test]
fn syntax_errors_name_line_and_column() {
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "unknown key",
            "  colour: blue\n",
            4,
            "unknown field `colour`",
        ),
        ("wrong type", "  part_size: [1]\n", 4, "part_size"),
        ("bad size", "  part_size: 8 parsecs\n", 4, "unknown unit"),
        ("bad url", "  endpoint: x\n", 0, ""),
    ];
    for (what, extra, line, fragment) in cases {
        if *line == 0 {
            continue;
        }
        let text = minimal().replacen(
            "  url: ./backups\n",
            &format!("  url: ./backups\n{extra}"),
            1,
        );
        match parse(&text) {
            Err(PolicyError::Syntax {
                line: l, message, ..
            }) => {
                assert_eq!(l, *line, "{what}: {message}");
                assert!(message.contains(fragment), "{what}: {message}");
            }
            other => panic!("{what}: expected a syntax error, got {other:?}"),
        }
    }
}

#[test]
fn value_errors_carry_positions() {
    let text = minimal().replace(R, "age1notakey");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.starts_with("/etc/lifeboat/app.yaml:5:"), "{err}");
    assert!(err.contains("not an age X25519 recipient"), "{err}");

    let text = minimal() + "schedule: \"61 * * * *\"\n";
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains(":10:"), "{err}");
    assert!(err.contains("schedule '61 * * * *'"), "{err}");

    let text = minimal().replace("./backups", "ftp://x/y");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains(":3:") && err.contains("unsupported repository URL"),
        "{err}"
    );
}

#[test]
fn cross_field_errors_name_the_field() {
    let cases = [
        (
            minimal().replace(
                "  url: ./backups\n",
                "  url: ./backups\n  endpoint: http://x\n",
            ),
            "repository.endpoint applies to s3://",
        ),
        (
            minimal() + "retention:\n  keep_last: 0\n",
            "retention keeps nothing",
        ),
        (
            minimal().replace(&format!("  recipients: [{R}]\n"), "  recipients: []\n"),
            "no recipients",
        ),
        (
            minimal().replace("    postgres:\n      host: db\n", ""),
            "source 'main-db' has no kind",
        ),
        (
            minimal() + "compression: { algorithm: gzip, level: 12 }\n",
            "out of range 1-9",
        ),
        (
            minimal().replace(
                "url: ./backups",
                "url: s3://bucket/p\n  access_key_id: {env: A}",
            ),
            "give both",
        ),
    ];
    for (text, fragment) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(fragment), "expected '{fragment}' in: {err}");
    }
}

#[test]
fn schedules_use_cronjob_syntax() {
    for ok in [
        "15 2 * * *",
        "*/5 * * * *",
        "0 3 * * 0",
        "0 3 * * 1-5",
        "0 0 1 * *",
        "@daily",
        "@hourly",
        "0 3 * * 7",
    ] {
        Schedule::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "* * * *",
        "0 0 0 * * *",
        "0 25 * * *",
        "0 0 * * 8",
        "nonsense",
    ] {
        assert!(Schedule::parse(bad).is_err(), "{bad} should be refused");
    }
    // Sunday is 0 in CronJob syntax: 2026-11-22 is a Sunday.
    let s = Schedule::parse("0 3 * * 0").unwrap();
    let after = chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let next = s.next_after(&after).unwrap();
    assert_eq!(next.to_rfc3339(), "2026-11-22T03:00:00+00:00");
}

/// In a time zone with daylight saving time, slots stay at the same
/// wall-clock time: a slot inside the spring-forward gap (02:30 on
/// 2026-03-29 in Berlin) does not exist that day, and one in the
/// repeated autumn hour (02:30 on 2026-10-25) fires once.
#[test]
fn schedules_follow_the_policy_time_zone_across_dst() {
    let text = |tz: &str| {
        format!(
            "name: app\nrepository:\n  url: ./b\nencryption:\n  recipients: [{R}]\nschedule: \"30 2 * * *\"\n{tz}sources:\n  - name: db\n    postgres:\n      host: db\n"
        )
    };
    let p = parse(&text("timezone: Europe/Berlin\n")).unwrap();
    let fire = |from: &str, n: usize| -> Vec<String> {
        let mut t = chrono::DateTime::parse_from_rfc3339(from)
            .unwrap()
            .with_timezone(&chrono::Utc);
        (0..n)
            .map(|_| {
                t = p.next_run(t).unwrap();
                t.format("%Y-%m-%dT%H:%MZ").to_string()
            })
            .collect()
    };
    // Spring: 02:30 CET is 01:30Z; on the 29th 02:30 does not exist;
    // afterwards 02:30 CEST is 00:30Z.
    assert_eq!(
        fire("2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:30Z",
            "2026-03-30T00:30Z",
            "2026-03-31T00:30Z"
        ]
    );
    // Autumn: 02:30 happens twice on the 25th (CEST then CET); one run.
    assert_eq!(
        fire("2026-10-23T12:00:00Z", 3),
        [
            "2026-10-24T00:30Z",
            "2026-10-25T00:30Z",
            "2026-10-26T01:30Z"
        ]
    );
    // Without a time zone: UTC.
    let utc = parse(&text("")).unwrap();
    let after = chrono::DateTime::parse_from_rfc3339("2026-03-27T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(
        utc.next_run(after).unwrap().to_rfc3339(),
        "2026-03-28T02:30:00+00:00"
    );
    let e = parse(&text("timezone: Mars/Olympus\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'Mars/Olympus' is not an IANA time zone") && e.contains(":7:"),
        "{e}"
    );
}

/// A drill schedule is read in the policy's zone and needs an identity
/// (resolved beside the policy file); checks fit their source's kind.
#[test]
fn drill_schedules_need_an_identity_and_checks_fit_their_source() {
    let text = |drill: &str, source: &str| {
        format!(
            "name: app\nrepository:\n  url: ./b\nencryption:\n  recipients: [{R}]\ntimezone: Europe/Berlin\nsources:\n  - name: db\n{source}drill:\n{drill}"
        )
    };
    let pg = "    postgres:\n      host: db\n";
    let p = Policy::parse(
        &text(
            "  schedule: \"0 5 1 * *\"\n  identity: keys/drill.key\n",
            pg,
        ),
        Path::new("/etc/lifeboat/app.yaml"),
    )
    .unwrap();
    assert_eq!(
        p.drill.identity.as_deref(),
        Some(Path::new("/etc/lifeboat/keys/drill.key"))
    );
    let after = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:07:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    // 05:00 CET on December 1st is 04:00Z.
    assert_eq!(
        p.next_drill(after).unwrap().to_rfc3339(),
        "2026-12-01T04:00:00+00:00"
    );
    assert_eq!(p.next_run(after), None, "no backup schedule");

    let e = parse(&text("  schedule: \"0 5 1 * *\"\n", pg))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("drill.schedule is set but drill.identity is not"),
        "{e}"
    );
    let kube = "    kubernetes:\n      namespaces: [a]\n";
    parse(&text(
        "  schedule: \"0 5 1 * *\"\n  identity: k.key\n  checks:\n    - name: web\n      source: db\n      kind: Deployment\n      expect: \">= 1\"\n",
        kube,
    ))
    .unwrap();
    let e = parse(&text(
        "  checks:\n    - name: web\n      source: db\n      sql: SELECT 1\n      expect: 1\n",
        kube,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("is a Kubernetes source: its checks count objects"),
        "{e}"
    );
    let e = parse(&text(
        "  checks:\n    - name: web\n      source: db\n      kind: Deployment\n      sql: SELECT 1\n      expect: 1\n",
        pg,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`kind:` is for checks of Kubernetes sources"),
        "{e}"
    );
    let e = parse(&text("  schedule: \"0 5 32 * *\"\n  identity: k.key\n", pg))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":12:") && e.contains("schedule '0 5 32 * *'"),
        "the schedule's line: {e}"
    );
}

/// Expressions and their next fire times after Friday 2026-11-20
/// 10:07 UTC, as Kubernetes (robfig/cron) computes them.
#[test]
fn schedule_fire_times() {
    let after = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:07:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let table: &[(&str, &[&str])] = &[
        ("15 2 * * *", &["2026-11-21T02:15", "2026-11-22T02:15"]),
        ("*/15 * * * *", &["2026-11-20T10:15", "2026-11-20T10:30"]),
        (
            "0 */6 * * *",
            &["2026-11-20T12:00", "2026-11-20T18:00", "2026-11-21T00:00"],
        ),
        // Sunday is 0 and 7.
        ("0 3 * * 0", &["2026-11-22T03:00", "2026-11-29T03:00"]),
        ("0 3 * * 7", &["2026-11-22T03:00", "2026-11-29T03:00"]),
        // Weekdays; Saturday is 6.
        ("30 9 * * 1-5", &["2026-11-23T09:30", "2026-11-24T09:30"]),
        ("0 0 * * 6", &["2026-11-21T00:00", "2026-11-28T00:00"]),
        (
            "0 0 * * */2",
            &["2026-11-21T00:00", "2026-11-22T00:00", "2026-11-24T00:00"],
        ),
        ("0 0 * * MON,FRI", &["2026-11-23T00:00", "2026-11-27T00:00"]),
        // Day of month and day of week both restricted: either matches.
        (
            "0 0 1 * 1",
            &[
                "2026-11-23T00:00",
                "2026-11-30T00:00",
                "2026-12-01T00:00",
                "2026-12-07T00:00",
            ],
        ),
        // One of them a star (even with a step): both must match.
        ("0 0 */2 * 1", &["2026-11-23T00:00", "2026-12-07T00:00"]),
        (
            "0 0 31 * *",
            &["2026-12-31T00:00", "2027-01-31T00:00", "2027-03-31T00:00"],
        ),
        ("0 12 29 2 *", &["2028-02-29T12:00"]),
        ("@hourly", &["2026-11-20T11:00", "2026-11-20T12:00"]),
        ("@daily", &["2026-11-21T00:00"]),
        ("@weekly", &["2026-11-22T00:00", "2026-11-29T00:00"]),
        ("@monthly", &["2026-12-01T00:00", "2027-01-01T00:00"]),
        ("@yearly", &["2027-01-01T00:00"]),
    ];
    for (expr, expected) in table {
        let s = Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let mut t = after;
        for want in *expected {
            t = s
                .next_after(&t)
                .unwrap_or_else(|| panic!("{expr}: no next time"));
            assert_eq!(t.format("%Y-%m-%dT%H:%M").to_string(), *want, "{expr}");
        }
    }
}

#[test]
fn repository_urls() {
    assert_eq!(
        "s3://bucket-1/a/b/".parse::<RepositoryUrl>().unwrap(),
        RepositoryUrl::S3 {
            bucket: "bucket-1".into(),
            prefix: "a/b".into()
        }
    );
    assert!("s3://B/x".parse::<RepositoryUrl>().is_err());
    assert_eq!(
        "file:///var/b".parse::<RepositoryUrl>().unwrap(),
        RepositoryUrl::Local {
            path: "/var/b".into()
        }
    );
}

#[test]
fn a_private_key_given_as_recipient_is_never_echoed() {
    let key = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
    let err = parse(&minimal().replace(R, key)).unwrap_err().to_string();
    assert!(
        err.contains("private key") && !err.contains("QQQQ"),
        "{err}"
    );
}

#[test]
fn secrets_never_show_in_debug() {
    let s = Secret::new("hunter2".into());
    assert_eq!(format!("{s:?}"), "[redacted]");
}

#[test]
fn unknown_source_lists_known_ones() {
    let p = parse(&minimal()).unwrap();
    let err = p.source("nope").unwrap_err().to_string();
    assert!(
        err.contains("no source named 'nope'") && err.contains("main-db"),
        "{err}"
    );
}

#[test]
fn compression_threads_default_to_the_cores_and_are_bounded() {
    let p = parse(&minimal()).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let c = p.compression;
    assert_eq!(c.backup_threads(0), cores.clamp(1, MAX_AUTO_THREADS));
    assert_eq!(c.backup_threads(1), (cores - 1).clamp(1, MAX_AUTO_THREADS));
    assert_eq!(c.backup_threads(64), 1);
    let p = parse(&format!(
        "{}compression: {{ level: 3, threads: 4 }}\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(p.compression.backup_threads(1), 4);
    let e = parse(&format!("{}compression: {{ threads: 0 }}\n", minimal()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("compression.threads 0 is out of range 1-64"),
        "{e}"
    );
}
