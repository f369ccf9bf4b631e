"""The Kubernetes manifests (`deploy/kubernetes/`): each kustomize directory renders with
`kubectl kustomize`, every object validates against the Kubernetes schemas (kubernetes-validate),
the bridge's settings in them are a configuration the bridge accepts, and the Pods have what a
platform engineer expects (probes, security context, a grace period longer than the drain).
Then the sidecar for real: a Pod of the rendered shape (app + bridge, host network) under
`podman kube play`; the app exports, the record lands in S3, and stopping the Pod drains the spool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
import uuid

import kubernetes_validate
import pytest
import requests
import yaml

from conftest import ROOT, Proxy, eventually, free_port, list_keys, new_bucket
from otel_s3_bridge.config import load_config
from otel_s3_bridge.receive.http import STOP_GRACE_SECONDS
from podman import BRIDGE_IMAGE, Podman, missing_tools

KUBERNETES = ROOT / "deploy" / "kubernetes"
SCHEMALESS_KINDS = {"ServiceMonitor"}  # a CRD of the Prometheus Operator: checked by hand below


def render(directory: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the manifests cannot be rendered here (kubectl kustomize)")
    result = subprocess.run(["kubectl", "kustomize", str(KUBERNETES / directory)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [item for item in objects if item["kind"] == kind]


def bridge_container(pod_spec: dict) -> dict:
    [container] = [c for c in pod_spec["containers"] if c["name"] == "otel-s3-bridge"]
    return container


@pytest.mark.parametrize("directory", ["standalone", "sidecar", "servicemonitor"])
def test_manifests_render_and_validate_against_the_kubernetes_schemas(directory):
    objects = render(directory)
    version = kubernetes_validate.latest_version()
    for item in objects:
        if item["kind"] in SCHEMALESS_KINDS:
            continue
        kubernetes_validate.validate(item, version, strict=True)  # raises on any unknown or wrong field
    for monitor in by_kind(objects, "ServiceMonitor"):
        [service] = by_kind(objects, "Service")
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= \
            {port["name"] for port in service["spec"]["ports"]}


@pytest.mark.parametrize("directory", ["standalone", "sidecar"])
def test_pods_are_locked_down_probed_and_outlive_the_drain(directory, tmp_path):
    objects = render(directory)
    [deployment] = by_kind(objects, "Deployment")
    [config_map] = by_kind(objects, "ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]
    bridge = bridge_container(pod)
    assert bridge["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert bridge["readinessProbe"]["httpGet"]["path"] == "/readyz"
    probe_ports = {bridge["livenessProbe"]["httpGet"]["port"], bridge["readinessProbe"]["httpGet"]["port"]}
    assert probe_ports == {"metrics"}  # plain HTTP whatever TLS the receivers serve
    assert bridge["resources"]["limits"]["memory"]
    # Everything the bridge writes is on a volume (the root filesystem is read-only).
    mounts = {mount["mountPath"] for mount in bridge["volumeMounts"]}
    assert "/var/lib/otel-s3-bridge" in mounts and "/tmp" in mounts

    # The settings are ones the bridge accepts, as its container would get them.
    environment = dict(config_map["data"])
    if "OTEL_S3_BRIDGE_TOKEN_FILE" in environment:
        [secret] = by_kind(objects, "Secret")
        token_file = tmp_path / "tokens"
        token_file.write_text(secret["stringData"]["tokens"])
        secret_mount = next(m for m in bridge["volumeMounts"] if m["name"] == "tokens")["mountPath"]
        assert environment["OTEL_S3_BRIDGE_TOKEN_FILE"].startswith(secret_mount + "/")
        environment["OTEL_S3_BRIDGE_TOKEN_FILE"] = str(token_file)
    flags = {"host": bridge["args"][bridge["args"].index("--host") + 1]} if "--host" in bridge["args"] else {}
    config = load_config(flags, environment)
    assert config.spool_dir.startswith("/var/lib/otel-s3-bridge/")
    assert pod["terminationGracePeriodSeconds"] > config.drain_seconds + STOP_GRACE_SECONDS
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.metrics_port)


def test_standalone_has_the_parts_of_a_service():
    objects = render("standalone")
    kinds = {item["kind"] for item in objects}
    assert {"Deployment", "Service", "ServiceAccount", "Secret", "ConfigMap", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "NetworkPolicy", "Ingress"} <= kinds
    [service] = by_kind(objects, "Service")
    assert {port["port"] for port in service["spec"]["ports"]} >= {4317, 4318, 9464}
    [account] = by_kind(objects, "ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    [ingress] = by_kind(objects, "Ingress")
    assert ingress["spec"]["tls"][0]["secretName"]
    paths = {path["path"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]}
    assert {"/v1/traces", "/"} <= paths  # OpenRouter posts to the URL as configured
    [deployment] = by_kind(objects, "Deployment")
    assert bridge_container(deployment["spec"]["template"]["spec"])["args"] == ["serve", "--host", "0.0.0.0"]


def test_sidecar_app_exports_to_the_bridge_on_loopback():
    objects = render("sidecar")
    [deployment] = by_kind(objects, "Deployment")
    [app] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "app"]
    environment = {item["name"]: item["value"] for item in app["env"]}
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"


# --- the sidecar Pod, played by podman -----------------------------------------------------------

APP_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time, urllib.request
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 in its container: no default action
    trace = os.urandom(16).hex()
    span = {"traceId": trace, "spanId": trace[:16], "name": "chat gpt-4o", "kind": 3,
            "startTimeUnixNano": str(time.time_ns()), "endTimeUnixNano": str(time.time_ns() + 10**9),
            "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                           {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}]}
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()
    url = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] + "/v1/traces"
    for attempt in range(120):
        try:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            print("exported", trace, urllib.request.urlopen(request, timeout=5).status, flush=True)
            break
        except OSError:
            time.sleep(0.5)  # the bridge container is still starting
    while True:
        time.sleep(3600)
""")


@pytest.fixture(scope="module")
def podman(tmp_path_factory) -> Podman:
    missing = missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (.ci/run installs them from Debian's packages)")
    podman = Podman(tmp_path_factory.mktemp("podman"))
    podman.build_bridge_image()
    return podman


def sidecar_pod(bucket: str, endpoint: str, ports: dict[str, int]) -> dict:
    """The rendered sidecar Deployment's Pod, as `podman kube play` runs it here: host network, the
    test's images, the ConfigMap's settings inlined with the test's bucket and ports, credentials for
    the local S3 server instead of IRSA. Security contexts, volumes and probes stay as rendered."""
    objects = render("sidecar")
    [deployment] = by_kind(objects, "Deployment")
    [config_map] = by_kind(objects, "ConfigMap")
    template = deployment["spec"]["template"]
    spec = template["spec"]
    spec["hostNetwork"] = True
    spec.pop("serviceAccountName", None)
    settings = {**config_map["data"], "OTEL_S3_BRIDGE_BUCKET": bucket, "OTEL_S3_BRIDGE_ENDPOINT_URL": endpoint,
                "OTEL_S3_BRIDGE_HTTP_PORT": str(ports["http"]), "OTEL_S3_BRIDGE_GRPC_PORT": str(ports["grpc"]),
                "OTEL_S3_BRIDGE_METRICS_PORT": str(ports["metrics"]), "OTEL_S3_BRIDGE_UPLOAD_RETRY_MAX_SECONDS": "1",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    for container in spec["containers"]:
        container["image"] = BRIDGE_IMAGE
        if container["name"] == "otel-s3-bridge":
            container.pop("envFrom")
            container["env"] = [{"name": name, "value": value} for name, value in settings.items()]
            for probe in ("livenessProbe", "readinessProbe"):
                container[probe]["httpGet"]["port"] = ports["metrics"]
            container["ports"] = []
        else:  # the app: the bridge image's Python sends one export, with the manifest's endpoint variable
            for item in container["env"]:
                if item["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT":
                    item["value"] = item["value"].replace(":4318", f":{ports['http']}")
            # (podman 4.3's kube play misreads a multi-line string in a Pod file: the script goes as hex)
            container["command"] = ["python3", "-c", f"exec(bytes.fromhex('{APP_SCRIPT.encode().hex()}'))"]
    name = f"sidecar-{uuid.uuid4().hex[:8]}"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": template["metadata"]["labels"]},
            "spec": spec}


@pytest.mark.slow
def test_sidecar_pod_runs_under_podman_kube_play_and_drains_when_stopped(moto, s3, tmp_path, podman):
    bucket = new_bucket(s3)
    proxy = Proxy(moto.url).start()
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    pod = sidecar_pod(bucket, proxy.url, ports)
    name = pod["metadata"]["name"]
    pod_file = tmp_path / "pod.yaml"
    pod_file.write_text(json.dumps(pod, indent=1))  # JSON is YAML, and leaves no quoting to chance
    podman("kube", "play", str(pod_file), timeout=300)
    down = None
    try:
        def logs(container: str) -> str:
            result = podman("logs", f"{name}-{container}", check=False)
            return result.stdout + result.stderr

        eventually(lambda: "exported" in logs("app"), 120, lambda: logs("app") + logs("otel-s3-bridge"))
        eventually(lambda: len(list_keys(s3, bucket)) == 1, 60)
        [key] = list_keys(s3, bucket)
        trace = logs("app").split("exported ", 1)[1].split()[0]
        assert trace in key  # the app's own trace id names the object

        # S3 fails from now on: a second export stays in the spool until `kube down` drains it.
        proxy.stop()
        proxy.start("--fail-rate", "1.0", "--kinds", "503")
        podman("exec", f"{name}-app", "python3", "-c", APP_SCRIPT.replace("while True:", "while False:"))
        eventually(lambda: _spool_entries(ports["metrics"]) == 1, 60)
        # Stopped as the kubelet stops a Pod: SIGTERM, then the grace period. (podman 4.3's `kube down`
        # alone removes the Pod with SIGKILL, exit 137, so it only cleans up afterwards.)
        grace = str(pod["spec"]["terminationGracePeriodSeconds"])
        down = podman.popen("pod", "stop", "--time", grace, name)
        eventually(lambda: "draining: uploading 1 spooled entries" in logs("otel-s3-bridge"), 60)
        assert list_keys(s3, bucket) == [key]
        proxy.stop()
        proxy.start()  # S3 answers again, during the drain
        assert down.wait(120) == 0, down.stdout.read()
        states = podman("ps", "-a", "--filter", f"pod={name}", "--format", "{{.Names}} {{.ExitCode}}").stdout
        assert f"{name}-otel-s3-bridge 0" in states and f"{name}-app 0" in states
        assert len(list_keys(s3, bucket)) == 2
        assert "drain deadline reached" not in logs("otel-s3-bridge")
        podman("kube", "down", str(pod_file))
    finally:
        if down is None or down.poll() is None:
            subprocess.run(["podman", "--runtime", "runc", "kube", "down", str(pod_file)], env=podman.env,
                           capture_output=True, timeout=120)
        proxy.stop()


def _spool_entries(metrics_port: int) -> float:
    for line in requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text.splitlines():
        if line.startswith("otel_s3_bridge_spool_entries "):
            return float(line.split()[1])
    return -1.0


def test_docker_compose_trial_builds_this_repository_with_valid_settings():
    """deploy/docker-compose.yaml cannot be run here (no registry for MinIO's image): its bridge
    service builds the repository's Dockerfile and its settings are a configuration the bridge takes."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yaml").read_text())
    bridge = compose["services"]["otel-s3-bridge"]
    context = (ROOT / "deploy" / bridge["build"]["context"]).resolve()
    assert context == ROOT and (context / bridge["build"]["dockerfile"]).is_file()
    environment = {name: re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))
                   for name, value in bridge["environment"].items()}
    config = load_config({"host": "0.0.0.0"}, environment)
    assert config.bucket == "llm-traces" and config.tokens[0].token == "change-me-local-token"
    assert "create-bucket" in bridge["depends_on"] and bridge["read_only"] is True
