//! An `ssh://` remote served by an `sshd` (Debian's openssh-server) the test starts on loopback:
//! a key file, the host key checked against a `known_hosts` file, the status branch pushed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keelson_e2e::{Daemon, git, template_repo};

const SSHD: &str = "/usr/sbin/sshd";

/// Kills the sshd it started when dropped.
struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", path.to_str().unwrap()])
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn an_ssh_remote_is_fetched_with_a_key_and_a_checked_host_key() {
    if !Path::new(SSHD).exists() || Command::new("ssh").arg("-V").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "{SSHD} is missing (scripts/test installs openssh-server)");
        eprintln!("SKIP: no {SSHD}");
        return;
    }
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_owned();
    let (tmp, seed) = template_repo();
    let dir = tmp.path();
    let origin = dir.join("origin.git");
    git(dir, &["clone", "-q", "--bare", seed.to_str().unwrap(), origin.to_str().unwrap()]);
    let (host_key, client_key, other_key) = (dir.join("host_key"), dir.join("id_ed25519"), dir.join("other_key"));
    for k in [&host_key, &client_key, &other_key] {
        keygen(k);
    }
    let authorized = dir.join("authorized_keys");
    std::fs::copy(dir.join("id_ed25519.pub"), &authorized).unwrap();
    // sshd needs its privilege-separation directory (made by the package's service, not by us
    // when it is not running).
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = free_port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nStrictModes no\n\
             UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             AllowUsers {user}\n",
            host_key.display(),
            authorized.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
    let _sshd = Sshd(
        Command::new(SSHD)
            .args(["-D", "-e", "-f", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd did not listen: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
    let other_pub = std::fs::read_to_string(dir.join("other_key.pub")).unwrap();
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();

    let url = format!("ssh://{user}@127.0.0.1:{port}{}", origin.display());
    let data = dir.join("data");
    let d = Daemon::start(
        &[
            "daemon",
            "--repo",
            &url,
            "--ssh-key-file",
            client_key.to_str().unwrap(),
            "--known-hosts-file",
            known_hosts.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--poll-interval",
            "300ms",
            "--push-interval",
            "200ms",
            "--sim-rollout-time",
            "100ms",
        ],
        dir,
    );
    d.wait_all_healthy(4, "four apps Healthy over ssh", Duration::from_secs(60));
    let cache = data.join("source.git");
    d.wait_for("the status branch pushed over ssh", Duration::from_secs(30), |_| {
        let ours = git(&cache, &["rev-parse", "refs/heads/keelson/status"]);
        let theirs = Command::new("git")
            .args(["--git-dir", origin.to_str().unwrap(), "rev-parse", "refs/heads/keelson/status"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&theirs.stdout).trim() == ours).then_some(())
    });

    // Another host key for this address: refused, one clear error, never a prompt.
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {other_pub}")).unwrap();
    let error = d.wait_for("a host key error", Duration::from_secs(20), |d| {
        let e = d.json("/api/v1/status")["source"]["remote"]["error"].clone();
        (!e.is_null()).then_some(e)
    });
    assert_eq!(error["cause"], "hostKey", "{error}");
    assert_eq!(d.get("/readyz").0, 200);
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
    d.wait_for("the error to clear", Duration::from_secs(20), |d| {
        d.json("/api/v1/status")["source"]["remote"]["error"].is_null().then_some(())
    });
    assert_eq!(d.terminate(), 0);
}
