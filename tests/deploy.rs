//! deploy/ cannot run here (no container engine), so it is read and checked: every YAML file
//! loads, the configurations it ships parse and validate, and ports, probe paths and drain
//! times agree between the manifests, the compose file and those configurations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;
use tokengate_gateway::config::GatewayConfig;
use tokengate_idp::config::IdpConfig;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// Every document of a (multi-document) YAML file.
fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            <Value as serde::Deserialize>::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}"))
        })
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn port_of(addr: std::net::SocketAddr) -> u64 {
    u64::from(addr.port())
}

fn idp_config(text: &str, file: &str) -> IdpConfig {
    let path = Path::new(file);
    let mut config = IdpConfig::parse(text, path).unwrap();
    // Set from the Secret or the environment in a deployment.
    config.admin.token = "from-the-environment".to_owned();
    config.validate(path).unwrap();
    config
}

fn gateway_config(text: &str, file: &str) -> GatewayConfig {
    let path = Path::new(file);
    let config = GatewayConfig::parse(text, path).unwrap();
    config.validate(path).unwrap();
    config
}

/// The named container port of a Deployment's first container.
fn container_port(deployment: &Value, name: &str) -> u64 {
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port {name}"))
}

/// Ports named `http` and `admin` as configured; probes, drain and resources as they must be.
fn check_deployment(
    deployment: &Value,
    [public, admin]: [std::net::SocketAddr; 2],
    drain: std::time::Duration,
) {
    assert_eq!(container_port(deployment, "http"), port_of(public));
    assert_eq!(container_port(deployment, "admin"), port_of(admin));
    let drain_secs = drain.as_secs();
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > drain_secs + pause,
        "grace period {grace}s does not cover the drain ({drain_secs}s) and preStop ({pause}s)"
    );
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn kubernetes_manifests_agree_with_the_configs_they_ship() {
    let config = documents("k8s/config.yaml");
    let data = &kind(&config, "ConfigMap", "tokengate-config")["data"];
    let idp = idp_config(data["idp.toml"].as_str().unwrap(), "k8s idp.toml");
    let gateway = gateway_config(data["gateway.toml"].as_str().unwrap(), "k8s gateway.toml");
    let secret = kind(&config, "Secret", "tokengate-secrets");
    assert!(secret["stringData"]["admin-token"].is_string());
    assert!(secret["stringData"]["signing.pem"].is_string());

    let idp_docs = documents("k8s/idp.yaml");
    let idp_deployment = kind(&idp_docs, "Deployment", "tokengate-idp");
    check_deployment(
        idp_deployment,
        [idp.server.listen, idp.admin.listen],
        idp.server.drain_timeout,
    );
    // The signing key is where the config looks for it, from the Secret.
    let mounts = idp_deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap();
    let keys_dir = mounts
        .iter()
        .find(|m| m["name"] == "keys")
        .and_then(|m| m["mountPath"].as_str())
        .unwrap();
    for key in idp.signing_key_paths() {
        assert!(
            key.starts_with(keys_dir),
            "{} is not under {keys_dir}",
            key.display()
        );
    }
    let env = idp_deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap();
    assert!(env.iter().any(|e| e["name"] == "TOKENGATE_ADMIN_TOKEN"
        && e["valueFrom"]["secretKeyRef"]["name"] == "tokengate-secrets"));
    // The public Service never carries the admin port.
    let public = kind(&idp_docs, "Service", "tokengate-idp");
    for port in public["spec"]["ports"].as_sequence().unwrap() {
        assert_ne!(port["targetPort"], "admin");
    }

    let gw_docs = documents("k8s/gateway.yaml");
    let deployment = kind(&gw_docs, "Deployment", "tokengate-gateway");
    check_deployment(
        deployment,
        [gateway.server.listen, gateway.admin.listen],
        gateway.server.drain_timeout,
    );
    // The config file is mounted as a directory (a subPath mount never sees a ConfigMap
    // change), and the reloader sidecar watches the file the gateway reads.
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["shareProcessNamespace"], true);
    let containers = pod["containers"].as_sequence().unwrap();
    let args = containers[0]["args"].as_sequence().unwrap();
    let file = args.last().and_then(|a| a.as_str()).unwrap();
    for container in containers {
        let mount = &container["volumeMounts"][0];
        assert!(mount["subPath"].is_null(), "{container:?}");
        assert!(file.starts_with(mount["mountPath"].as_str().unwrap()));
    }
    let reloader = containers
        .iter()
        .find(|c| c["name"] == "config-reloader")
        .unwrap();
    let script = reloader["command"][2].as_str().unwrap();
    assert!(script.contains(file) && script.contains("pkill -HUP -x tokengate"));
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let hpa = kind(&gw_docs, "HorizontalPodAutoscaler", "tokengate-gateway");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "tokengate-gateway");
    let pdb = kind(&gw_docs, "PodDisruptionBudget", "tokengate-gateway");
    let service = kind(&gw_docs, "Service", "tokengate-gateway");
    for selector in [
        &pdb["spec"]["selector"]["matchLabels"],
        &service["spec"]["selector"],
        &deployment["spec"]["selector"]["matchLabels"],
    ] {
        for (k, v) in selector.as_mapping().unwrap() {
            assert_eq!(&labels[k], v, "selector {k:?} does not match the pods");
        }
    }
    // The gateway finds the IdP through its Service.
    assert!(gateway.idp.jwks_url.starts_with(&format!(
        "http://tokengate-idp:{}/",
        port_of(idp.server.listen)
    )));
}

#[test]
fn the_compose_file_agrees_with_the_configs_it_mounts() {
    let mut compose = documents("compose.yaml").remove(0);
    // `<<: *anchor`: the gateways share one definition.
    // (twice: the gateway definition merges the common one in turn).
    compose.apply_merge().unwrap();
    compose.apply_merge().unwrap();
    let services = &compose["services"];
    for name in [
        "redis", "idp", "gateway1", "gateway2", "gateway3", "lb", "backend",
    ] {
        assert!(services[name].is_mapping(), "no service {name}");
    }
    let idp_text = std::fs::read_to_string(deploy("config/idp.toml")).unwrap();
    let idp = idp_config(&idp_text, "deploy/config/idp.toml");
    let gw_text = std::fs::read_to_string(deploy("config/gateway.toml")).unwrap();
    let gateway = gateway_config(&gw_text, "deploy/config/gateway.toml");
    // Published IdP ports are the configured ones, on loopback only.
    let published: Vec<&str> = services["idp"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for port in [port_of(idp.server.listen), port_of(idp.admin.listen)] {
        assert!(
            published.contains(&format!("127.0.0.1:{port}:{port}").as_str()),
            "{published:?}"
        );
    }
    // The load balancer sends to the gateways' configured port.
    let lb = std::fs::read_to_string(deploy("config/lb.conf")).unwrap();
    for gw in ["gateway1", "gateway2", "gateway3"] {
        assert!(lb.contains(&format!("server {gw}:{}", port_of(gateway.server.listen))));
        let command: Vec<&str> = services[gw]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(
            command,
            ["gateway", "--config", "/etc/tokengate/gateway.toml"]
        );
        let grace = services[gw]["stop_grace_period"].as_str().unwrap();
        let grace: u64 = grace.strip_suffix('s').unwrap().parse().unwrap();
        assert!(std::time::Duration::from_secs(grace) > gateway.server.drain_timeout);
    }
    // Where the gateways look for Redis, the IdP and the backend, compose has those services.
    assert!(gateway.store.redis_url.starts_with("redis://redis:"));
    assert!(idp.store.redis_url.starts_with("redis://redis:"));
    assert!(gateway.idp.jwks_url.starts_with("http://idp:7000/"));
    let backend = std::fs::read_to_string(deploy("config/backend.conf")).unwrap();
    for route in &gateway.routes {
        for upstream in &route.upstream {
            let port = upstream.rsplit(':').next().unwrap();
            assert!(upstream.starts_with("http://backend:"));
            assert!(backend.contains(&format!("listen {port};")));
        }
    }
    // The key the IdP loads is the one compose mounts.
    for key in idp.signing_key_paths() {
        let name = key.file_name().unwrap().to_str().unwrap();
        assert!(key.starts_with("/etc/tokengate/keys"));
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/keys")
                .join(name)
                .exists()
        );
    }
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_as_non_root() {
    let text = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let from: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(from.len() >= 2, "not multi-stage: {from:?}");
    assert!(text.contains("--bin tokengate"));
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("no USER");
    assert!(user.trim() != "root" && user.trim() != "0");
    assert!(text.contains(r#"ENTRYPOINT ["/usr/local/bin/tokengate"]"#));
    // Every folder the build copies exists.
    for line in text.lines().filter_map(|l| l.strip_prefix("COPY ")) {
        if line.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(src).exists(),
                "COPY {src}: not in the repository"
            );
        }
    }
}
