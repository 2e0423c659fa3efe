//! The example policy of the ConfigMap against what the pods mount.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use lifeboat::policy::{Policy, SecretRef};

use super::{flag, mount_of, one, render, Rendered, CRONJOB, DAEMON, SECRETS};

/// The keys of a Secret template.
fn secret_keys(secrets: &Rendered, name: &str) -> BTreeSet<String> {
    let s: Secret = one(secrets, "Secret", name);
    s.string_data.unwrap_or_default().into_keys().collect()
}

/// The example policy of the ConfigMap parses, and what it names exists in
/// both pods: password files in the mounted lifeboat-db Secret, the
/// recipients file in the mounted lifeboat-recipients Secret, the S3
/// variables from lifeboat-s3; the daemon reads the policies' folder, the
/// CronJob one of its files, on the policy's schedule.
// Stays long: one policy checked against both pods' mounts, Secrets and arguments.
#[test]
fn deploy_policy_parses_and_matches_the_pods() {
    let daemon = render(DAEMON);
    let cron = render(CRONJOB);
    let secrets = render(SECRETS);
    let cm: ConfigMap = one(&daemon, "ConfigMap", "lifeboat-policies");
    let files = cm.data.unwrap_or_default();
    assert!(
        !files.is_empty(),
        "ConfigMap lifeboat-policies holds no policy"
    );

    let d: Deployment = one(&daemon, "Deployment", "lifeboat");
    let daemon_pod = d.spec.unwrap().template.spec.unwrap();
    let cj: CronJob = one(&cron, "CronJob", "lifeboat-backup");
    let cron_spec = cj.spec.unwrap();
    let cron_pod = cron_spec
        .job_template
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap();

    for (file, text) in &files {
        assert!(file.ends_with(".yaml"), "policy file {file}");
        let policy = Policy::parse(text, Path::new(file))
            .unwrap_or_else(|e| panic!("deploy/base/policies.yaml: {file} does not parse: {e}"));
        for (what, pod) in [("Deployment", &daemon_pod), ("CronJob", &cron_pod)] {
            let container = &pod.containers[0];
            // Password files: keys of lifeboat-db, in its mount.
            let db_mount = mount_of(pod, "secret", "secretName", "lifeboat-db")
                .unwrap_or_else(|| panic!("{what}: lifeboat-db is not mounted"));
            let db_keys = secret_keys(&secrets, "lifeboat-db");
            let mut passwords = 0;
            for source in &policy.sources {
                let password = source
                    .postgres
                    .as_ref()
                    .and_then(|p| p.password.clone())
                    .or_else(|| source.mysql.as_ref().and_then(|m| m.password.clone()));
                match password {
                    Some(SecretRef::File(p)) => {
                        passwords += 1;
                        assert_eq!(
                            p.parent(),
                            Some(db_mount.as_path()),
                            "{file}: source {} reads {}, outside the mount of lifeboat-db in the {what}",
                            source.name.as_str(),
                            p.display()
                        );
                        let key = p.file_name().unwrap().to_string_lossy().to_string();
                        assert!(
                            db_keys.contains(&key),
                            "{file}: source {} reads {key}, which lifeboat-db (deploy/secrets/db.yaml) does not have",
                            source.name.as_str()
                        );
                    }
                    Some(SecretRef::Env(v)) => panic!(
                        "{file}: source {} takes its password from ${v}; in the cluster it comes from the mounted Secret",
                        source.name.as_str()
                    ),
                    None => {}
                }
            }
            assert!(passwords >= 2, "{file}: the example shows password files");

            // Recipients: a key of lifeboat-recipients, in its mount.
            let recipients = policy
                .encryption
                .recipients_file
                .as_ref()
                .unwrap_or_else(|| panic!("{file}: encryption.recipients_file"));
            assert_eq!(
                recipients.parent().map(Path::to_path_buf),
                mount_of(pod, "secret", "secretName", "lifeboat-recipients"),
                "{file}: the recipients file is in the mount of lifeboat-recipients ({what})"
            );
            let key = recipients
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            assert!(secret_keys(&secrets, "lifeboat-recipients").contains(&key));

            // S3 credentials: environment variables from lifeboat-s3.
            let s3_keys = secret_keys(&secrets, "lifeboat-s3");
            for secret in [
                &policy.repository.access_key_id,
                &policy.repository.secret_access_key,
            ] {
                let Some(SecretRef::Env(var)) = secret else {
                    panic!("{file}: the S3 credentials come from the environment in the example");
                };
                let env = container
                    .env
                    .iter()
                    .flatten()
                    .find(|e| e.name == *var)
                    .unwrap_or_else(|| panic!("{what}: ${var} is not set"));
                let from = serde_json::to_value(&env.value_from).unwrap();
                assert_eq!(
                    from["secretKeyRef"]["name"], "lifeboat-s3",
                    "{what}: ${var}"
                );
                assert!(
                    from["secretKeyRef"]["key"]
                        .as_str()
                        .is_some_and(|k| s3_keys.contains(k)),
                    "{what}: ${var} names a key lifeboat-s3 does not have"
                );
            }
        }
    }

    // The daemon reads the ConfigMap's folder.
    let policies = mount_of(&daemon_pod, "configMap", "name", "lifeboat-policies")
        .expect("Deployment: lifeboat-policies is not mounted");
    let args = daemon_pod.containers[0].args.clone().unwrap_or_default();
    assert_eq!(
        flag(&args, "--policies").map(PathBuf::from),
        Some(policies),
        "the daemon reads the mounted policies"
    );

    // The CronJob runs one of its files, on that policy's schedule.
    let policies = mount_of(&cron_pod, "configMap", "name", "lifeboat-policies")
        .expect("CronJob: lifeboat-policies is not mounted");
    let args = cron_pod.containers[0].args.clone().unwrap_or_default();
    let policy = PathBuf::from(flag(&args, "--policy").expect("CronJob: --policy"));
    assert_eq!(policy.parent(), Some(policies.as_path()), "{args:?}");
    let file = policy.file_name().unwrap().to_string_lossy().to_string();
    let text = files
        .get(&file)
        .unwrap_or_else(|| panic!("the CronJob runs {file}, which the ConfigMap does not hold"));
    let raw: yaml_serde::Value = yaml_serde::from_str(text).unwrap();
    assert_eq!(
        raw["schedule"].as_str(),
        Some(cron_spec.schedule.as_str()),
        "the CronJob runs on the policy's schedule"
    );
    assert_eq!(
        raw["timezone"].as_str(),
        cron_spec.time_zone.as_deref(),
        "the CronJob reads its schedule in the policy's time zone"
    );
}
