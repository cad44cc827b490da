#!/usr/bin/env python3
"""Runs pr-comment.py against a small fake of GitHub's and GitLab's comment APIs on loopback:
the first run posts one comment, the second updates that same comment, other people's comments
are left alone, and an API error exits 2. `cargo test -p keelson-e2e --test review` runs this."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "pr-comment.py")


class Forge:
    def __init__(self):
        # Someone else's comments, enough of them that the script must page.
        self.comments = {i: {"id": i, "body": f"looks good {i}"} for i in range(1, 121)}
        self.next_id = 1000
        self.requests = []


def handler(forge):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, value):
            data = json.dumps(value).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"null")

        def authorized(self):
            return self.headers.get("Authorization") == "Bearer gh-token" or self.headers.get("PRIVATE-TOKEN") == "gl-token"

        def handle_any(self, method):
            url = urlparse(self.path)
            forge.requests.append((method, self.path))
            if not self.authorized():
                return self.reply(401, {"message": "Bad credentials"})
            parts = url.path.strip("/").split("/")
            query = dict(q.split("=") for q in url.query.split("&") if q)
            # GitHub: /repos/o/r/issues/7/comments and /repos/o/r/issues/comments/ID
            # GitLab: /api/v4/projects/42/merge_requests/7/notes[/ID]
            is_list = parts[-1] in ("comments", "notes") and parts[-2] != "issues"
            if method == "GET" and is_list:
                page, per = int(query.get("page", 1)), int(query.get("per_page", 30))
                items = sorted(forge.comments.values(), key=lambda c: c["id"])
                return self.reply(200, items[(page - 1) * per : page * per])
            if method == "POST" and is_list:
                forge.next_id += 1
                forge.comments[forge.next_id] = {"id": forge.next_id, "body": self.body()["body"]}
                return self.reply(201, forge.comments[forge.next_id])
            if method in ("PATCH", "PUT") and parts[-1].isdigit():
                cid = int(parts[-1])
                if cid not in forge.comments:
                    return self.reply(404, {"message": "Not Found"})
                forge.comments[cid]["body"] = self.body()["body"]
                return self.reply(200, forge.comments[cid])
            return self.reply(404, {"message": f"no route {method} {url.path}"})

        def do_GET(self):
            self.handle_any("GET")

        def do_POST(self):
            self.handle_any("POST")

        def do_PATCH(self):
            self.handle_any("PATCH")

        def do_PUT(self):
            self.handle_any("PUT")

    return H


def run(env, *args):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CI_"))}
    full.update(env)
    return subprocess.run([sys.executable, SCRIPT, *args], env=full, capture_output=True, text=True, timeout=60)


def check(forge_name, env, plan_file, forge):
    out = run(env, "--forge", forge_name, "--body-file", plan_file, "--pr", "7")
    assert out.returncode == 0, out.stderr
    assert "posted" in out.stdout, out.stdout
    mine = [c for c in forge.comments.values() if c["body"].startswith("<!-- keelson-plan -->")]
    assert len(mine) == 1, mine
    with open(plan_file, "a") as f:
        f.write("\nsecond push\n")
    out = run(env, "--forge", forge_name, "--body-file", plan_file, "--pr", "7")
    assert out.returncode == 0, out.stderr
    assert "updated" in out.stdout, out.stdout
    mine = [c for c in forge.comments.values() if c["body"].startswith("<!-- keelson-plan -->")]
    assert len(mine) == 1 and mine[0]["body"].endswith("second push\n"), mine
    assert all(c["body"].startswith("looks good") for c in forge.comments.values() if c not in mine)
    assert any(m == "GET" and "page=2" in p for m, p in forge.requests), "the script pages past 100 comments"
    bad = dict(env)
    for k in ("GITHUB_TOKEN", "KEELSON_GITLAB_TOKEN"):
        if k in bad:
            bad[k] = "wrong"
    out = run(bad, "--forge", forge_name, "--body-file", plan_file, "--pr", "7")
    assert out.returncode == 2 and "401" in out.stderr, (out.returncode, out.stderr)


def main():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("github", "gitlab"):
            forge = Forge()
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler(forge))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            base = f"http://127.0.0.1:{server.server_address[1]}"
            plan = os.path.join(tmp, f"{name}.md")
            with open(plan, "w") as f:
                f.write("### Keelson plan `a`..`b`\n\n| x | y |\n|---|---|\n")
            if name == "github":
                env = {"GITHUB_API_URL": base, "GITHUB_REPOSITORY": "acme/state", "GITHUB_TOKEN": "gh-token"}
            else:
                env = {"CI_API_V4_URL": f"{base}/api/v4", "CI_PROJECT_ID": "42", "KEELSON_GITLAB_TOKEN": "gl-token"}
            check(name, env, plan, forge)
            server.shutdown()
            print(f"ok {name}")


if __name__ == "__main__":
    main()
