#!/usr/bin/env python3
"""Post `keelson plan -o markdown` as one comment on a pull request (GitHub) or merge request
(GitLab), and update that same comment on every later push instead of adding another.

The comment is found again by a hidden marker on its first line. Only the Python standard library
is used, so it runs on any CI image with python3.

    keelson plan --base origin/main --head HEAD -o markdown > plan.md
    python3 pr-comment.py --forge github --body-file plan.md     # GITHUB_TOKEN, GITHUB_REPOSITORY, PR
    python3 pr-comment.py --forge gitlab --body-file plan.md     # KEELSON_GITLAB_TOKEN, CI_* variables

Exit codes: 0 posted or updated, 2 usage or an API error (the message names the request).
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

MARKER = "<!-- keelson-plan -->"
# GitHub and GitLab both refuse bodies past about 65,000 characters.
LIMIT = 60000


class ApiError(Exception):
    pass


def request(method, url, headers, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    for k, v in headers.items():
        req.add_header(k, v)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode() or "null"
            return json.loads(text), resp.headers
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        raise ApiError(f"{method} {url} answered {e.code}: {detail}") from None
    except urllib.error.URLError as e:
        raise ApiError(f"{method} {url} failed: {e.reason}") from None


def paged(url, headers):
    """Every item of a list endpoint, following `page` until a short page (both forges page so)."""
    page = 1
    while True:
        sep = "&" if "?" in url else "?"
        items, _ = request("GET", f"{url}{sep}per_page=100&page={page}", headers)
        if not isinstance(items, list):
            raise ApiError(f"GET {url} did not answer with a list")
        yield from items
        if len(items) < 100:
            return
        page += 1


def github(args, body):
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    repo = args.repo or os.environ.get("GITHUB_REPOSITORY")
    token = os.environ.get("GITHUB_TOKEN")
    pr = args.pr
    if pr is None and os.environ.get("GITHUB_EVENT_PATH"):
        with open(os.environ["GITHUB_EVENT_PATH"]) as f:
            pr = (json.load(f).get("pull_request") or {}).get("number")
    if not (repo and token and pr):
        raise SystemExit("usage: GITHUB_TOKEN, GITHUB_REPOSITORY (or --repo) and a pull request (--pr, or the event) are needed")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
    comments = f"{api}/repos/{repo}/issues/{pr}/comments"
    mine = next((c for c in paged(comments, headers) if (c.get("body") or "").startswith(MARKER)), None)
    if mine:
        request("PATCH", f"{api}/repos/{repo}/issues/comments/{mine['id']}", headers, {"body": body})
        return f"updated comment {mine['id']} on {repo}#{pr}"
    created, _ = request("POST", comments, headers, {"body": body})
    return f"posted comment {created.get('id')} on {repo}#{pr}"


def gitlab(args, body):
    api = os.environ.get("CI_API_V4_URL", "https://gitlab.com/api/v4").rstrip("/")
    project = args.repo or os.environ.get("CI_PROJECT_ID")
    mr = args.pr or os.environ.get("CI_MERGE_REQUEST_IID")
    token = os.environ.get("KEELSON_GITLAB_TOKEN")
    if not (project and token and mr):
        raise SystemExit("usage: KEELSON_GITLAB_TOKEN, CI_PROJECT_ID (or --repo) and CI_MERGE_REQUEST_IID (or --pr) are needed")
    headers = {"PRIVATE-TOKEN": token}
    project = urllib.request.quote(str(project), safe="")
    notes = f"{api}/projects/{project}/merge_requests/{mr}/notes"
    mine = next((n for n in paged(notes, headers) if (n.get("body") or "").startswith(MARKER)), None)
    if mine:
        request("PUT", f"{notes}/{mine['id']}", headers, {"body": body})
        return f"updated note {mine['id']} on !{mr}"
    created, _ = request("POST", notes, headers, {"body": body})
    return f"posted note {created.get('id')} on !{mr}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--forge", choices=["github", "gitlab"], required=True)
    p.add_argument("--body-file", required=True, help="the plan as Markdown (`keelson plan -o markdown`)")
    p.add_argument("--repo", help="owner/name (GitHub) or project id or path (GitLab)")
    p.add_argument("--pr", help="pull request number (GitHub) or merge request iid (GitLab)")
    args = p.parse_args()
    with open(args.body_file, encoding="utf-8") as f:
        plan = f.read()
    if len(plan) > LIMIT:
        # Cut between blocks, never inside a folded diff or a table: the diffs come last.
        cut = plan.rfind("\n<details>", 0, LIMIT)
        if cut <= 0:
            cut = plan.rfind("\n\n", 0, LIMIT)
        plan = plan[: max(cut, 0)] + "\n\n_The plan is longer than a comment can hold; the job log has all of it._\n"
    body = f"{MARKER}\n{plan}"
    try:
        print(github(args, body) if args.forge == "github" else gitlab(args, body))
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
