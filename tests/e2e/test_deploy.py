"""The deployment files in deploy/ as files: every YAML document parses, every Argus command they run is one the
binary accepts, every ARGUS_*/AWS_* variable they set is one Argus reads (a flag's environment variable, shown by
`--help`, or one the code reads directly), and the probes point at the health endpoints."""

import glob
import os
import re
import subprocess

import yaml

from helpers import BIN

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DEPLOY = os.path.join(ROOT, "deploy")
# Read by object_store's S3 client from the environment (credentials, session, region, endpoint).
AWS_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ALLOW_HTTP"}


def known_variables():
    names = set(AWS_VARS)
    for sub in ("serve", "worker"):
        out = subprocess.run([BIN, sub, "--help"], capture_output=True, text=True, check=True).stdout
        names |= set(re.findall(r"\[env: ([A-Z0-9_]+)", out))
    for path in glob.glob(os.path.join(ROOT, "crates", "*", "src", "**", "*.rs"), recursive=True):
        text = open(path).read()
        names |= set(re.findall(r'env::var\("(ARGUS_[A-Z0-9_]+)"\)', text))
        names |= set(re.findall(r'try_from_env\("(ARGUS_[A-Z0-9_]+)"\)', text))
    return names


def documents():
    for path in sorted(glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True)):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    yield path, doc


def env_file(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def containers(doc):
    """(name, args, env names, probes) of each Argus container or compose service in a document."""
    if "services" in doc:
        for name, svc in doc["services"].items():
            if "argus" not in str(svc.get("image", "")):
                continue
            env = set((svc.get("environment") or {}).keys())
            env |= set(env_file(os.path.join(DEPLOY, "cluster.env.example")))
            probe = " ".join(svc.get("healthcheck", {}).get("test", []))
            yield name, svc.get("command", []), env, [probe]
    elif doc.get("kind") == "Deployment":
        for c in doc["spec"]["template"]["spec"]["containers"]:
            env = {e["name"] for e in c.get("env", [])}
            probes = [c[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")]
            yield doc["metadata"]["name"], c.get("args", []), env, probes


def test_every_yaml_document_parses_and_names_a_kind():
    docs = list(documents())
    assert {os.path.basename(p) for p, _ in docs} >= {"compose.yaml", "api.yaml", "worker.yaml", "configmap.yaml",
                                                      "secret.yaml"}
    for path, doc in docs:
        assert "services" in doc or "kind" in doc, path


def test_every_variable_the_files_set_is_one_argus_reads():
    known = known_variables()
    set_by_files = set()
    for _, doc in documents():
        if doc.get("kind") == "ConfigMap":
            set_by_files |= set(doc["data"])
        if doc.get("kind") == "Secret":
            set_by_files |= set(doc["stringData"])
        for _, _, env, _ in containers(doc):
            set_by_files |= env
    set_by_files |= set(env_file(os.path.join(DEPLOY, "cluster.env.example")))
    ours = {n for n in set_by_files if n.startswith(("ARGUS_", "AWS_"))}
    assert "ARGUS_DATABASE_URL" in ours and "ARGUS_BLOBS_URL" in ours and "ARGUS_SIGNING_KEY" in ours
    assert ours <= known, f"set in deploy/ but read by nothing: {sorted(ours - known)}"


def test_every_command_is_accepted_and_every_probe_is_a_health_endpoint():
    seen = set()
    for path, doc in documents():
        for name, args, _, probes in containers(doc):
            assert args and args[0] in ("serve", "worker"), (path, name, args)
            seen.add(args[0])
            # clap refuses an unknown flag or value before it gets to --help.
            r = subprocess.run([BIN, *args, "--help"], capture_output=True, text=True)
            assert r.returncode == 0, (path, name, args, r.stderr)
            assert all(("/readyz" in p or "/healthz" in p) for p in probes), (path, name, probes)
    assert seen == {"serve", "worker"}
