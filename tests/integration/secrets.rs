//! Secrets never appear in logs, errors, manifests or child-process arguments.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{pg_source_yaml, Lifeboat, PgCluster, Repo};

const PASSWORD: &str = "Tr0ub4dor-and-3-horse-staples";

#[test]
fn the_database_password_never_leaks() {
    let pg = PgCluster::start_with_password(PASSWORD);
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );

    // Wrappers that record the arguments and environment names of every
    // PostgreSQL tool lifeboat starts, then run the real tool.
    let wrappers = tempfile::tempdir().unwrap();
    let args_log = wrappers.path().join("args.log");
    for tool in ["pg_dump", "pg_dumpall", "pg_restore", "psql"] {
        let path = wrappers.path().join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{log}'\nexec '{real}' \"$@\"\n",
                log = args_log.display(),
                real = pg.bin.join(tool).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let repo = tempfile::tempdir().unwrap();
    let lb = Lifeboat::with_source(
        Repo::Local(repo.path().join("repo")),
        &pg_source_yaml(&pg, "[app]", Some(wrappers.path())),
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    let mut outputs = Vec::new();
    let debug = [("RUST_LOG", "debug")];
    let r = lb.run_env(&["backup", "--json"], &debug);
    r.ok();
    outputs.push(r);
    outputs.push(lb.run_env(&["--log-format", "json", "list", "--json"], &debug));
    let target = pg.url("app_copy");
    let identity = lb.identity.to_str().unwrap().to_string();
    let r = lb.run_env(
        &[
            "restore",
            "--source",
            "main-db",
            "--identity",
            &identity,
            "--to",
            &target,
            "--globals",
        ],
        &[("RUST_LOG", "debug"), ("PGPASSWORD", PASSWORD)],
    );
    r.ok();
    outputs.push(r);
    // A failing run: the server refuses a wrong password; the error names
    // host and user but shows neither password.
    let r = lb.run_env(&["backup"], &[("TEST_PGPASSWORD", "wrong-password-xyz")]);
    r.fails_with(1, &["127.0.0.1", "'postgres'"]);
    assert!(!r.stderr.contains("wrong-password-xyz"), "{}", r.stderr);
    outputs.push(r);

    for o in &outputs {
        assert!(
            !o.stdout.contains(PASSWORD),
            "password in stdout of {}",
            o.args
        );
        assert!(
            !o.stderr.contains(PASSWORD),
            "password in stderr of {}",
            o.args
        );
    }
    let args = std::fs::read_to_string(&args_log).unwrap();
    for tool in ["pg_dump ", "pg_dumpall ", "pg_restore ", "psql "] {
        assert!(args.contains(tool), "{tool}wrapper ran: {args}");
    }
    assert!(args.contains("--snapshot="), "{args}");
    assert!(
        !args.contains(PASSWORD),
        "password in a child's arguments: {args}"
    );

    // No repository object holds the password in the clear (manifests are
    // plain JSON; artifacts are encrypted).
    for entry in walk(&repo.path().join("repo")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "password found in {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_s3_secret_never_leaks() {
    let pg = PgCluster::start_with_password(PASSWORD);
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    let garage = crate::harness::Garage::start();
    let lb = Lifeboat::new(Repo::Garage(&garage, "secrets"), &pg, "[app]");
    let debug = [("RUST_LOG", "debug")];
    let mut runs = vec![
        lb.run_env(&["backup"], &debug),
        lb.run_env(&["list", "--json"], &debug),
    ];
    runs[0].ok();
    // Failing runs print errors: a wrong secret, and a missing bucket.
    let policy = std::fs::read_to_string(&lb.policy).unwrap();
    runs.push(lb.run_env(
        &["list"],
        &[
            ("RUST_LOG", "debug"),
            ("TEST_S3_KEY", "GK000000000000000000000000"),
        ],
    ));
    std::fs::write(
        &lb.policy,
        policy.replace("s3://lifeboat-test/", "s3://no-such-bucket/"),
    )
    .unwrap();
    runs.push(lb.run_env(&["backup"], &debug));
    for r in &runs {
        for secret in [garage.secret.as_str(), PASSWORD] {
            assert!(
                !r.stdout.contains(secret) && !r.stderr.contains(secret),
                "a secret in the output of {}",
                r.args
            );
        }
    }
    assert_ne!(runs[3].code, 0);
    // Nothing stored in the bucket holds either secret in the clear.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use lifeboat::storage::ObjectStore;
        let store = garage.store("secrets").await;
        for o in store.list("").await.unwrap() {
            let bytes = store.get_bytes(&o.key).await.unwrap();
            for secret in [garage.secret.as_str(), PASSWORD] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "secret in {}",
                    o.key
                );
            }
        }
    });
}
