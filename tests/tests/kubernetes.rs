//! The real daemon on the Kubernetes provider against the in-memory API server:
//! `keelson up --kubeconfig` applies the template with server-side apply, the objects read back
//! as rendered, and removing an app prunes exactly its objects.

use std::time::Duration;

use keelson_e2e::{Daemon, git, template_repo};
use keelson_kube_testserver::{Options, TestServer};

fn start_server() -> (tokio::runtime::Runtime, TestServer) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), TestServer::start(Options::default())).await })
        .expect("the API server starts in time")
        .expect("the API server starts");
    (rt, server)
}

/// (kind, namespace/name) of the service accounts and services Keelson manages in the namespaces
/// of the apps that stay.
fn keelson_objects(server: &TestServer) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ns in ["web", "platform", "ml"] {
        for kind in ["ServiceAccount", "Service"] {
            for o in server.list("v1", kind, Some(ns)).unwrap() {
                if o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "keelson" {
                    out.push((kind.to_owned(), format!("{ns}/{}", o["metadata"]["name"].as_str().unwrap())));
                }
            }
        }
    }
    out
}

#[test]
fn up_with_a_kubeconfig_applies_the_template_and_prunes_exactly_a_removed_apps_objects() {
    let (rt, server) = start_server();
    let (tmp, repo) = template_repo();
    let kubeconfig = tmp.path().join("kubeconfig");
    server.kubeconfig(&kubeconfig).unwrap();
    let args = [
        "up",
        "--dir",
        repo.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ];
    let d = Daemon::start(&args, tmp.path());
    d.wait_all_healthy(4, "four apps Healthy on Kubernetes", Duration::from_secs(90));

    let status = d.json("/api/v1/status");
    assert_eq!(status["providers"]["simulated"], false, "{}", status["providers"]);
    assert_eq!(status["providers"]["bindings"]["clusters"]["prod-east"]["workloads"], "kubernetes");

    // The objects read back as rendered: team namespaces, labels, the digest, Keelson's manager.
    let deployment = server.get("apps/v1", "Deployment", Some("web"), "storefront").unwrap().expect("storefront");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["metadata"]["labels"]["keelson.dev/app"], "storefront");
    assert!(deployment["metadata"]["annotations"]["keelson.dev/digest"].as_str().unwrap().starts_with("sha256:"));
    let managers: Vec<&str> = deployment["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["operation"] == "Apply")
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["keelson"], "{deployment}");
    assert_eq!(deployment["status"]["availableReplicas"], 3, "Healthy means available");
    let ingress = server.get("networking.k8s.io/v1", "Ingress", Some("web"), "storefront").unwrap().expect("ingress");
    assert_eq!(ingress["spec"]["tls"][0]["hosts"][0], "shop.example.com");
    let gpu = server.get("apps/v1", "Deployment", Some("ml"), "llm-inference").unwrap().expect("llm-inference");
    let pod = &gpu["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(pod["nodeSelector"]["keelson.dev/gpu-model"], "H100");
    assert!(server.get("v1", "Service", Some("platform"), "postgres").unwrap().is_some());

    // Remove one app: exactly its objects are pruned, everything else stays.
    let before = keelson_objects(&server);
    assert!(server.get("apps/v1", "Deployment", Some("payments"), "order-worker").unwrap().is_some());
    git(&repo, &["rm", "-rq", "apps/order-worker"]);
    git(&repo, &["commit", "-qm", "Retire order-worker"]);
    d.wait_for("order-worker pruned", Duration::from_secs(60), |_| {
        let gone = server.get("apps/v1", "Deployment", Some("payments"), "order-worker").unwrap().is_none()
            && server.get("v1", "ServiceAccount", Some("payments"), "order-worker").unwrap().is_none();
        gone.then_some(())
    });
    let after = keelson_objects(&server);
    assert_eq!(before, after, "other apps' objects are untouched");
    for (ns, name) in [("web", "storefront"), ("platform", "postgres"), ("ml", "llm-inference")] {
        assert!(server.get("apps/v1", "Deployment", Some(ns), name).unwrap().is_some(), "{name} survived");
    }
    let deletes: Vec<_> = server.requests().into_iter().filter(|r| r.method == "DELETE").collect();
    assert!(deletes.iter().all(|r| r.path.contains("/namespaces/payments/")), "{deletes:?}");
    assert_eq!(d.terminate(), 0);
    rt.block_on(server.shutdown());
}
