//! The Kubernetes manifests under deploy/k8s validate against the Kubernetes schemas
//! (kubernetes-validate, installed by scripts/setup-k8s-validator.sh), and agree with
//! each other: one shard per replica, peers through the headless Service.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn validator() -> PathBuf {
    let tools = std::env::var_os("PROJECTOR_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/projector/tools")
        });
    let v = tools.join("k8s/bin/kubernetes-validate");
    assert!(
        v.exists(),
        "{} is missing: run `bash scripts/setup-k8s-validator.sh`",
        v.display()
    );
    v
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator())
        .arg("--strict")
        .args(files)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_kubernetes_manifests_are_valid_and_consistent() {
    let dir = common::repo().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let (ok, text) = validate(&files);
    assert!(ok, "{text}");

    // The validator does fail on a broken manifest (so the check above means something).
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.yaml");
    let sts = std::fs::read_to_string(dir.join("statefulset.yaml")).unwrap();
    std::fs::write(&broken, sts.replace("replicas: 3", "replicas: three")).unwrap();
    assert!(
        !validate(&[broken]).0,
        "a string replica count must be refused"
    );

    // One shard per replica, and the host config parses with the shard from the ordinal.
    let config = std::fs::read_to_string(dir.join("configmap.yaml")).unwrap();
    let toml_text: String = config
        .split("projector.toml: |")
        .nth(1)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let path = tmp.path().join("projector.toml");
    std::fs::write(&path, toml_text).unwrap();
    let cfg = projector::Config::load(&path).unwrap();
    assert!(sts.contains("replicas: 3") && cfg.cluster.shard == "auto/3");
    let cluster = projector::cluster::Cluster::from_settings(&cfg.cluster, "projector-2").unwrap();
    assert_eq!((cluster.index, cluster.count), (2, 3));
    assert_eq!(cluster.peer(0), Some("http://projector-0.projector:7070"));
    assert!(sts.contains("serviceName: projector") && sts.contains("path: /readyz"));
}
