#!/usr/bin/env python3
"""Local stand-ins for the failover drill of scripts/demo-failover (never for
tests: those have their own fakes in tests/integration/fakes).

One HTTP server on 127.0.0.1 (a free port, written to PORT_FILE):
  GET  /primary/healthz   503 {"status":"down"}   (the lost primary site)
  GET  /backup/healthz    200 {"status":"ok"}     (the backup site serves)
  POST /hook              200; the JSON body is appended to HOOK_LOG
  a tiny Kubernetes API: namespace cex-app, Deployments matching-engine and
  api-gateway labelled cexdr.io/standby=true at 0 replicas; list by label
  selector, PATCH .../scale, GET .../status (rollouts finish at once), no
  StatefulSets, no HPAs.
Also creates a Route 53 hosted zone in the emulator (moto) with
api.example.com. CNAME api-primary-lb.example.com. and prints its id.

usage: demo-failover-standins.py PORT_FILE HOOK_LOG ZONE_FILE R53_ENDPOINT
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT_FILE, HOOK_LOG, ZONE_FILE, R53 = sys.argv[1:5]
LOCK = threading.Lock()
WORKLOADS = {
    name: {"replicas": 0, "generation": 1, "labels": {"app": name, "cexdr.io/standby": "true"}}
    for name in ("matching-engine", "api-gateway")
}


def deployment(name, w):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "cex-app", "labels": w["labels"],
                     "generation": w["generation"], "resourceVersion": "1"},
        "spec": {"replicas": w["replicas"], "selector": {"matchLabels": w["labels"]},
                 "template": {"metadata": {"labels": w["labels"]},
                              "spec": {"containers": [{"name": "app", "image": "cex/app:1"}]}}},
        "status": {"observedGeneration": w["generation"], "replicas": w["replicas"],
                   "updatedReplicas": w["replicas"], "readyReplicas": w["replicas"],
                   "availableReplicas": w["replicas"]},
    }


def matches(labels, selector):
    for term in filter(None, selector.split(",")):
        k, _, v = term.partition("=")
        if labels.get(k.strip()) != v.strip():
            return False
    return True


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self):
        self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": f"{self.path} not found", "reason": "NotFound", "code": 404})

    def do_GET(self):
        u = urlparse(self.path)
        parts = u.path.strip("/").split("/")
        if u.path == "/primary/healthz":
            return self.send(503, {"status": "down"})
        if u.path == "/backup/healthz":
            return self.send(200, {"status": "ok"})
        if parts[:2] == ["apis", "autoscaling"]:
            return self.send(200, {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList",
                                   "metadata": {}, "items": []})
        if parts[:2] == ["apis", "apps"] and len(parts) == 6:
            sel = parse_qs(u.query).get("labelSelector", [""])[0]
            with LOCK:
                items = [deployment(n, w) for n, w in WORKLOADS.items()
                         if parts[5] == "deployments" and matches(w["labels"], sel)]
            kind = "DeploymentList" if parts[5] == "deployments" else "StatefulSetList"
            return self.send(200, {"apiVersion": "apps/v1", "kind": kind,
                                   "metadata": {"resourceVersion": "1"}, "items": items})
        if parts[:2] == ["apis", "apps"] and len(parts) >= 7 and parts[5] == "deployments":
            with LOCK:
                w = WORKLOADS.get(parts[6])
                if w:
                    return self.send(200, deployment(parts[6], w))
        return self.not_found()

    def do_PATCH(self):
        parts = urlparse(self.path).path.strip("/").split("/")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if parts[:2] == ["apis", "apps"] and len(parts) == 8 and parts[7] == "scale":
            with LOCK:
                w = WORKLOADS.get(parts[6])
                if w is None:
                    return self.not_found()
                n = body.get("spec", {}).get("replicas", w["replicas"])
                if n != w["replicas"]:
                    w["replicas"], w["generation"] = n, w["generation"] + 1
                return self.send(200, {"apiVersion": "autoscaling/v1", "kind": "Scale",
                                       "metadata": {"name": parts[6], "namespace": "cex-app"},
                                       "spec": {"replicas": n}, "status": {"replicas": n}})
        return self.not_found()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/hook":
            with LOCK, open(HOOK_LOG, "a") as f:
                f.write(body.decode(errors="replace").replace("\n", " ") + "\n")
            return self.send(200, {"ok": True})
        return self.not_found()


def make_zone():
    import boto3
    r53 = boto3.client("route53", endpoint_url=R53, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    import uuid
    z = r53.create_hosted_zone(Name="example.com.", CallerReference=str(uuid.uuid4()))
    zid = z["HostedZone"]["Id"].split("/")[-1]
    r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {
            "Name": "api.example.com.", "Type": "CNAME", "TTL": 1,
            "ResourceRecords": [{"Value": "api-primary-lb.example.com."}]}}]})
    with open(ZONE_FILE, "w") as f:
        f.write(zid)


make_zone()
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os
os.rename(PORT_FILE + ".tmp", PORT_FILE)
srv.serve_forever()
