"""The demo's workload: a stand-in for Alertmanager sending two notifications.

It runs inside the demo's cgroup and a fresh network namespace (only `lo`, no route out), so
nothing it does can leave this machine. It serves a webhook sink on 127.0.0.1:8080, POSTs an
alert to it (allowed by the demo policy), then POSTs to the cloud metadata service (denied by
the enforcer: the call fails with EPERM at once, no packet is sent).
"""
import http.server
import json
import subprocess
import threading
import urllib.request

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

received = []


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 8080), Sink)
threading.Thread(target=server.serve_forever, daemon=True).start()

alert = json.dumps({"alerts": [{"labels": {"alertname": "DemoAlwaysFiring"}}]}).encode()
for name, url in [
    ("legitimate receiver", "http://127.0.0.1:8080/hook"),
    ("malicious receiver ", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=alert), timeout=5) as r:
            print(f"  {name} {url}\n      -> HTTP {r.status}, delivered")
    except urllib.error.URLError as e:
        print(f"  {name} {url}\n      -> FAILED: {e.reason}")
print(f"  the sink received {len(received)} alert(s)")
server.shutdown()
