#!/usr/bin/env python3
"""Makes the ledger-v1 fixture with the first release's binary (cbe360e): a real daemon run on the
bundled template through scale, invalid manifest, fix, suspend, policy and quota denials, prune,
revert, and a progress-deadline failure after a restart."""
import json, os, re, shutil, signal, subprocess, sys, time, urllib.request

B = sys.argv[1]
work = sys.argv[2]
os.makedirs(work, exist_ok=True)
os.chdir(work)
env = dict(os.environ, GIT_AUTHOR_NAME="Keelson Fixture", GIT_AUTHOR_EMAIL="fixture@keelson.invalid",
           GIT_COMMITTER_NAME="Keelson Fixture", GIT_COMMITTER_EMAIL="fixture@keelson.invalid",
           GIT_AUTHOR_DATE="2026-11-30T12:00:00Z", GIT_COMMITTER_DATE="2026-11-30T12:00:00Z")
subprocess.run([B, "init", "state"], check=True, env=env, stdout=subprocess.DEVNULL)

def git(*args):
    subprocess.run(["git", "-C", "state", *args], check=True, env=env, stdout=subprocess.DEVNULL)

def start(*extra):
    p = subprocess.Popen([B, "daemon", "--repo", "state", "--listen", "127.0.0.1:0", *extra],
                         stdout=subprocess.PIPE, stderr=open("daemon.log", "a"), env=env, text=True)
    for line in p.stdout:
        m = re.match(r"listening on (http://\S+)", line.strip())
        if m:
            return p, m.group(1)
    raise SystemExit("no address")

def apps(url):
    return {a["name"]: a for a in json.load(urllib.request.urlopen(url + "/api/v1/apps"))["apps"]}

def wait(url, what, pred, limit=60):
    end = time.time() + limit
    while time.time() < end:
        try:
            a = apps(url)
            if pred(a):
                return a
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit("timed out: " + what + " " + json.dumps(apps(url), indent=1))

def edit(path, old, new):
    p = os.path.join("state", path)
    s = open(p).read()
    assert old in s, (path, old)
    open(p, "w").write(s.replace(old, new, 1))

def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(30)

healthy = lambda names: lambda a: all(n in a and a[n]["phase"] == "Healthy" for n in names)
ALL = ["postgres", "storefront", "order-worker", "llm-inference"]

p, url = start("--sim-rollout-time", "100ms")
wait(url, "all healthy", healthy(ALL))
edit("apps/storefront/deploy.yaml", "replicas: 3", "replicas: 5"); git("commit", "-qam", "Scale storefront to 5")
wait(url, "storefront 5", lambda a: a["storefront"]["phase"] == "Healthy" and a["storefront"]["desiredDigest"] and True)
time.sleep(0.5); wait(url, "healthy", healthy(ALL))
edit("apps/order-worker/deploy.yaml", "replicas: 2", "replicas: two"); git("commit", "-qam", "Break order-worker")
wait(url, "order-worker blocked", lambda a: a["order-worker"]["phase"] == "Blocked")
edit("apps/order-worker/deploy.yaml", "replicas: two", "replicas: 3"); git("commit", "-qam", "Fix order-worker")
wait(url, "order-worker healthy", lambda a: a["order-worker"]["phase"] == "Healthy")
edit("apps/storefront/deploy.yaml", "  labels:\n", "  compliance:\n    - pci\n  labels:\n")
edit("apps/storefront/deploy.yaml", "    cluster: prod-east\n", "    cluster: prod-east\n    nodePool:\n      serverClass: gp.vs1.large-iad\n")
git("commit", "-qam", "Put storefront on spot")
wait(url, "storefront denied", lambda a: a["storefront"]["phase"] == "Blocked")
git("revert", "--no-edit", "HEAD")
wait(url, "storefront back", lambda a: a["storefront"]["phase"] == "Healthy", 60)
edit("apps/llm-inference/deploy.yaml", "replicas: 2", "replicas: 9"); git("commit", "-qam", "Too many GPUs")
wait(url, "quota", lambda a: a["llm-inference"]["phase"] == "Blocked")
edit("apps/llm-inference/deploy.yaml", "replicas: 9", "replicas: 2"); edit("apps/llm-inference/deploy.yaml", "spec:\n", "spec:\n  suspend: true\n")
git("commit", "-qam", "Suspend llm-inference")
wait(url, "suspended", lambda a: a["llm-inference"]["phase"] == "Suspended")
git("rm", "-rq", "apps/order-worker"); git("commit", "-qm", "Retire order-worker")
wait(url, "pruned", lambda a: "order-worker" not in a)
git("revert", "--no-edit", "HEAD")
wait(url, "order-worker back", lambda a: "order-worker" in a and a["order-worker"]["phase"] == "Healthy")
stop(p)
# A restart with a short deadline and slow workloads: a change fails its progress deadline.
p, url = start("--sim-rollout-time", "30s", "--progress-deadline", "1s")
edit("apps/postgres/deploy.yaml", "replicas: 1", "replicas: 2"); git("commit", "-qam", "Scale postgres")
wait(url, "postgres failed", lambda a: a["postgres"]["phase"] == "Failed", 30)
stop(p)
print(json.dumps({n: a["phase"] for n, a in apps_snapshot.items()}) if False else "done")
