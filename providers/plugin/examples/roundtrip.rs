//! Prints what a call through the plugin host costs with the dns-records example: the start of a
//! plugin (spawn and describe), and the round trip of observe and apply, as percentiles.
//!
//! `cargo run --release -p keelson-provider-plugin --example roundtrip [-- CALLS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_provider_api::{DesiredResource, IdempotencyKey, Owner, Provider, ResourceId};
use keelson_provider_plugin::{HostConfig, PluginHost, PluginProvider};

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1e6 / samples.len() as f64;
    format!("mean {mean:8.1} µs   p50 {:8.1} µs   p99 {:8.1} µs   max {:8.1} µs", at(0.5), at(0.99), at(1.0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2000);
    let plugin = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/dns-records/dns-records");
    let dir = std::env::temp_dir().join(format!("keelson-roundtrip-{}", std::process::id()));
    let mut starts = Vec::new();
    for _ in 0..10 {
        let host =
            PluginHost::new(HostConfig::new("dns", vec![plugin.into(), "--dir".into(), dir.display().to_string()]));
        let t = Instant::now();
        host.start().await.expect("the example starts");
        starts.push(t.elapsed());
    }
    println!("start (spawn + describe), 10 runs:  {}", percentiles(starts));

    let host = Arc::new(PluginHost::new(HostConfig::new(
        "dns",
        vec![plugin.into(), "--dir".into(), dir.display().to_string()],
    )));
    let provider = PluginProvider::connect(host).await.expect("connect");
    let kind = provider.descriptor().kinds[0].clone();
    let id = ResourceId::namespaced("dns", &kind.api_version, &kind.kind, "bench", "roundtrip");
    let resource = DesiredResource {
        id: id.clone(),
        owner: Owner { app: "bench".into() },
        digest: "sha256:1".into(),
        spec: kind.example.valid.clone(),
    };
    let mut applies = Vec::with_capacity(calls);
    for step in 0..calls {
        let key = IdempotencyKey { app: "bench".into(), rollout: 1, step: step as u32, resource: id.to_string() };
        let t = Instant::now();
        provider.apply(&resource, &key).await.expect("apply");
        applies.push(t.elapsed());
    }
    let mut observes = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let answer = provider.observe(std::slice::from_ref(&id)).await;
        assert!(answer[0].1.is_ok());
        observes.push(t.elapsed());
    }
    println!("apply (unchanged), {calls} calls:     {}", percentiles(applies));
    println!("observe (1 id), {calls} calls:        {}", percentiles(observes));
    let _ = std::fs::remove_dir_all(&dir);
}
