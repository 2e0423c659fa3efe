//! `restore --to-dir`: the plan written as plain YAML files, `plan.txt`
//! and `apply.sh`, which applies them with kubectl in dependency order.

use std::path::Path;

use super::{yaml, KubeRestoreError, Plan, Stage};

/// The start of `apply.sh`: every flag goes to `kubectl apply`; `kubectl
/// wait` (for CustomResourceDefinitions) gets only the flags that choose
/// the cluster, and none of it runs in a dry run, which creates no
/// definition to wait for. POSIX sh: the flags are kept one a line.
const APPLY_SH_HEAD: &str = r#"#!/bin/sh
# Applies this export with kubectl in dependency order (written by lifeboat restore --to-dir).
# Usage: sh apply.sh [kubectl apply flags, e.g. --context prod --dry-run=server]
set -e
cd "$(dirname "$0")"
nl='
'
dry=
conn=
value_of=
existing=
for a in "$@"; do
  if [ -n "$value_of" ]; then conn="$conn$nl$a"; value_of=; continue; fi
  case "$a" in
    --dry-run|--dry-run=*) [ "$a" = "--dry-run=none" ] || dry=1 ;;
    --context=*|--kubeconfig=*|--cluster=*|--user=*|--server=*|--token=*|--as=*|--as-group=*|--certificate-authority=*|--client-certificate=*|--client-key=*|--insecure-skip-tls-verify|--insecure-skip-tls-verify=*|--request-timeout=*|--tls-server-name=*)
      conn="$conn$nl$a" ;;
    --context|--kubeconfig|--cluster|--user|--server|-s|--token|--as|--as-group|--certificate-authority|--client-certificate|--client-key|--request-timeout|--tls-server-name)
      conn="$conn$nl$a"; value_of=1 ;;
  esac
done
"#;

const APPLY_SH_WAIT_CRDS: &str = r#"if [ -z "$dry" ]; then
  (IFS=$nl; set -f; kubectl wait $conn --for condition=established --timeout=60s -f _cluster/apiextensions.k8s.io-v1-CustomResourceDefinition/)
fi
"#;

/// apply.sh's guard for a copy's target namespace (`@NS@`): like the
/// restore into the cluster, it refuses a namespace that exists (it cannot
/// tell what a namespace holds, so it is stricter: any existing one).
/// With `LIFEBOAT_INTO_EXISTING`, an existing namespace is left as it is
/// (the copy's Namespace file is not applied onto it) and nothing is
/// checked: apply.sh cannot see which pods its objects would select.
const APPLY_SH_GUARD: &str = r#"found=$(IFS=$nl; set -f; kubectl get namespace @NS@ $conn -o name --ignore-not-found)
if [ -n "$found" ]; then
  if [ -z "$LIFEBOAT_INTO_EXISTING" ]; then
    echo "apply.sh: namespace @NS@ exists; this copy of @FROM@ must not land among other workloads. Pick a new name (lifeboat restore --namespace-map @FROM@:NEW --to-dir ...), delete it, or run with LIFEBOAT_INTO_EXISTING=1 to apply anyway: then its Namespace is left as it is, and nothing checks which of its pods the copy's Services, policies and budgets select (lifeboat restore --into-existing does)" >&2
    exit 5
  fi
  existing="$existing @NS@"
fi
"#;

/// One line per object for `DIR/plan.txt`: what is written, what the
/// rules changed, what is left out and why.
fn plan_lines(plan: &Plan) -> String {
    let mut out = String::from(
        "# lifeboat restore --to-dir: every selected object, and what the restore did to it\n",
    );
    for (from, to) in &plan.namespaces {
        if from != to {
            out.push_str(&format!("# namespace {from} -> {to}\n"));
        }
    }
    for p in &plan.objects {
        let what = format!(
            "{}/{} {}",
            p.namespace.as_deref().unwrap_or("-"),
            p.kind,
            p.name
        );
        match &p.skip {
            Some(skip) => out.push_str(&format!(
                "skipped  {what}: {} ({})\n",
                skip.detail,
                skip.reason.label()
            )),
            None if p.changes.is_empty() => out.push_str(&format!("as is    {what}\n")),
            None => out.push_str(&format!("changed  {what}: {}\n", p.changes.join("; "))),
        }
    }
    out
}

/// Writes the objects the plan applies as plain YAML files
/// (`DIR/namespace/group-version-Kind/name.yaml`), `DIR/plan.txt` (every
/// object, what the rules changed or why it is left out) and
/// `DIR/apply.sh`, which applies them with kubectl in dependency order
/// and, for a copy, refuses a target namespace that exists (unless
/// `into_existing`). Files are 0600 and folders 0700: Secrets are in
/// plaintext there.
pub fn write_dir(plan: &Plan, dir: &Path, into_existing: bool) -> Result<usize, KubeRestoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let write_err = |path: &Path, source: std::io::Error| KubeRestoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| write_err(dir, e))?;
        if entries.next().is_some() {
            return Err(KubeRestoreError::DirNotEmpty(dir.to_path_buf()));
        }
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder.create(dir).map_err(|e| write_err(dir, e))?;
    let mut written = 0;
    // Folders in the order kubectl should apply them.
    let mut order: Vec<(Stage, String)> = Vec::new();
    for p in plan.objects.iter().filter(|p| p.skip.is_none()) {
        let rel = crate::kinds::kubernetes::export::entry_path(
            p.namespace.as_deref().filter(|_| p.kind != "Namespace"),
            &p.api_version,
            &p.kind,
            &p.name,
        );
        let path = dir.join(&rel);
        let folder = path.parent().expect("entry paths have a folder");
        builder.create(folder).map_err(|e| write_err(folder, e))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| write_err(&path, e))?;
        use std::io::Write;
        file.write_all(yaml::to_yaml(&p.obj).as_bytes())
            .map_err(|e| write_err(&path, e))?;
        written += 1;
        let folder_rel = rel
            .rsplit_once('/')
            .map(|(f, _)| f.to_string())
            .unwrap_or_default();
        if !order.iter().any(|(_, f)| *f == folder_rel) {
            order.push((p.stage, folder_rel));
        }
    }
    order.sort();
    let mut script = String::from(APPLY_SH_HEAD);
    if into_existing {
        // Asked for when the folder was written.
        script.push_str("LIFEBOAT_INTO_EXISTING=${LIFEBOAT_INTO_EXISTING:-1}\n");
    }
    for (from, to) in plan.namespaces.iter().filter(|(f, t)| f != t) {
        script.push_str(&APPLY_SH_GUARD.replace("@NS@", to).replace("@FROM@", from));
    }
    let mut crds_done = false;
    for (stage, folder) in &order {
        if *stage > Stage::CustomResourceDefinitions && !crds_done {
            crds_done = true;
            if order[0].0 == Stage::CustomResourceDefinitions {
                script.push_str(APPLY_SH_WAIT_CRDS);
            }
        }
        if *stage == Stage::Namespaces {
            // One by one: a namespace that exists is not changed.
            for p in plan
                .objects
                .iter()
                .filter(|p| p.skip.is_none() && p.stage == Stage::Namespaces)
            {
                let file = crate::kinds::kubernetes::export::entry_path(
                    None,
                    &p.api_version,
                    &p.kind,
                    &p.name,
                );
                if file.rsplit_once('/').map(|(f, _)| f) != Some(folder.as_str()) {
                    continue;
                }
                script.push_str(&format!(
                    "case \" $existing \" in *\" {} \"*) echo \"apply.sh: namespace {} exists; left as it is\" ;; *) kubectl apply \"$@\" --server-side -f '{file}' ;; esac\n",
                    p.name, p.name
                ));
            }
            continue;
        }
        script.push_str(&format!(
            "kubectl apply \"$@\" --server-side -f '{folder}/'\n"
        ));
    }
    let script_path = dir.join("apply.sh");
    std::fs::write(&script_path, script).map_err(|e| write_err(&script_path, e))?;
    let plan_path = dir.join("plan.txt");
    std::fs::write(&plan_path, plan_lines(plan)).map_err(|e| write_err(&plan_path, e))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs apply.sh's flag handling with a kubectl that logs its arguments.
    #[test]
    fn apply_sh_gives_wait_the_cluster_flags_only_and_skips_it_in_a_dry_run() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("log");
        let fake = bin.join("kubectl");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s|' \"$@\" >> '{}'\necho >> '{}'\n",
                log.display(),
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.path().join("apply.sh");
        std::fs::write(
            &script,
            format!(
                "{APPLY_SH_HEAD}{APPLY_SH_WAIT_CRDS}kubectl apply \"$@\" --server-side -f 'x/'\n"
            ),
        )
        .unwrap();
        let run = |args: &[&str]| {
            let _ = std::fs::remove_file(&log);
            let st = std::process::Command::new("sh")
                .arg(&script)
                .args(args)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .status()
                .unwrap();
            assert!(st.success(), "{args:?}");
            std::fs::read_to_string(&log).unwrap()
        };
        let out = run(&[
            "--context",
            "my prod",
            "--validate=false",
            "--kubeconfig=/k c",
        ]);
        assert_eq!(
            out,
            "wait|--context|my prod|--kubeconfig=/k c|--for|condition=established|--timeout=60s|-f|_cluster/apiextensions.k8s.io-v1-CustomResourceDefinition/|\n\
             apply|--context|my prod|--validate=false|--kubeconfig=/k c|--server-side|-f|x/|\n"
        );
        let out = run(&["--dry-run=server", "--context=c"]);
        assert_eq!(
            out,
            "apply|--dry-run=server|--context=c|--server-side|-f|x/|\n"
        );
    }
}
