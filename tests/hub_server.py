#!/usr/bin/env python3
"""hub_server.py — a stand-in for the Hugging Face hub on 127.0.0.1, for tests/cli/hub.sh
(python3's standard library only). It serves one folder as a model repo in the hub's URL layout:

  GET  /api/models/{id}/revision/main      {"id", "sha", "siblings": [{"rfilename"}]}
  GET  /api/models/{id}/tree/{rev}         [{"type", "path", "size", "oid", "lfs"}] (what
                                           huggingface_hub's snapshot_download lists)
  HEAD /{id}/resolve/{rev}/{file}          a regular file: 200, ETag (its git oid),
  GET  /{id}/resolve/{rev}/{file}          X-Repo-Commit; a *.safetensors (LFS) file: 302
                                           to its storage, with X-Linked-Etag (sha256),
                                           X-Linked-Size, X-Repo-Commit
  GET  /cdn/{sha256}/{file}                the storage, at http://localhost:PORT (another
                                           host name: a client must not send its token)
  Range: bytes=N- → 206 + Content-Range, on the files and the storage

--repo ID serves --root; --gated ID answers 401 without "Authorization: Bearer --token"
(and serves --root with it); --renamed ID answers with relative 307 redirects to --repo, as the
hub does for a renamed repo; any other id is 404. --drop N: the first N GETs of a
*.safetensors file send the headers and half the bytes, then drop the connection. Writes the
port it listens on (a free one) to --port-file, and one line per request to --log.
"""
import argparse
import hashlib
import http.server
import json
import os
import re
import sys
import threading

SHA = "0123456789abcdef0123456789abcdef01234567"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--gated", default="")
    ap.add_argument("--renamed", default="")
    ap.add_argument("--token", default="secret")
    ap.add_argument("--drop", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    files = sorted(f for f in os.listdir(a.root) if os.path.isfile(os.path.join(a.root, f)))
    lock = threading.Lock()
    state = {"drops": a.drop}
    log = open(a.log, "a", buffering=1)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def send_json(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def redirect(self, code, location, headers=()):
            self.send_response(code)
            self.send_header("Location", location)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def repo_ok(self, rid):
            if rid == a.repo:
                return True
            if rid == a.renamed:  # relative redirects to the new name
                self.redirect(307, self.path.replace("/" + a.renamed + "/", "/" + a.repo + "/", 1))
                return False
            if rid == a.gated:
                if self.headers.get("Authorization") == "Bearer " + a.token:
                    return True
                self.send_json(401, {"error": "Access to model %s is restricted." % rid})
                return False
            self.send_json(404, {"error": "Repository not found"})
            return False

        def handle_one(self):
            with lock:
                log.write("%s %s range=%s auth=%s\n" % (self.command, self.path,
                          self.headers.get("Range"), self.headers.get("Authorization")))
            path = self.path.split("?")[0]
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
            if m and self.command == "GET":  # huggingface_hub's snapshot_download lists this
                if self.repo_ok(m.group(1)):
                    tree = []
                    for f in files:
                        data = open(os.path.join(a.root, f), "rb").read()
                        e = {"type": "file", "path": f, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        if f.endswith(".safetensors"):
                            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                        tree.append(e)
                    self.send_json(200, tree)
                return
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/main", path)
            if m and self.command == "GET":
                if self.repo_ok(m.group(1)):
                    self.send_json(200, {"id": m.group(1), "sha": SHA,
                                         "siblings": [{"rfilename": f} for f in files + [".gitattributes"]]})
                return
            m = re.fullmatch(r"/cdn/([0-9a-f]{64})/(.+)", path)
            if m and m.group(2) in files:
                return self.serve(m.group(2), lfs=True)
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if not m:
                return self.send_json(404, {"error": "no such page"})
            rid, rev, name = m.groups()
            if not self.repo_ok(rid):
                return
            if rev not in (SHA, "main") or name not in files:
                return self.send_json(404, {"error": "Entry not found"})
            data = open(os.path.join(a.root, name), "rb").read()
            if name.endswith(".safetensors"):  # LFS: 302 to the storage, linked etag and size
                sha = hashlib.sha256(data).hexdigest()
                port = self.server.server_address[1]
                return self.redirect(302, "http://localhost:%d/cdn/%s/%s" % (port, sha, name), [
                    ("X-Repo-Commit", SHA), ("ETag", '"%s"' % hashlib.sha1(data).hexdigest()),
                    ("X-Linked-Etag", '"%s"' % sha), ("X-Linked-Size", str(len(data)))])
            self.serve(name, lfs=False)

        def serve(self, name, lfs):
            data = open(os.path.join(a.root, name), "rb").read()
            start, code = 0, 200
            r = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if r:
                start, code = int(r.group(1)), 206
                if start >= len(data):
                    return self.send_json(416, {"error": "range not satisfiable"})
            self.send_response(code)
            self.send_header("Content-Length", str(len(data) - start))
            if lfs:  # the storage: the file's sha256 as its etag
                self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
            else:  # a regular (git) file: its git oid, and the commit
                self.send_header("ETag", '"%s"' % hashlib.sha1(data).hexdigest())
                self.send_header("X-Repo-Commit", SHA)
            if code == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            body = data[start:]
            drop = False
            with lock:
                if name.endswith(".safetensors") and state["drops"] > 0:
                    state["drops"] -= 1
                    drop = True
            if drop:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

        do_GET = do_HEAD = handle_one

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, a.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
