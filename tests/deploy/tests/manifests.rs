//! The Kubernetes overlays and docker-compose.yml against what the binaries read and serve.
//! Each test gathers every problem of its kind, so one run names them all.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use tessera_deploy_tests::k8s::{self, Container, Manifests};
use tessera_deploy_tests::yaml::{at, list, string_map, text_at};
use tessera_deploy_tests::{
    Binary, HEALTH_PATHS, JWKS_PATH, Url, Vars, compose, tls_stand_in, url_target,
};

fn overlays() -> Vec<Manifests> {
    let overlays: Vec<_> = k8s::overlays()
        .iter()
        .map(|dir| Manifests::render(dir))
        .collect();
    let names: Vec<_> = overlays.iter().map(|m| m.overlay.as_str()).collect();
    assert!(
        names.contains(&"dev") && names.contains(&"prod"),
        "overlays: {names:?}"
    );
    overlays
}

/// The containers that run a tessera binary; every binary must have a Deployment.
fn service_containers(manifests: &Manifests) -> Vec<(Binary, Container<'_>)> {
    let found: Vec<_> = k8s::containers(manifests)
        .into_iter()
        .filter_map(|container| Some((Binary::of_image(&container.image())?, container)))
        .collect();
    for binary in tessera_deploy_tests::binaries() {
        assert!(
            found.iter().any(|(b, c)| b.name == binary.name
                && !c.init
                && c.workload.starts_with("Deployment/")),
            "{}: no Deployment runs {}",
            manifests.overlay,
            binary.name
        );
    }
    found
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// The container's variables with every `_FILE` replaced by its value (from the overlay's
/// Secret, or a stand-in when the template says the key exists), and problems found on the way.
fn resolved_env(
    manifests: &Manifests,
    binary: &Binary,
    container: &Container<'_>,
) -> (Vars, Vec<String>) {
    let templates = k8s::template_secrets();
    let mut problems = Vec::new();
    let mut vars = Vars::new();
    let at_ = format!(
        "{} {}/{}",
        manifests.overlay,
        container.workload,
        container.name()
    );
    for (name, value) in container.env(manifests) {
        if !binary.reads(&name) {
            problems.push(format!(
                "{at_}: sets {name}, which {} does not read",
                binary.name
            ));
            continue;
        }
        let Some(base) = name.strip_suffix("_FILE") else {
            vars.push((name, value));
            continue;
        };
        let Some((secret, key)) = container.secret_file(&value) else {
            problems.push(format!("{at_}: {name}={value} is in no mounted Secret"));
            continue;
        };
        let content = match manifests.secret(&secret) {
            Some(entries) => entries.get(&key).cloned(),
            None => templates
                .get(&secret)
                .filter(|keys| keys.contains(&key))
                .map(|_| {
                    secret
                        .strip_suffix("-grpc-tls")
                        .and_then(|identity| tls_stand_in(identity, &key))
                        .unwrap_or_else(|| "stand-in".to_owned())
                }),
        };
        match content {
            Some(content) => vars.push((base.to_owned(), content)),
            None => problems.push(format!(
                "{at_}: {name} reads key {key:?} of Secret {secret}, which neither the overlay nor base/secrets.template.yaml has"
            )),
        }
    }
    (vars, problems)
}

#[test]
fn a_variable_counts_as_read_only_if_the_binary_reads_it() {
    let users = Binary::named("users").unwrap();
    for read in [
        "USERS_JWKS_URL",
        "USERS_DATABASE_URL_FILE",
        "USERS_SHUTDOWN_DELAY_MS",
        "USERS_EVENTS_PREFETCH",
        "USERS_HTTP_PORT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(users.reads(read), "{read}");
    }
    for not_read in [
        "USERS_JWKS_URI",
        "USERS_USERS_GRPC_URL",
        "AUTH_JWKS_URL",
        "OTEL_ENDPOINT",
        "PATH",
    ] {
        assert!(!users.reads(not_read), "{not_read}");
    }
    let auth = Binary::named("auth").unwrap();
    for read in [
        "AUTH_SIGNING_KEYS_DIR",
        "AUTH_ADMIN_PASSWORD_FILE",
        "AUTH_TRUSTED_PROXY_HOPS",
        "AUTH_USERS_GRPC_URL",
    ] {
        assert!(auth.reads(read), "{read}");
    }
    assert!(!auth.reads("AUTH_JWKS_URL"));
    assert!(
        Binary::named("orders")
            .unwrap()
            .reads("ORDERS_USERS_GRPC_URL")
    );
}

#[test]
fn every_variable_a_pod_sets_is_read_by_its_binary_and_holds_a_value_it_accepts() {
    let mut problems = Vec::new();
    for manifests in overlays() {
        for (binary, container) in service_containers(&manifests) {
            let (vars, found) = resolved_env(&manifests, &binary, &container);
            problems.extend(found);
            if let Err(error) = binary.check(&container.args(), vars) {
                problems.push(format!(
                    "{} {}/{}: {error}",
                    manifests.overlay,
                    container.workload,
                    container.name()
                ));
            }
        }
    }
    assert_none(problems);
}

#[test]
fn containers_listen_probe_migrate_and_drain_as_their_binaries_do() {
    let mut problems = Vec::new();
    for manifests in overlays() {
        let containers = service_containers(&manifests);
        for (binary, container) in &containers {
            let at_ = format!(
                "{} {}/{}",
                manifests.overlay,
                container.workload,
                container.name()
            );
            let mut problem = |text: String| problems.push(format!("{at_}: {text}"));
            if container.init {
                if container.args() != ["migrate"] {
                    problem(format!(
                        "an init container of {} runs {:?}, not migrate",
                        binary.name,
                        container.args()
                    ));
                }
                continue;
            }
            let (vars, _) = resolved_env(&manifests, binary, container);
            let Ok(loaded) = binary.load(vars) else {
                continue;
            };
            if !matches!(container.args().as_slice(), [] | [_])
                || container.args().first().is_some_and(|a| a != "serve")
            {
                problem(format!("runs {:?}, not serve", container.args()));
            }
            let (http, grpc) = (loaded.http_port(binary), loaded.grpc_port(binary));
            let ports = container.ports();
            if ports.get("http") != Some(&http) || ports.get("grpc") != Some(&grpc) {
                problem(format!(
                    "ports {ports:?}, but {} serves http {http} and grpc {grpc}",
                    binary.name
                ));
            }
            for (probe, path) in [
                ("startupProbe", "/health/startup"),
                ("readinessProbe", "/health/ready"),
                ("livenessProbe", "/health/live"),
            ] {
                let Some(spec) = at(container.container, &[probe]) else {
                    problem(format!("no {probe}"));
                    continue;
                };
                if let Some(port) = text_at(spec, &["grpc", "port"]) {
                    if port != grpc.to_string() {
                        problem(format!("{probe} asks gRPC port {port}, not {grpc}"));
                    }
                    continue;
                }
                let (asked_path, port) = (
                    text_at(spec, &["httpGet", "path"]),
                    text_at(spec, &["httpGet", "port"]),
                );
                if asked_path.as_deref() != Some(path) || !HEALTH_PATHS.contains(&path) {
                    problem(format!("{probe} asks {asked_path:?}, not {path}"));
                }
                if port.as_deref() != Some("http") && port != Some(http.to_string()) {
                    problem(format!("{probe} asks port {port:?}, not http ({http})"));
                }
            }
            let annotations: BTreeMap<_, _> = container.annotations.iter().cloned().collect();
            if annotations.get("prometheus.io/port") != Some(&http.to_string())
                || annotations.get("prometheus.io/path").map(String::as_str) != Some("/metrics")
            {
                problem(format!(
                    "scrape annotations {annotations:?} miss /metrics on {http}"
                ));
            }
            let config = &loaded.config;
            let delay_ms = millis(config.shutdown_delay());
            let shutdown_ms = delay_ms + 2 * config.shutdown_timeout_ms;
            let grace_ms = text_at(container.pod, &["terminationGracePeriodSeconds"])
                .map_or(30_000, |seconds| seconds.parse::<u64>().unwrap() * 1000);
            if delay_ms == 0 || grace_ms <= shutdown_ms {
                problem(format!(
                    "shutdown delay {delay_ms} ms (must not be 0, for endpoints to drain) and up to {shutdown_ms} ms in all, grace period {grace_ms} ms"
                ));
            }
            let migrated_before = containers.iter().any(|(b, c)| {
                c.init
                    && b.name == binary.name
                    && c.workload == container.workload
                    && c.args() == ["migrate"]
            });
            if !config.run_migrations && !migrated_before {
                problem(format!(
                    "{}RUN_MIGRATIONS is false and no init container migrates",
                    binary.prefix
                ));
            }
        }
    }
    assert_none(problems);
}

/// For each Service: its port number → (the binary behind it, the container port).
fn service_ports(
    manifests: &Manifests,
    problems: &mut Vec<String>,
) -> BTreeMap<String, BTreeMap<u16, (Option<String>, u16)>> {
    let mut services = BTreeMap::new();
    for service in manifests.of_kind("Service") {
        let name = text_at(service, &["metadata", "name"]).unwrap();
        let pods = manifests.selected(&string_map(service, &["spec", "selector"]));
        let mut ports = BTreeMap::new();
        for port in list(service, &["spec", "ports"]) {
            let number: u16 = text_at(port, &["port"]).unwrap().parse().unwrap();
            let target = text_at(port, &["targetPort"]).unwrap_or_else(|| number.to_string());
            let resolved = pods.iter().find_map(|(_, template)| {
                list(template, &["spec", "containers"])
                    .iter()
                    .find_map(|container| {
                        let binary = Binary::of_image(&text_at(container, &["image"])?)
                            .map(|b| b.name.to_owned());
                        list(container, &["ports"]).iter().find_map(|p| {
                            let container_port = text_at(p, &["containerPort"])?;
                            (text_at(p, &["name"]).as_deref() == Some(&target)
                                || container_port == target)
                                .then(|| (binary.clone(), container_port.parse().unwrap()))
                        })
                    })
            });
            match resolved {
                Some(resolved) => {
                    ports.insert(number, resolved);
                }
                None => problems.push(format!("{}: Service {name} port {number} targets {target}, which no selected container has", manifests.overlay)),
            }
        }
        services.insert(name, ports);
    }
    services
}

#[test]
fn services_internal_urls_the_ingress_and_network_policies_reach_ports_that_serve() {
    let mut problems = Vec::new();
    for manifests in overlays() {
        let services = service_ports(&manifests, &mut problems);
        let serving: BTreeMap<String, (u16, u16)> = service_containers(&manifests)
            .iter()
            .filter(|(_, c)| !c.init)
            .filter_map(|(binary, container)| {
                let (vars, _) = resolved_env(&manifests, binary, container);
                let loaded = binary.load(vars).ok()?;
                Some((
                    binary.name.to_owned(),
                    (loaded.http_port(binary), loaded.grpc_port(binary)),
                ))
            })
            .collect();
        for (binary, container) in service_containers(&manifests) {
            for (name, value) in container.env(&manifests) {
                let Some((target, grpc)) = url_target(&name, &binary) else {
                    continue;
                };
                let url = Url::parse(&value);
                let reached = url
                    .as_ref()
                    .and_then(|url| services.get(&url.host)?.get(&url.port?));
                let wanted = serving
                    .get(&target)
                    .map(|(h, g)| if grpc { *g } else { *h });
                let path_ok = grpc || url.as_ref().is_some_and(|url| url.path == JWKS_PATH);
                if reached != Some(&(Some(target.clone()), wanted.unwrap_or(0))) || !path_ok {
                    problems.push(format!(
                        "{} {}: {name}={value} reaches {reached:?}, not {target}'s {} port {wanted:?}{}",
                        manifests.overlay, container.workload, if grpc { "gRPC" } else { "HTTP" },
                        if grpc { String::new() } else { format!(" at {JWKS_PATH}") }
                    ));
                }
            }
        }
        for ingress in manifests.of_kind("Ingress") {
            for rule in list(ingress, &["spec", "rules"]) {
                for path in list(rule, &["http", "paths"]) {
                    let service =
                        text_at(path, &["backend", "service", "name"]).unwrap_or_default();
                    let port =
                        text_at(path, &["backend", "service", "port", "number"]).or_else(|| {
                            let name = text_at(path, &["backend", "service", "port", "name"])?;
                            let object = manifests.find("Service", &service)?;
                            list(object, &["spec", "ports"])
                                .iter()
                                .find(|p| text_at(p, &["name"]).as_deref() == Some(&name))
                                .and_then(|p| text_at(p, &["port"]))
                        });
                    let reached =
                        port.and_then(|port| services.get(&service)?.get(&port.parse().ok()?));
                    let ok = reached.is_some_and(|(binary, port)| {
                        binary
                            .as_ref()
                            .and_then(|b| serving.get(b))
                            .is_some_and(|(http, _)| http == port)
                    });
                    if !ok {
                        problems.push(format!(
                            "{}: Ingress path {:?} reaches {reached:?}, not a service's HTTP port",
                            manifests.overlay,
                            text_at(path, &["path"])
                        ));
                    }
                }
            }
        }
        for policy in manifests.of_kind("NetworkPolicy") {
            let name = text_at(policy, &["metadata", "name"]).unwrap();
            let own_ports = |selector: &[(String, String)]| -> Option<Vec<String>> {
                let pods = manifests.selected(selector);
                (!pods.is_empty()).then(|| {
                    pods.iter()
                        .flat_map(|(_, t)| list(t, &["spec", "containers"]))
                        .flat_map(|c| list(c, &["ports"]))
                        .flat_map(|p| [text_at(p, &["containerPort"]), text_at(p, &["name"])])
                        .flatten()
                        .collect()
                })
            };
            let mut check = |ports: &[serde_norway::Value],
                             open: Option<Vec<String>>,
                             direction: &str| {
                let Some(open) = open else { return };
                for port in ports.iter().filter_map(|p| text_at(p, &["port"])) {
                    if !open.contains(&port) {
                        problems.push(format!("{}: NetworkPolicy {name} allows {direction} port {port}, on which the pods listen to nothing ({open:?})", manifests.overlay));
                    }
                }
            };
            let selected = own_ports(&string_map(policy, &["spec", "podSelector", "matchLabels"]));
            for rule in list(policy, &["spec", "ingress"]) {
                check(list(rule, &["ports"]), selected.clone(), "ingress to");
            }
            for rule in list(policy, &["spec", "egress"]) {
                for peer in list(rule, &["to"]) {
                    if at(peer, &["namespaceSelector"]).is_none()
                        && at(peer, &["ipBlock"]).is_none()
                    {
                        check(
                            list(rule, &["ports"]),
                            own_ports(&string_map(peer, &["podSelector", "matchLabels"])),
                            "egress to",
                        );
                    }
                }
            }
        }
    }
    assert_none(problems);
}

#[test]
fn docker_compose_sets_what_the_binaries_read_and_serve() {
    let Some(services) = compose::services() else {
        eprintln!("no docker-compose.yml: nothing to check");
        return;
    };
    let mut problems = Vec::new();
    let mut serving = BTreeMap::new();
    for service in &services {
        let at_ = format!("docker-compose.yml {}", service.name);
        let mut problem = |text: String| problems.push(format!("{at_}: {text}"));
        for (name, _) in &service.environment {
            if !service.binary.reads(name) {
                problem(format!(
                    "sets {name}, which {} does not read",
                    service.binary.name
                ));
            }
        }
        if let Err(error) = service
            .binary
            .check(&service.command, service.environment.clone())
        {
            problem(error.to_string());
            continue;
        }
        let Ok(loaded) = service.binary.load(service.environment.clone()) else {
            continue; // a migrate container: it serves nothing
        };
        let (http, grpc) = (
            loaded.http_port(&service.binary),
            loaded.grpc_port(&service.binary),
        );
        let command: Vec<_> = service.command.iter().map(String::as_str).collect();
        match command.as_slice() {
            ["migrate"] => continue,
            [] | ["serve"] => {}
            other => problem(format!("runs {other:?}")),
        }
        serving.insert(service.name.clone(), (service.binary.name, http, grpc));
        for port in &service.container_ports {
            if *port != http && *port != grpc {
                problem(format!(
                    "publishes container port {port}; {} serves {http} and {grpc}",
                    service.binary.name
                ));
            }
        }
        let test = service.healthcheck.join(" ");
        let paths_ok = test
            .split(|c: char| c.is_whitespace() || c == '"')
            .filter_map(|word| word.find("/health/").map(|at| &word[at..]))
            .all(|path| HEALTH_PATHS.iter().any(|p| path.starts_with(p)));
        if test.is_empty()
            || !paths_ok
            || (test.contains("/usr/local/bin/") && !test.contains("healthcheck"))
        {
            problem(format!(
                "health check {test:?} asks neither `healthcheck` nor a /health/* path"
            ));
        }
        let config = &loaded.config;
        let shutdown_ms = millis(config.shutdown_delay()) + 2 * config.shutdown_timeout_ms;
        if service.stop_grace_period_ms <= shutdown_ms {
            problem(format!(
                "stop_grace_period {} ms, but shutdown may take {shutdown_ms} ms ({}SHUTDOWN_DELAY_MS + 2 x {}SHUTDOWN_TIMEOUT_MS)",
                service.stop_grace_period_ms, service.binary.prefix, service.binary.prefix
            ));
        }
    }
    for service in &services {
        for (name, value) in &service.environment {
            let Some((target, grpc)) = url_target(name, &service.binary) else {
                continue;
            };
            let url = Url::parse(value);
            let reached = url.as_ref().and_then(|url| {
                serving
                    .get(&url.host)
                    .map(|(b, h, g)| (*b, if grpc { *g } else { *h }, url.port))
            });
            let ok = reached
                .is_some_and(|(binary, port, asked)| binary == target && asked == Some(port))
                && (grpc || url.as_ref().is_some_and(|url| url.path == JWKS_PATH));
            if !ok {
                problems.push(format!(
                    "docker-compose.yml {}: {name}={value} does not reach {target}'s {} port",
                    service.name,
                    if grpc { "gRPC" } else { "HTTP" }
                ));
            }
        }
    }
    assert_none(problems);
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
