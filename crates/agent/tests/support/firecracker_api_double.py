#!/usr/bin/env python3
"""A test double for Firecracker's API, used by crates/agent/src/vmm/firecracker/tests.rs.

Our development and CI machines have no hardware KVM and no firecracker binary, so the driver's
own tests run against this instead. It proves the driver's process handling and API traffic,
nothing about booting: it serves the API socket given by --api-sock, appends every request
(method, path, JSON body, working directory) as one JSON line to $FC_DOUBLE_LOG, answers 204,
and for /snapshot/create writes the two files a real Firecracker would. A request to the path
in $FC_DOUBLE_REFUSE is answered 400 with a fault_message, as Firecracker does.
"""
import http.server
import json
import os
import socketserver
import sys

args = sys.argv[1:]
api_socket = args[args.index("--api-sock") + 1]
log_path = os.environ["FC_DOUBLE_LOG"]
refused_path = os.environ.get("FC_DOUBLE_REFUSE")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_request(self):
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"null")
        with open(log_path, "a") as log:
            record = {"method": self.command, "path": self.path, "body": body, "cwd": os.getcwd()}
            log.write(json.dumps(record) + "\n")
        if self.path == refused_path:
            self.answer(400, json.dumps({"fault_message": "refused by the test double"}).encode())
            return
        if self.path == "/snapshot/create":
            for key in ("snapshot_path", "mem_file_path"):
                with open(body[key], "w") as saved:
                    saved.write(key)
        self.answer(204)

    do_GET = do_PUT = do_PATCH = handle_request


class Server(socketserver.UnixStreamServer):
    def get_request(self):
        request, _ = super().get_request()
        return request, ("api-client", 0)


Server(api_socket, Handler).serve_forever()
