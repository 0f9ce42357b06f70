//! The deployment files: every Kubernetes manifest validates (offline, strictly) against
//! the Kubernetes API schema, the configs they ship load in this version of authgate, and
//! the image runs as a non-root user.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use authgate::config::{Config, LoadOptions};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn manifests() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for flavour in ["sidecar", "standalone"] {
        let dir = deploy_dir().join("kubernetes").join(flavour);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_manifest_validates_strictly_against_the_kubernetes_schema() {
    let manifests = manifests();
    assert!(
        manifests.len() >= 8,
        "sidecar and standalone manifests: {manifests:?}"
    );
    let validate = common::python().with_file_name("kubernetes-validate");
    // 1.33: the oldest Kubernetes whose schema has every field used (`preStop.sleep`).
    let out = Command::new(&validate)
        .args(["--strict", "--kubernetes-version", "1.33.0"])
        .args(&manifests)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", validate.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate refused:\n{report}"
    );
    for kind in [
        "deployment/",
        "service/",
        "configmap/",
        "secret/",
        "persistentvolumeclaim/",
    ] {
        assert!(report.contains(kind), "no {kind} validated:\n{report}");
    }
    assert!(!report.contains("ERROR"), "{report}");
}

/// The `gateway.toml` a ConfigMap carries, with its mount paths moved into `dir` and the
/// files it names made there.
fn shipped_config(configmap: &Path, dir: &Path) -> String {
    let yaml = std::fs::read_to_string(configmap).expect("configmap");
    let start =
        yaml.find("gateway.toml: |\n").expect("a gateway.toml key") + "gateway.toml: |\n".len();
    let text: String = yaml[start..]
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("dir");
    let (cert, key) = authgate::tls::generate_dev_certificate().expect("cert");
    std::fs::write(secrets.join("tls.crt"), cert).expect("write");
    std::fs::write(secrets.join("tls.key"), key).expect("write");
    let jwt = authgate::jwt::generate_key(authgate::jwt::Algorithm::ES256).expect("key");
    std::fs::write(secrets.join("jwt-signing.pem"), jwt).expect("write");
    text.replace("/etc/authgate/secrets/", &format!("{}/", secrets.display()))
        .replace("/var/lib/authgate/", &format!("{}/", dir.display()))
}

#[test]
fn the_shipped_configs_load() {
    for flavour in ["sidecar", "standalone"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let configmap = deploy_dir()
            .join("kubernetes")
            .join(flavour)
            .join("configmap.yaml");
        let text = shipped_config(&configmap, dir.path());
        let config = Config::from_toml_str(
            &text,
            &dir.path().join("gateway.toml"),
            LoadOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{flavour}: {e}\n{text}"));
        assert!(config.server.tls.is_some(), "{flavour} serves TLS");
        assert!(config.admin.is_some(), "{flavour} has probes");
        assert!(config.store.is_some(), "{flavour} has accounts");
        assert_eq!(
            config.server.drain_timeout.as_secs(),
            25,
            "{flavour}: drain under the grace period"
        );
    }
}

#[test]
fn the_grace_period_covers_the_pre_stop_pause_and_the_drain() {
    for flavour in ["sidecar", "standalone"] {
        let deployment = std::fs::read_to_string(
            deploy_dir()
                .join("kubernetes")
                .join(flavour)
                .join("deployment.yaml"),
        )
        .expect("deployment");
        assert!(
            deployment.contains("terminationGracePeriodSeconds: 35"),
            "{flavour}"
        );
        assert!(
            deployment.contains("seconds: 5"),
            "{flavour}: preStop pause"
        );
        assert!(
            deployment.contains("readOnlyRootFilesystem: true"),
            "{flavour}"
        );
        assert!(deployment.contains("runAsNonRoot: true"), "{flavour}");
        assert!(deployment.contains("path: /readyz"), "{flavour}");
    }
}

#[test]
fn the_image_is_multi_stage_and_runs_as_non_root() {
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("Dockerfile");
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")),
        2,
        "two stages"
    );
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("distroless/cc-debian12:nonroot"));
    assert!(dockerfile.contains("USER nonroot:nonroot"));
}
