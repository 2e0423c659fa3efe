//! Secrets appear in no log and nowhere unencrypted.

use super::{setup, walk_files};
use crate::kube_server::KubeServer;

const SECRET_PASSWORD: &str = "s3cr3t-Pa55w0rd-do-not-leak";

#[test]
fn secrets_appear_in_no_log_and_nowhere_unencrypted() {
    use base64::Engine;
    let server = KubeServer::start();
    server.seed_realistic("prod");
    let (lb, repo) = setup(&server, "");
    let debug = [("RUST_LOG", "debug")];
    let mut runs = vec![lb.run_env(&["backup"], &debug)];
    runs[0].ok();
    let identity = lb.identity.display().to_string();
    runs.push(lb.run_env(
        &[
            "--log-format",
            "json",
            "restore",
            "--source",
            "cluster-config",
            "--identity",
            &identity,
            "--namespace-map",
            "prod:copy",
        ],
        &debug,
    ));
    runs[1].ok();
    runs.push(lb.run_env(&["list", "--json"], &debug));
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET_PASSWORD);
    for r in &runs {
        for needle in [SECRET_PASSWORD, encoded.as_str()] {
            assert!(
                !r.stdout.contains(needle),
                "{}: stdout has the secret",
                r.args
            );
            assert!(
                !r.stderr.contains(needle),
                "{}: stderr has the secret",
                r.args
            );
        }
    }
    // The restore did carry it.
    let copied = server
        .get("v1", "Secret", Some("copy"), "db-credentials")
        .unwrap();
    assert_eq!(copied["data"]["password"], encoded.as_str());
    let mut files = Vec::new();
    walk_files(repo.path(), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for needle in [SECRET_PASSWORD, encoded.as_str(), "db-credentials"] {
            assert!(
                !text.contains(needle),
                "{} holds '{needle}' unencrypted",
                f.display()
            );
        }
    }
}
