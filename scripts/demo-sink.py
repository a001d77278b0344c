"""The demo's legitimate webhook receiver: an HTTP sink for Alertmanager's webhook POSTs.

Usage: demo-sink.py ADDRESS PORT RECORD_FILE

Serves on ADDRESS:PORT (the demo runs it on 127.0.0.1:5001 inside the demo's network
namespace) and appends every POST it receives to RECORD_FILE as one JSON line:
{"path": ..., "body": <the webhook payload>}. Answers 200 to each.
"""
import http.server
import json
import sys

address, port, record = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            payload = json.loads(body)
        except ValueError:
            payload = body.decode("utf-8", "replace")
        with open(record, "a", encoding="utf-8") as f:
            f.write(json.dumps({"path": self.path, "body": payload}) + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer((address, port), Sink).serve_forever()
