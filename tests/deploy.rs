//! `deploy/` with the real tools that consume it: kustomize renders every overlay offline,
//! kubernetes-validate checks the result against the Kubernetes schemas, checkov scans it (the
//! accepted findings are listed in deploy/checkov-accepted.yaml), the security properties are
//! asserted on the rendered objects, promtool checks and unit-tests the alert rules, the image's
//! install steps run on the binary the tests use (file capabilities as a non-root user, the
//! readiness bundle in an empty root), `trustwatch check` runs against the simulated CloudCore
//! before and after its CA switch, and a real Prometheus with the rules loaded scrapes a live
//! trustwatch during the demo scenario: the collapse alert goes pending then firing, nothing fires
//! while healthy, and every dashboard query returns data.
//!
//! Every process a test starts is stopped when it ends; ports come from `free_port()`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use trustwatch_testkit::demo::Ports;
use trustwatch_testkit::demo::http;
use trustwatch_testkit::demo::scenario::{self, Options, Phase};
use trustwatch_testkit::peers::go;
use trustwatch_testkit::pki::Pki;
use trustwatch_testkit::prom::{self, Prometheus, Target};
use trustwatch_testkit::tools::{kustomize, pytool, yaml_documents};
use trustwatch_testkit::{Result, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_trustwatch");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(".."))
        .to_path_buf()
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

/// The kustomizations a user applies, with the capture source each one selects (None: not a
/// trustwatch DaemonSet).
const RENDERED: [(&str, Option<&str>); 4] = [
    ("deploy", Some("pcap")),
    ("deploy/overlays/operator", Some("pcap")),
    ("deploy/overlays/ebpf", Some("ebpf")),
    ("deploy/examples/cloudcore-readiness", None),
];

fn render(rel: &str) -> Result<(String, Vec<Value>)> {
    let yaml = kustomize(&root().join(rel))?;
    let docs = yaml_documents(&yaml)?;
    Ok((yaml, docs))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Capabilities per capture source: exactly these, nothing else.
fn capabilities(source: &str) -> Vec<String> {
    match source {
        "pcap" => vec!["NET_RAW".into()],
        _ => vec!["BPF".into(), "NET_ADMIN".into(), "PERFMON".into()],
    }
}

/// Secret access: only volumes of casecret projecting `cadata`; no Secret through env, no API.
fn assert_only_cadata(rel: &str, yaml: &str, pod: &Value) {
    assert!(
        !yaml.contains("cakeydata"),
        "{rel}: the CA key must never be named"
    );
    for v in pod["volumes"].as_array().into_iter().flatten() {
        if v.get("projected").is_some() {
            panic!("{rel}: projected volume {v}: not expected");
        }
        if let Some(s) = v.get("secret") {
            assert_eq!(s["secretName"], "casecret", "{rel}: {v}");
            let keys: Vec<&Value> = s["items"]
                .as_array()
                .map(|a| a.iter().map(|i| &i["key"]).collect())
                .unwrap_or_default();
            assert_eq!(keys, [&Value::from("cadata")], "{rel}: only cadata: {v}");
        }
    }
    let containers = pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten();
    for c in containers {
        let text = c.to_string();
        assert!(
            !text.contains("secretKeyRef") && !text.contains("secretRef"),
            "{rel}: a Secret through the environment: {c}"
        );
    }
}

/// The container security context every trustwatch container has.
fn assert_locked_down(rel: &str, pod: &Value, c: &Value) {
    let sc = &c["securityContext"];
    assert_ne!(sc["privileged"], true, "{rel}: privileged");
    assert_eq!(sc["runAsNonRoot"], true, "{rel}: non-root");
    let uid = sc["runAsUser"]
        .as_u64()
        .or(pod["securityContext"]["runAsUser"].as_u64());
    assert!(uid.is_some_and(|u| u >= 10_000), "{rel}: high UID: {sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{rel}: read-only root");
    let seccomp = sc["seccompProfile"]["type"]
        .as_str()
        .or(pod["securityContext"]["seccompProfile"]["type"].as_str());
    assert_eq!(seccomp, Some("RuntimeDefault"), "{rel}: seccomp");
    assert_eq!(
        strs(&sc["capabilities"]["drop"]),
        ["ALL"],
        "{rel}: drop ALL"
    );
}

/// kubectl kustomize + the security properties of every rendered kustomization.
#[test]
fn manifests_render_and_keep_their_security_promises() -> Result<()> {
    for (rel, source) in RENDERED {
        let (yaml, docs) = render(rel)?;
        for kind in [
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
            "Secret",
        ] {
            assert!(
                of_kind(&docs, kind).is_empty(),
                "{rel}: no {kind}: nothing reads the API"
            );
        }
        let Some(source) = source else {
            readiness_example(rel, &yaml, &docs);
            continue;
        };
        let sa = of_kind(&docs, "ServiceAccount");
        assert_eq!(sa.len(), 1, "{rel}");
        assert_eq!(sa[0]["automountServiceAccountToken"], false, "{rel}");
        let ds = of_kind(&docs, "DaemonSet");
        assert_eq!(ds.len(), 1, "{rel}");
        assert_eq!(ds[0]["metadata"]["namespace"], "kubeedge", "{rel}");
        let pod = &ds[0]["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true, "{rel}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{rel}");
        assert_only_cadata(rel, &yaml, pod);
        let terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"]
            .to_string();
        assert!(
            terms.contains("trustwatch/cloudcore")
                && terms.contains("node-role.kubernetes.io/edge"),
            "{rel}: CloudCore nodes, never edges: {terms}"
        );
        let tolerated = pod["tolerations"].to_string();
        assert!(
            tolerated.contains("node-role.kubernetes.io/control-plane"),
            "{rel}"
        );
        let containers = pod["containers"].as_array().ok_or("containers")?;
        assert_eq!(containers.len(), 1, "{rel}");
        let c = &containers[0];
        assert_locked_down(rel, pod, c);
        let mut caps = strs(&c["securityContext"]["capabilities"]["add"]);
        caps.sort();
        assert_eq!(
            caps,
            capabilities(source),
            "{rel}: capabilities of {source}"
        );
        let args = strs(&c["args"]);
        assert!(
            args.contains(&format!("--source={source}")),
            "{rel}: {args:?}"
        );
        let binary = strs(&c["command"]);
        match source {
            "ebpf" => assert_eq!(binary, ["/usr/local/bin/trustwatch-ebpf"], "{rel}"),
            _ => assert!(binary.is_empty(), "{rel}: the image's entrypoint"),
        }
        assert!(
            !args
                .iter()
                .any(|a| a.contains("ready-requires-consistent-ca")),
            "{rel}: a CA incident must not stall the rollout"
        );
        for a in [
            "--kubeedge-secret-dir=/etc/kubeedge/casecret",
            "--probe-ca=https://$(HOST_IP):10002",
            "--probe-chain=$(HOST_IP):10000",
        ] {
            assert!(args.iter().any(|x| x == a), "{rel}: {a} in {args:?}");
        }
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP",
            "{rel}"
        );
        assert_eq!(c["env"][1]["name"], "NODE_NAME", "{rel}");
        assert_eq!(
            c["env"][1]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName",
            "{rel}"
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{rel}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{rel}");
        let res = &c["resources"];
        for k in ["requests", "limits"] {
            assert!(
                res[k]["cpu"].is_string() && res[k]["memory"].is_string(),
                "{rel}: {k}: {res}"
            );
        }
        assert_eq!(res["limits"]["memory"], "512Mi", "{rel}");
        let svc = of_kind(&docs, "Service");
        assert!(
            svc.iter().any(|s| s["metadata"]["name"] == "trustwatch"),
            "{rel}"
        );
        if rel.contains("overlays") {
            operator_pieces(rel, &docs)?;
        }
        if rel.ends_with("ebpf") {
            let replicas = svc
                .iter()
                .find(|s| s["metadata"]["name"] == "cloudcore-replicas")
                .ok_or("cloudcore-replicas Service")?;
            assert_eq!(replicas["spec"]["clusterIP"], "None", "headless");
            assert!(
                args.iter()
                    .any(|a| a.contains("cloudcore-replicas.kubeedge.svc"))
            );
        }
    }
    Ok(())
}

/// ServiceMonitor, PrometheusRule and the dashboard ConfigMap of an operator overlay.
fn operator_pieces(rel: &str, docs: &[Value]) -> Result<()> {
    let sm = of_kind(docs, "ServiceMonitor");
    assert_eq!(sm.len(), 1, "{rel}");
    let ep = &sm[0]["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "http-metrics", "{rel}");
    assert!(ep["relabelings"].to_string().contains("node"), "{rel}");
    assert_eq!(
        sm[0]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "trustwatch"
    );
    assert_eq!(of_kind(docs, "PrometheusRule").len(), 1, "{rel}");
    let cm = of_kind(docs, "ConfigMap");
    let dash = cm
        .iter()
        .find(|c| c["metadata"]["name"] == "trustwatch-dashboard")
        .ok_or("dashboard ConfigMap")?;
    assert_eq!(
        dash["metadata"]["labels"]["grafana_dashboard"], "1",
        "{rel}"
    );
    let shipped =
        std::fs::read_to_string(deploy().join("components/grafana-dashboard/trustwatch.json"))?;
    assert_eq!(dash["data"]["trustwatch.json"], shipped.as_str(), "{rel}");
    Ok(())
}

/// The readiness component on the CloudCore stand-in.
fn readiness_example(rel: &str, yaml: &str, docs: &[Value]) {
    let d = of_kind(docs, "Deployment");
    assert_eq!(d.len(), 1, "{rel}");
    let pod = &d[0]["spec"]["template"]["spec"];
    assert_only_cadata(rel, yaml, pod);
    let init = &pod["initContainers"][0];
    assert_eq!(init["image"], "trustwatch:0.1.0", "{rel}");
    assert_locked_down(rel, pod, init);
    assert_eq!(init["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(init["securityContext"]["capabilities"]["add"].is_null());
    let cc = &pod["containers"][0];
    assert_eq!(cc["name"], "cloudcore");
    let cmd = strs(&cc["readinessProbe"]["exec"]["command"]);
    assert_eq!(
        cmd.first().map(String::as_str),
        Some("/trustwatch/ld.so"),
        "{cmd:?}"
    );
    assert!(cmd.contains(&"check".to_string()), "{cmd:?}");
    let mounts = cc["volumeMounts"].to_string();
    assert!(mounts.contains("/trustwatch") && mounts.contains("/etc/trustwatch/casecret"));
    assert!(
        cc["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("trustwatch")))
            .all(|m| m["readOnly"] == true),
        "{rel}: CloudCore mounts what the component adds read-only"
    );
}

/// kubernetes-validate (strict, offline schemas) on every rendered kustomization, for the oldest
/// and the newest Kubernetes it knows of that KubeEdge supports. The Prometheus Operator CRDs have
/// no schema there: they are checked by the assertions above and by promtool.
#[test]
fn rendered_manifests_validate_against_the_kubernetes_schemas() -> Result<()> {
    let tool = pytool("kubernetes-validate")?;
    let dir = tempfile::tempdir()?;
    for (rel, _) in RENDERED {
        let (yaml, _) = render(rel)?;
        let file = dir.path().join(format!("{}.yaml", rel.replace('/', "_")));
        std::fs::write(&file, yaml)?;
        for version in ["1.29.0", "1.37.0"] {
            let out = Command::new(&tool)
                .args(["--strict", "-k", version])
                .arg(&file)
                .output()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{rel} on {version}: {text}");
            for line in text.lines().filter(|l| l.starts_with("WARN")) {
                assert!(
                    line.contains("kind ServiceMonitor") || line.contains("kind PrometheusRule"),
                    "{rel} on {version}: only the CRDs lack a schema: {line}"
                );
            }
            assert!(!text.contains("ERROR"), "{rel} on {version}: {text}");
        }
    }
    Ok(())
}

/// checkov on every rendered kustomization: the failed checks are exactly the accepted ones.
#[test]
fn checkov_findings_are_exactly_the_accepted_ones() -> Result<()> {
    let tool = pytool("checkov")?;
    // Not a hidden folder (as tempfile's default name is): checkov skips those.
    let dir = tempfile::Builder::new()
        .prefix("trustwatch-checkov-")
        .tempdir()?;
    for (rel, _) in RENDERED {
        let (yaml, _) = render(rel)?;
        std::fs::write(
            dir.path().join(format!("{}.yaml", rel.replace('/', "_"))),
            yaml,
        )?;
    }
    let out = Command::new(&tool)
        .arg("-d")
        .arg(dir.path())
        .args([
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "--compact",
        ])
        .args(["-o", "json"])
        .env("BC_SKIP_MAPPING", "TRUE")
        .stderr(Stdio::null())
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "checkov output: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let reports = match report {
        Value::Array(a) => a,
        one => vec![one],
    };
    let mut found = BTreeSet::new();
    let mut passed = 0;
    for r in &reports {
        passed += r["summary"]["passed"].as_u64().unwrap_or(0);
        for f in r["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            found.insert((
                f["check_id"].as_str().unwrap_or("?").to_string(),
                f["resource"].as_str().unwrap_or("?").to_string(),
            ));
        }
    }
    assert!(passed > 50, "checkov ran its checks: {passed} passed");
    let accepted_doc = yaml_documents(&std::fs::read_to_string(
        deploy().join("checkov-accepted.yaml"),
    )?)?;
    let mut accepted = BTreeSet::new();
    for a in accepted_doc[0]["accepted"].as_array().ok_or("accepted")? {
        let why = a["why"].as_str().unwrap_or("");
        assert!(why.len() > 60, "every accepted finding says why: {a}");
        for r in strs(&a["resources"]) {
            accepted.insert((a["check"].as_str().unwrap_or("?").to_string(), r));
        }
    }
    let new: Vec<_> = found.difference(&accepted).collect();
    let stale: Vec<_> = accepted.difference(&found).collect();
    assert!(
        new.is_empty(),
        "checkov findings not accepted in deploy/checkov-accepted.yaml: {new:?}"
    );
    assert!(
        stale.is_empty(),
        "accepted findings that no longer occur: {stale:?}"
    );
    Ok(())
}

// ---------- alert rules ----------

/// The PrometheusRule's spec as generated from rules.yaml.
fn prometheusrule_from(rules: &str) -> Result<String> {
    let start = rules.find("\ngroups:").ok_or("rules.yaml: no groups")? + 1;
    let mut out = String::from(
        "# Generated from deploy/prometheus/rules.yaml (the same groups): do not edit here. After changing\n\
         # rules.yaml run `TRUSTWATCH_BLESS=1 cargo test -p trustwatch --test deploy` to regenerate.\n\
         apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: trustwatch\n  \
         labels:\n    app.kubernetes.io/name: trustwatch\nspec:\n",
    );
    for line in rules[start..].split_inclusive('\n') {
        if line.trim().is_empty() {
            out.push_str(line);
        } else {
            out.push_str("  ");
            out.push_str(line);
        }
    }
    Ok(out)
}

/// promtool check rules, promtool test rules (incident, divergence, benign rotation, one
/// misconfigured edge, a flapping partial failure, the monitors' own health, expiry), the
/// PrometheusRule in sync, every alert with a severity and a runbook section that exists, the
/// plain scrape config accepted by `promtool check config`.
#[test]
fn alert_rules_check_and_pass_their_unit_tests() -> Result<()> {
    let dir = deploy().join("prometheus");
    let (ok, out) = prom::promtool(&dir, &["check", "rules", "rules.yaml"])?;
    assert!(ok, "promtool check rules: {out}");
    let (ok, out) = prom::promtool(&dir, &["test", "rules", "rules.test.yaml"])?;
    assert!(ok, "promtool test rules: {out}");

    let rules = std::fs::read_to_string(dir.join("rules.yaml"))?;
    let generated = prometheusrule_from(&rules)?;
    let cr = deploy().join("components/prometheus-operator/prometheusrule.yaml");
    if std::env::var_os("TRUSTWATCH_BLESS").is_some() {
        std::fs::write(&cr, &generated)?;
    }
    assert_eq!(
        std::fs::read_to_string(&cr)?,
        generated,
        "prometheusrule.yaml is out of date: TRUSTWATCH_BLESS=1 cargo test -p trustwatch --test deploy"
    );

    let doc = yaml_documents(&rules)?;
    let runbook = std::fs::read_to_string(deploy().join("RUNBOOK.md"))?;
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                .collect::<String>()
                .replace(' ', "-")
        })
        .collect();
    let mut names = Vec::new();
    for g in doc[0]["groups"].as_array().ok_or("groups")? {
        for r in g["rules"].as_array().ok_or("rules")? {
            let name = r["alert"].as_str().ok_or("alert name")?;
            names.push(name.to_string());
            assert!(
                ["critical", "warning"].contains(&r["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity"
            );
            let url = r["annotations"]["runbook_url"]
                .as_str()
                .ok_or("runbook_url")?;
            let anchor = url.strip_prefix("deploy/RUNBOOK.md#").ok_or(url)?;
            assert_eq!(anchor, name.to_lowercase(), "{name}");
            assert!(
                anchors.contains(anchor),
                "RUNBOOK.md has no section {anchor}"
            );
        }
    }
    for want in [
        "KubeEdgeTrustCollapse",
        "KubeEdgeCADivergence",
        "KubeEdgeCAInconsistent",
        "KubeEdgeCertHandshakeFailuresHigh",
        "KubeEdgeCertExpiringSoon",
        "TrustwatchCaptureDropping",
        "TrustwatchDown",
        "TrustwatchDetectorSaturated",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing");
    }

    // The plain scrape config, as a user merges it, with the rules. Debian's Prometheus is built
    // without Kubernetes service discovery: that one block is swapped for a static target, the
    // job and its relabelling are checked as written.
    let tmp = tempfile::tempdir()?;
    let mut scrape =
        yaml_documents(&std::fs::read_to_string(dir.join("scrape-config.yaml"))?)?.remove(0);
    let job = &mut scrape["scrape_configs"][0];
    assert!(job["kubernetes_sd_configs"][0]["role"] == "pod", "{job}");
    if let Some(o) = job.as_object_mut() {
        o.remove("kubernetes_sd_configs");
        o.insert(
            "static_configs".into(),
            serde_json::json!([{"targets": ["127.0.0.1:9877"]}]),
        );
    }
    scrape["rule_files"] = serde_json::json!([dir.join("rules.yaml")]);
    std::fs::write(tmp.path().join("prometheus.yml"), scrape.to_string())?;
    let (ok, out) = prom::promtool(tmp.path(), &["check", "config", "prometheus.yml"])?;
    assert!(ok, "promtool check config: {out}");
    Ok(())
}

/// The dashboard is Grafana JSON with a Prometheus datasource variable; its queries are run by the
/// end-to-end test below.
#[test]
fn dashboard_is_grafana_json_with_one_query_per_target() -> Result<()> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(
        deploy().join("components/grafana-dashboard/trustwatch.json"),
    )?)?;
    assert_eq!(d["uid"], "trustwatch-kubeedge");
    let vars = d["templating"]["list"].to_string();
    assert!(vars.contains("\"type\":\"datasource\"") && vars.contains("\"name\":\"node\""));
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 15, "{queries:?}");
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .ok_or("panels")?
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for t in [
        "Trust state per service and node",
        "Handshakes by outcome",
        "Certificate failures by CA key",
        "Failing vs active clients",
        "Presented vs trusted CA",
        "Probe results",
        "Capture health",
    ] {
        assert!(titles.contains(&t), "panel {t}: {titles:?}");
    }
    Ok(())
}

/// (panel title, expr) of every panel target.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let (Some(title), Some(expr)) = (p["title"].as_str(), t["expr"].as_str()) {
                out.push((title.to_string(), expr.to_string()));
            }
        }
    }
    out
}

// ---------- the image ----------

/// The Dockerfile's COPY sources exist in the build context and are not excluded by
/// .dockerignore; its builder stage runs the project's own commands (`cargo xtask setup --build`,
/// `cargo xtask dist`), whose cargo invocation is the one `xtask dist --print` shows; Cargo.lock
/// is current (the build uses --locked). The compile itself is not repeated here: it is the same
/// `cargo build` of the same sources the tests use, only with --release (≈5 min on 2 cores);
/// `TRUSTWATCH_IMAGE_BUILD=1` runs `cargo xtask dist` too.
#[test]
fn image_dockerfile_uses_existing_sources_and_the_project_build() -> Result<()> {
    let dockerfile = std::fs::read_to_string(deploy().join("image/Dockerfile"))?;
    let ignore = std::fs::read_to_string(root().join(".dockerignore"))?;
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut runs = Vec::new();
    let mut copies = 0;
    for line in dockerfile.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("COPY ") {
            if rest.starts_with("--from=") {
                continue;
            }
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let (dest, sources) = parts.split_last().ok_or("COPY")?;
            assert!(!dest.is_empty());
            for s in sources {
                copies += 1;
                assert!(
                    root().join(s).exists(),
                    "COPY {s}: not in the build context"
                );
                let s = s.trim_start_matches("./");
                assert!(
                    !ignored
                        .iter()
                        .any(|i| s.starts_with(i.trim_end_matches('/')))
                        || s == ".",
                    "COPY {s} is excluded by .dockerignore"
                );
            }
        }
        if let Some(rest) = line.strip_prefix("RUN ") {
            runs.push(rest.to_string());
        }
    }
    assert!(copies >= 3, "{dockerfile}");
    assert!(
        runs.contains(&"cargo xtask setup --build".to_string()),
        "{runs:?}"
    );
    assert!(runs.contains(&"cargo xtask dist".to_string()), "{runs:?}");
    assert!(
        runs.iter().any(|r| r.contains("install.sh")),
        "the runtime stage runs deploy/image/install.sh: {runs:?}"
    );
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.version",
        "org.opencontainers.image.licenses",
    ] {
        assert!(dockerfile.contains(label), "label {label}");
    }
    assert!(dockerfile.contains("USER 65532:65532"));
    for ignored_build_output in ["target/", ".git/"] {
        assert!(ignored.contains(&ignored_build_output), "{ignore}");
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["xtask", "dist", "--print"])
        .current_dir(root())
        .output()?;
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "{printed}");
    assert_eq!(
        printed,
        "cargo build --release --locked -p trustwatch --bin trustwatch --quiet"
    );
    let out = Command::new(&cargo)
        .args(["metadata", "--locked", "--format-version", "1"])
        .current_dir(root())
        .stdout(Stdio::null())
        .output()?;
    assert!(
        out.status.success(),
        "Cargo.lock is not current (the image builds with --locked): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var_os("TRUSTWATCH_IMAGE_BUILD").is_some() {
        let out = Command::new(&cargo)
            .args(["xtask", "dist"])
            .current_dir(root())
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(root().join("target/dist/trustwatch").exists());
    }
    Ok(())
}

/// install.sh (the image's runtime stage) into a temporary root, on the binary the tests use.
fn install_into_temp_root() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    // Readable by the non-root user the image runs as.
    set_mode(dir.path(), 0o755)?;
    let out = Command::new("sh")
        .arg(deploy().join("image/install.sh"))
        .arg(BIN)
        .arg(dir.path())
        .env("TRUSTWATCH_INSTALL_NO_APT", "1")
        .output()?;
    assert!(
        out.status.success(),
        "install.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dir)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn getcap(p: &Path) -> Result<String> {
    let out = Command::new("getcap").arg(p).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `setpriv` as the image's user 65532 with the container's bounding set `caps`.
fn as_container_user(caps: &str, no_new_privs: bool) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65532",
        "--regid=65532",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(format!("--bounding-set=-all{caps}"));
    if no_new_privs {
        c.arg("--no-new-privs");
    }
    c
}

/// The image's file capabilities, as the DaemonSet runs them: UID 65532, bounding set = the
/// component's capability list. The libpcap binary captures on `lo`; the same binary with a
/// bounding set lacking NET_RAW cannot even start (why there is one copy per source); and the
/// kernel rule behind allowPrivilegeEscalation: under no_new_privs file capabilities are granted
/// only within the permitted set the process already had.
#[test]
fn image_file_capabilities_let_a_non_root_user_capture() -> Result<()> {
    let dir = install_into_temp_root()?;
    let pcap = dir.path().join("usr/local/bin/trustwatch");
    let ebpf = dir.path().join("usr/local/bin/trustwatch-ebpf");
    assert!(
        getcap(&pcap)?.ends_with("cap_net_raw=ep"),
        "{}",
        getcap(&pcap)?
    );
    let e = getcap(&ebpf)?;
    for cap in ["cap_net_admin", "cap_bpf", "cap_perfmon"] {
        assert!(e.contains(cap), "{e}");
    }
    assert!(!e.contains("cap_net_raw"), "{e}");
    assert_eq!(
        getcap(&dir.path().join("opt/trustwatch-check/trustwatch"))?,
        ""
    );

    let listen = format!("127.0.0.1:{}", free_port()?);
    let child = as_container_user(",+net_raw", false)
        .arg(&pcap)
        .args(["live", "--iface", "lo", "--listen", &listen, "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut child = KillOnDrop(child);
    let addr = listen.parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, _)) = http::get(addr, "/readyz") {
            break;
        }
        if let Some(status) = child.0.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut err);
            }
            panic!("non-root capture with the file capability failed ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "no /readyz within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(child);

    let out = as_container_user("", false)
        .arg(&pcap)
        .arg("--version")
        .output()?;
    assert!(
        !out.status.success(),
        "cap_net_raw=ep outside the bounding set cannot start"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // no_new_privs: a process that holds nothing gains nothing from file capabilities.
    let out = as_container_user(",+net_raw", true)
        .args(["sh", "-c"])
        .arg(format!(
            "exec {} live --iface lo --listen 127.0.0.1:{} -q",
            pcap.display(),
            free_port()?
        ))
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_NET_RAW"));
    Ok(())
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------- trustwatch check: the CloudCore readiness probe ----------

/// The readiness probe's command from the rendered component, run as the kubelet would in
/// CloudCore's container — here an otherwise empty root (no libc: CloudCore's image is Alpine)
/// holding only the bundle and casecret's cadata — against the simulated CloudCore's
/// certificate service before and after it restarts with the other CA, then with it gone.
#[test]
fn readiness_check_follows_the_simulated_cloudcore_ca_switch() -> Result<()> {
    let (_, docs) = render("deploy/examples/cloudcore-readiness")?;
    let d = of_kind(&docs, "Deployment");
    let probe_cmd = strs(
        &d[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"],
    );

    let pki = Pki::new()?;
    let (ca_a, ca_b) = (pki.kubeedge_ca()?, pki.kubeedge_ca()?);
    let (leaf_a, leaf_b) = (pki.server_leaf(&ca_a)?, pki.server_leaf(&ca_b)?);
    let ports = Ports::free()?;
    let bin = go::binary()?;
    let server_cmd = |port: u16, certsvc: bool| {
        let mut c = Command::new(&bin);
        c.arg("server")
            .arg("-listen")
            .arg(Ports::addr(port).to_string())
            .arg("-cert")
            .arg(&leaf_a.chain_path)
            .arg("-key")
            .arg(&leaf_a.key_path)
            .arg("-client-ca")
            .arg(&ca_a.cert_path)
            .arg("-cert2")
            .arg(&leaf_b.chain_path)
            .arg("-key2")
            .arg(&leaf_b.key_path)
            .arg("-client-ca2")
            .arg(&ca_b.cert_path)
            .args(["-n", "0"]);
        if certsvc {
            c.arg("-certsvc");
        }
        c.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()
    };
    let certsvc = KillOnDrop(server_cmd(ports.certsvc, true)?);
    let cloudhub = KillOnDrop(server_cmd(ports.cloudhub, false)?);
    for p in [ports.certsvc, ports.cloudhub] {
        wait_port(p)?;
    }

    // The container's view: the bundle at /trustwatch, cadata at /etc/trustwatch/casecret.
    let jail = tempfile::tempdir()?;
    set_mode(jail.path(), 0o755)?;
    let out = Command::new("sh")
        .arg(deploy().join("image/bundle.sh"))
        .arg(BIN)
        .arg(jail.path().join("trustwatch"))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = jail.path().join("etc/trustwatch/casecret");
    std::fs::create_dir_all(&secret)?;
    std::fs::write(secret.join("cadata"), &ca_a.cert.der)?;
    assert!(
        !jail.path().join("lib/x86_64-linux-gnu").exists() && !jail.path().join("usr").exists()
    );

    let check = |extra: &[String]| -> Result<(i32, String, Duration)> {
        let args: Vec<String> = probe_cmd
            .iter()
            .map(|a| {
                if a.starts_with("--ca-url=") {
                    format!("--ca-url=https://127.0.0.1:{}", ports.certsvc)
                } else {
                    a.clone()
                }
            })
            .chain(extra.iter().cloned())
            .collect();
        let t = Instant::now();
        let out = Command::new("chroot")
            .arg(jail.path())
            .args(&args)
            .output()?;
        let took = t.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{stderr}");
        assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
        Ok((
            out.status.code().unwrap_or(-1),
            stdout.trim().to_string(),
            took,
        ))
    };
    let chain = vec![format!("--chain=127.0.0.1:{}", ports.cloudhub)];

    let (code, line, took) = check(&[])?;
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with("consistent: ") && line.contains(ca_a.key_id()),
        "{line}"
    );
    assert!(
        took < Duration::from_secs(5),
        "within the probe's timeoutSeconds: {took:?}"
    );
    let (code, line, _) = check(&chain)?;
    assert_eq!(code, 0, "the chain's issuer is CA_A too: {line}");
    // The join token's hash alone; its secret part never appears.
    let token = format!(
        "{}.eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBhcnQ",
        ca_a.cert.sha256_upper().to_lowercase()
    );
    let (code, line, _) = check(&[format!("--join-token={token}")])?;
    assert_eq!(code, 0, "{line}");
    assert!(
        !line.contains("eyJ") && !line.contains("c2VjcmV0"),
        "{line}"
    );

    // CloudCore restarts with CA_B (same name and serial, another key): not ready.
    for p in [&certsvc, &cloudhub] {
        let pid = libc::pid_t::try_from(p.0.id())?;
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let (code, line) = loop {
        let (code, line, _) = check(&[])?;
        if code != 0 || Instant::now() > deadline {
            break (code, line);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with("inconsistent: ")
            && line.contains(ca_b.key_id())
            && line.contains(ca_a.key_id()),
        "{line}"
    );
    let (code, line, _) = check(&chain)?;
    assert_eq!(code, 1, "{line}");

    // CloudCore gone: could not check.
    drop(certsvc);
    drop(cloudhub);
    let (code, line, _) = check(&[])?;
    assert_eq!(code, 2, "{line}");
    assert!(line.starts_with("could not check: "), "{line}");
    Ok(())
}

fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(Ports::addr(port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {port} after 10 s").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Bad input: one line, exit 2.
#[test]
fn check_bad_input_exits_2_with_one_line() -> Result<()> {
    for args in [
        vec!["check"],
        vec![
            "check",
            "--ca-hash",
            "zz",
            "--ca-url",
            "https://127.0.0.1:1",
        ],
        vec![
            "check",
            "--ca-url",
            "http://x",
            "--ca-hash",
            &"a".repeat(64),
        ],
        vec!["check", "--kubeedge-secret-dir", "/nonexistent"],
        vec!["check", "--join-token", "not-a-token.SECRETPART"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("SECRETPART"), "{err}");
    }
    Ok(())
}

// ---------- end to end: Prometheus, the rules and the dashboard during the demo ----------

/// Metrics the dashboard uses that the demo cannot produce: over TLS 1.3 no chain is visible, so
/// no certificate expiry is known from traffic. Every other panel must show data.
const NOT_IN_DEMO: [&str; 1] = ["trustwatch_cert_not_after_timestamp_seconds"];

/// Grafana's variables as the test's queries use them.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$__interval", "5s")
        .replace("$__range", "5m")
        .replace("$node", ".*")
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("trustwatch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The demo scenario (Go CloudCore and edges, switch to CA_B) with `trustwatch live` scraped every
/// second by a real Prometheus evaluating rules.yaml every second: while healthy no alert is pending
/// or firing; after the switch KubeEdgeTrustCollapse goes pending, then firing (its `for` is 30 s);
/// no other alert fires; every dashboard query returns data (or names a metric this build does not
/// export yet). About 70 s.
#[test]
fn prometheus_fires_the_collapse_alert_during_the_demo_and_every_panel_has_data() -> Result<()> {
    let ports = Ports::free()?;
    let closed = free_port()?;
    let prometheus = Prometheus::start(
        &[Target {
            addr: Ports::addr(ports.http),
            labels: vec![("node".into(), "node-a".into())],
        }],
        &[deploy().join("prometheus/rules.yaml")],
        Duration::from_secs(1),
    )?;
    let loaded = prometheus.alert_rules()?;
    assert_eq!(loaded.len(), 8, "{loaded:?}");

    let (tx, rx) = mpsc::channel();
    let o = Options {
        ports,
        narrate: false,
        switch_after: Duration::from_secs(15),
        run_for: Some(Duration::from_secs(60)),
        // Host names for the probes (resolved by the monitor), and one replica that is down.
        probe_host: "localhost".into(),
        monitor_args: vec!["--probe-ca".into(), format!("https://localhost:{closed}")],
        phases: Some(tx),
        casecret: true,
        ..Options::quick(BIN.into())
    };
    // The Go peer is built before the clock starts: from an empty Go cache (a fresh clone) the
    // build alone takes ~33 s here, which the phase limits below are not about.
    go::binary()?;
    let run = std::thread::spawn(move || scenario::run(&o).map_err(|e| e.to_string()));

    let wait_phase = |want: Phase, limit: Duration| -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(p) if p == want => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err(format!("no {want:?} within {limit:?}").into()),
            }
        }
    };
    wait_phase(Phase::MonitorUp, Duration::from_secs(30))?;
    // Healthy: from two evaluations after the first successful scrape (Prometheus applies its
    // targets up to 5 s after starting; until then TrustwatchDown is rightly pending) until the
    // switch, nothing pending or firing.
    let mut up_at: Option<Instant> = None;
    let mut healthy_checks = 0;
    let mut switched = false;
    while !switched {
        if up_at.is_none() && !prometheus.query("up{job=\"trustwatch\"} == 1")?.is_empty() {
            up_at = Some(Instant::now());
        }
        if up_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            let alerts = prometheus.alerts()?;
            assert!(alerts.is_empty(), "healthy phase: {alerts:?}");
            healthy_checks += 1;
        }
        switched = matches!(
            rx.recv_timeout(Duration::from_millis(500)),
            Ok(Phase::Switched)
        );
    }
    assert!(healthy_checks >= 8, "{healthy_checks} healthy checks");
    let switch_at = Instant::now();

    // The collapse: pending, then firing.
    let mut pending_at = None;
    let mut firing_at = None;
    let deadline = switch_at + Duration::from_secs(45);
    while firing_at.is_none() && Instant::now() < deadline {
        for (name, state, labels) in prometheus.alerts()? {
            if name == "KubeEdgeTrustCollapse" {
                assert_eq!(labels["service"], "cloudhub", "{labels}");
                assert_eq!(labels["node"], "node-a", "{labels}");
                match state.as_str() {
                    "pending" => {
                        pending_at.get_or_insert(switch_at.elapsed());
                    }
                    "firing" => {
                        firing_at.get_or_insert(switch_at.elapsed());
                    }
                    _ => {}
                }
            } else {
                assert_ne!(state, "firing", "{name} fires during the demo: {labels}");
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let pending_at = pending_at.ok_or("KubeEdgeTrustCollapse never pending")?;
    let firing_at = firing_at.ok_or("KubeEdgeTrustCollapse never firing within 45 s")?;
    assert!(pending_at < firing_at, "{pending_at:?} then {firing_at:?}");
    eprintln!(
        "deploy e2e: KubeEdgeTrustCollapse pending {:.1} s and firing {:.1} s after the switch",
        pending_at.as_secs_f64(),
        firing_at.as_secs_f64()
    );

    // Every dashboard query, while collapsed.
    let exported = http::get(Ports::addr(ports.http), "/metrics")?.1;
    let d: Value = serde_json::from_str(&std::fs::read_to_string(
        deploy().join("components/grafana-dashboard/trustwatch.json"),
    )?)?;
    for (title, expr) in dashboard_queries(&d) {
        let q = grafana_to_promql(&expr);
        if !prometheus.query(&q)?.is_empty() {
            continue;
        }
        let missing: Vec<String> = metric_names(&expr)
            .into_iter()
            .filter(|m| !exported.contains(&format!("\n{m}")) && !exported.starts_with(m.as_str()))
            .collect();
        assert!(
            !missing.is_empty() && missing.iter().all(|m| NOT_IN_DEMO.contains(&m.as_str())),
            "panel {title:?}: no data for {q} (not exported: {missing:?})"
        );
    }
    // The replica that is down, named by host name, shows up as probe errors of its address.
    let errors = prometheus.query("trustwatch_probe_errors_total")?;
    assert!(
        errors
            .iter()
            .any(|e| e["metric"]["target"] == format!("127.0.0.1:{closed}")),
        "{errors:?}"
    );

    let report = run.join().map_err(|_| "scenario panicked")??;
    assert!(
        report.collapse().is_some(),
        "the monitor detected the collapse"
    );
    assert_eq!(report.monitor_exit, Some(0));
    Ok(())
}

// ---------- every file under deploy/ ----------

/// Which test exercises each file under deploy/: a new file must be added here with its test.
#[test]
fn every_file_under_deploy_is_exercised() -> Result<()> {
    let by_test: [(&str, &[&str]); 8] = [
        (
            "manifests_render_and_keep_their_security_promises, rendered_manifests_validate_against_the_kubernetes_schemas, checkov_findings_are_exactly_the_accepted_ones (kubectl kustomize)",
            &[
                "kustomization.yaml",
                "base/kustomization.yaml",
                "base/daemonset.yaml",
                "base/service.yaml",
                "base/serviceaccount.yaml",
                "components/source-pcap/kustomization.yaml",
                "components/source-ebpf/kustomization.yaml",
                "components/all-replicas/kustomization.yaml",
                "components/all-replicas/cloudcore-replicas.yaml",
                "components/prometheus-operator/kustomization.yaml",
                "components/prometheus-operator/servicemonitor.yaml",
                "components/grafana-dashboard/kustomization.yaml",
                "components/cloudcore-readiness/kustomization.yaml",
                "overlays/operator/kustomization.yaml",
                "overlays/ebpf/kustomization.yaml",
                "examples/cloudcore-readiness/kustomization.yaml",
                "examples/cloudcore-readiness/cloudcore.yaml",
            ],
        ),
        (
            "checkov_findings_are_exactly_the_accepted_ones",
            &["checkov-accepted.yaml"],
        ),
        (
            "alert_rules_check_and_pass_their_unit_tests (promtool), the e2e test (Prometheus)",
            &[
                "prometheus/rules.yaml",
                "prometheus/rules.test.yaml",
                "prometheus/scrape-config.yaml",
                "components/prometheus-operator/prometheusrule.yaml",
                "RUNBOOK.md",
            ],
        ),
        (
            "dashboard_is_grafana_json_with_one_query_per_target, the e2e test (every query)",
            &["components/grafana-dashboard/trustwatch.json"],
        ),
        (
            "readiness_check_follows_the_simulated_cloudcore_ca_switch",
            &[
                "components/cloudcore-readiness/readiness.yaml",
                "image/bundle.sh",
            ],
        ),
        (
            "image_dockerfile_uses_existing_sources_and_the_project_build",
            &["image/Dockerfile"],
        ),
        (
            "image_file_capabilities_let_a_non_root_user_capture",
            &["image/install.sh"],
        ),
        ("(none)", &[]),
    ];
    let listed: BTreeSet<String> = by_test
        .iter()
        .flat_map(|(_, files)| files.iter().map(|f| f.to_string()))
        .collect();
    let mut on_disk = BTreeSet::new();
    let mut stack = vec![deploy()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(deploy())?.to_string_lossy().into_owned();
                on_disk.insert(rel);
            }
        }
    }
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&on_disk).collect();
    assert!(
        unlisted.is_empty(),
        "files under deploy/ no test exercises: {unlisted:?}"
    );
    assert!(gone.is_empty(), "listed but missing: {gone:?}");
    Ok(())
}
