//! Arbitrary bytes through the loader's entry points: as an app's `deploy.yaml` and as a policy
//! file in a small repository through `Loader::load` (twice, the second time from the blob
//! cache, at other paths), through `check_file` at both paths, and through `parse_config`.
//! Any panic is a bug.
#![no_main]

use keelson_manifest::{Loader, RepoFile, check_file, parse_config};
use libfuzzer_sys::fuzz_target;

const OTHER_APP: &[u8] = b"apiVersion: keelson.dev/v1alpha1
kind: App
metadata:
  name: postgres
  team: data
spec:
  image: postgres:16
  placement:
    cluster: prod-east
";

const REGO: &[u8] = b"package keelson.defaults\n";

fn repo(deploy: &str, policy: &str) -> Vec<RepoFile> {
    vec![
        RepoFile::new(deploy, "fuzz"),
        RepoFile::new("apps/x/manifests/extra.yaml", "extra"),
        RepoFile::new("apps/postgres/deploy.yaml", "postgres"),
        RepoFile::new(policy, "fuzz"),
        RepoFile::new("policies/defaults.rego", "rego"),
        RepoFile::new("apps/orphan/README.md", "readme"),
    ]
}

fuzz_target!(|data: &[u8]| {
    let mut read = |f: &RepoFile| -> std::io::Result<Vec<u8>> {
        Ok(match f.blob_id.as_str() {
            "fuzz" => data.to_vec(),
            "postgres" => OTHER_APP.to_vec(),
            "rego" => REGO.to_vec(),
            _ => b"kind: ConfigMap\n".to_vec(),
        })
    };
    let mut loader = Loader::new();
    let first = loader.load(&repo("apps/x/deploy.yaml", "policies/fuzz.yaml"), &mut read);
    let _ = first.has_errors();
    for policy in &first.desired.policies {
        let _ = policy.policy();
    }
    // Same blob at another app directory and policy name: served from the cache, relocated.
    let second = loader.load(&repo("apps/y/deploy.yaml", "policies/other.yml"), &mut read);
    let _ = second.has_errors();

    let _ = check_file("apps/x/deploy.yaml", data);
    let _ = check_file("policies/fuzz.yaml", data);
    let _ = parse_config("keelson.yaml", data);
});
