//! The drill's pure parts: which backups a source's drill picks from, how
//! inventory comparisons and user checks are judged and worded.

use std::path::Path;

use super::*;
use crate::policy::DrillCheck;
use crate::repository::ManifestKind as M;
use crate::restore::{InventoryCheck, Mismatch};

const R: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn policy() -> Policy {
    let text = format!(
        "name: app\nrepository:\n  url: ./backups\nencryption:\n  recipients: [{R}]\nsources:\n  - name: pg\n    postgres:\n      host: db\n  - name: my\n    mysql:\n      host: db\n  - name: k8s\n    kubernetes:\n      namespaces: [prod]\n"
    );
    Policy::parse(&text, Path::new("/etc/lifeboat/app.yaml")).unwrap()
}

#[test]
fn each_source_kind_drills_the_backups_it_can_restore() {
    let p = policy();
    let kind = |name: &str| p.source(name).unwrap().kind();
    assert_eq!(kinds(None, kind("pg")), [M::PostgresDump, M::PostgresBase]);
    assert_eq!(kinds(Some(Kind::Dump), kind("pg")), [M::PostgresDump]);
    assert_eq!(kinds(Some(Kind::Base), kind("pg")), [M::PostgresBase]);
    // --kind is about PostgreSQL backups; other sources have one kind.
    for k in [None, Some(Kind::Base)] {
        assert_eq!(kinds(k, kind("my")), [M::MysqlDump]);
        assert_eq!(kinds(k, kind("k8s")), [M::KubernetesExport]);
    }
}

fn inventory(mismatches: Vec<Mismatch>, lo: (i64, i64)) -> InventoryCheck {
    InventoryCheck {
        tables_checked: 3,
        rows_expected: 1200,
        large_objects_expected: lo.0,
        large_objects_found: lo.1,
        mismatches,
    }
}

#[test]
fn an_inventory_passes_only_when_every_count_matches_and_says_what_differs() {
    assert_eq!(
        inventory_detail(&inventory(vec![], (0, 0))),
        (true, "3 tables, 1200 rows: all match the backup".into())
    );
    assert_eq!(
        inventory_detail(&inventory(vec![], (2, 2))),
        (
            true,
            "3 tables, 1200 rows, 2 large objects: all match the backup".into()
        )
    );
    let (passed, detail) = inventory_detail(&inventory(
        vec![
            Mismatch {
                table: "public.orders".into(),
                expected: 1000,
                found: Some(999),
            },
            Mismatch {
                table: "public.gone".into(),
                expected: 5,
                found: None,
            },
        ],
        (2, 1),
    ));
    assert!(!passed);
    assert_eq!(
        detail,
        "public.orders: expected 1000 rows, found 999; public.gone: expected 5 rows, table missing; large objects: expected 2, found 1"
    );
    // Large objects alone fail it too.
    assert!(!inventory_detail(&inventory(vec![], (2, 0))).0);
}

fn check(expect: &str) -> DrillCheck {
    yaml_serde::from_str(&format!(
        "name: orders\nsource: pg\nsql: SELECT count(*) FROM orders\nexpect: '{expect}'\n"
    ))
    .unwrap()
}

#[test]
fn a_user_check_is_judged_on_the_first_value_and_says_what_it_got() {
    let v = |s: &str| Some(Some(s.to_string()));
    assert_eq!(
        judge(&check("> 0"), v("12")),
        (true, "12 (expected > 0)".into())
    );
    assert_eq!(
        judge(&check(">= 1000"), v("999")),
        (false, "got 999, expected >= 1000".into())
    );
    // No row and NULL fail a comparison, and are named as such.
    assert_eq!(
        judge(&check("> 0"), None),
        (false, "got no row, expected > 0".into())
    );
    assert_eq!(
        judge(&check("== 0"), Some(None)),
        (false, "got NULL, expected == 0".into())
    );
    // Text only with == and !=; a number expected of text is an error.
    assert!(judge(&check("== ok"), v("ok")).0);
    let (passed, detail) = judge(&check("> 0"), v("many"));
    assert!(!passed);
    assert!(detail.contains("many"), "{detail}");
}

#[test]
fn skipped_checks_keep_their_names_and_the_reason() {
    let mut checks = Checks::default();
    checks.add("restore", false, "pg_restore failed");
    checks.skip("inventory", "the restore failed");
    assert_eq!(checks.0.len(), 2);
    assert_eq!(checks.0[0].status, CheckStatus::Failed);
    assert_eq!(checks.0[1].status, CheckStatus::Skipped);
    assert_eq!(checks.0[1].detail, "the restore failed");
}
