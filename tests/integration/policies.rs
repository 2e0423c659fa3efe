//! Every example policy under policies/ is valid.

use std::process::Command;

#[test]
fn every_example_policy_passes_policy_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
                .args(["policy", "check", "--json"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["valid"], true);
            assert!(!v["recipients"].as_array().unwrap().is_empty());
            checked += 1;
        }
    }
    assert!(checked >= 2, "found {checked} example policies");
}
