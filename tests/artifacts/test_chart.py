"""The Helm chart: lint, render over several values files, and check what it grants.

helm is the real binary: ``$TRITONSCALE_HELM``, else ``helm`` on PATH, else the one
``hack/k8s-binaries.sh`` provides (built from its Go module and cached). When none
can be obtained the tests FAIL: a chart that was never rendered is not tested.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tritonscale"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
NS = "tritonscale-system"

Doc = dict[str, Any]


# --------------------------------------------------------------------------- helm
@functools.cache
def helm() -> str:
    env = os.environ.get("TRITONSCALE_HELM")
    if env:
        assert Path(env).is_file(), f"TRITONSCALE_HELM={env} does not exist"
        return env
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    script = REPO / "hack" / "k8s-binaries.sh"
    assert script.exists(), (
        "helm not found: set TRITONSCALE_HELM, put helm on PATH, or provide hack/k8s-binaries.sh"
    )
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=3600, check=False
    )
    assert proc.returncode == 0, f"hack/k8s-binaries.sh failed:\n{proc.stderr[-4000:]}"
    bindir = Path(proc.stdout.strip().splitlines()[-1])
    assert (bindir / "helm").is_file(), f"no helm in {bindir}"
    return str(bindir / "helm")


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "tritonscale-helm-home"
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp / var.lower())
    proc = subprocess.run(
        [helm(), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def template(*args: str, values: Path | None = None, crds: bool = False) -> list[Doc]:
    cmd = ["template", "ts", str(CHART), "--namespace", NS]
    if values is not None:
        cmd += ["-f", str(values)]
    if crds:
        cmd.append("--include-crds")
    out = run_helm(*cmd, *args).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    if "--show-only" in args:
        return docs
    # Hooks (the `helm test` pod) are not part of the release's objects.
    return [d for d in docs if "helm.sh/hook" not in d["metadata"].get("annotations", {})]


@functools.cache
def rendered(name: str) -> tuple[Doc, ...]:
    return tuple(template(values=CHART / "ci" / f"{name}-values.yaml"))


def of_kind(docs: tuple[Doc, ...] | list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: tuple[Doc, ...] | list[Doc], kind: str) -> Doc:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def container(docs: tuple[Doc, ...] | list[Doc]) -> Doc:
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert isinstance(c, dict)
    return c


def grants(role: Doc) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, merged over rules."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules", []):
        assert not rule.get("resourceNames"), rule
        assert not rule.get("nonResourceURLs"), rule
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                out.setdefault((g, r), set()).update(rule["verbs"])
    return out


OPERATOR_NAMESPACED = {
    ("tritonscale.io", "scaledmodels"): {"get", "list", "watch", "patch", "update"},
    ("tritonscale.io", "scaledmodels/status"): {"get", "patch", "update"},
    ("tritonscale.io", "scaledmodels/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    # A cascade's router and threshold ConfigMaps: no list or watch (nothing to read
    # in bulk), and never Secrets.
    ("", "configmaps"): {"get", "create", "patch", "delete"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "create", "patch",
                                                  "update", "delete"},
    ("gateway.networking.k8s.io", "grpcroutes"): {"get", "list", "watch", "create", "patch",
                                                  "update", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
CRD_READ = {("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
            # Nodes' interruption taints (handlers/interruption.py), watched for a new
            # taint (handlers/lifecycle.py on_node); never written.
            ("", "nodes"): {"get", "list", "watch"}}
# Exact watchNamespaces: no Namespace access at all (the operator never lists them).
NAMESPACED_CLUSTER_READ = CRD_READ
PEERING_VERBS = {"get", "list", "watch", "patch"}


# ------------------------------------------------------------------ lint, render
def test_helm_is_v3() -> None:
    out = run_helm("version", "--short").stdout
    assert out.startswith("v3."), out


def test_ci_values_files_exist() -> None:
    names = {p.name for p in CI_VALUES}
    assert {
        "default-values.yaml",
        "namespaced-values.yaml",
        "ha-values.yaml",
        "monitoring-values.yaml",
        "networkpolicy-values.yaml",
    } <= names


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_lint_strict(values: Path) -> None:
    run_helm("lint", str(CHART), "--strict", "--namespace", NS, "-f", str(values))


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_rendered_object_is_well_formed(values: Path) -> None:
    docs = template(values=values)
    assert docs
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "no duplicate objects"
    for d in docs:
        assert d.get("apiVersion") and d.get("kind"), d
        labels = d["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == "ts", d["metadata"]["name"]
        if d["kind"] not in {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}:
            assert d["metadata"].get("namespace"), f"{d['kind']} {d['metadata']['name']}"


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"] == "0.1.0"


# ----------------------------------------------------------------------- CRDs
def test_chart_crd_is_a_byte_identical_copy_of_crds_dir() -> None:
    source = REPO / "crds" / "scaledmodel.yaml"
    assert source.exists(), "crds/scaledmodel.yaml (the source of truth) is missing"
    copy = CHART / "crds" / "scaledmodel.yaml"
    assert copy.read_bytes() == source.read_bytes(), "run hack/sync-crd.sh"


def test_crds_are_installed_by_the_chart() -> None:
    docs = template(crds=True)
    crds = {d["metadata"]["name"] for d in of_kind(docs, "CustomResourceDefinition")}
    assert crds == {
        "scaledmodels.tritonscale.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }


# ----------------------------------------------------------------------- RBAC
def all_rbac_roles(docs: tuple[Doc, ...] | list[Doc]) -> list[Doc]:
    return of_kind(docs, "ClusterRole") + of_kind(docs, "Role")


@pytest.mark.parametrize("name", [p.name.removesuffix("-values.yaml") for p in CI_VALUES])
def test_rbac_never_grants_secrets_or_wildcards(name: str) -> None:
    roles = all_rbac_roles(rendered(name))
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{role['metadata']['name']}: wildcard {key}"
            assert "secrets" not in rule["resources"]
            if "configmaps" in rule["resources"]:  # cascades: never list or watch them
                assert not {"list", "watch"} & set(rule["verbs"]), rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert "rbac.authorization.k8s.io" not in rule["apiGroups"]


def test_cluster_wide_rbac_is_exactly_what_the_operator_needs() -> None:
    docs = rendered("default")
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
    role = one(docs, "ClusterRole")
    assert grants(role) == {**OPERATOR_NAMESPACED, **CRD_READ}
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    sa = one(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NS}
    ]
    assert "--all-namespaces" in container(docs)["args"]


def test_namespaced_install_uses_roles_per_namespace() -> None:
    docs = rendered("namespaced")
    roles = of_kind(docs, "Role")
    assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
    for r in roles:
        assert grants(r) == OPERATOR_NAMESPACED
    bindings = of_kind(docs, "RoleBinding")
    assert {b["metadata"]["namespace"] for b in bindings} == {"team-a", "team-b"}
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"][0]["namespace"] == NS
    # Only reads of CRDs are cluster-wide; no Namespace access.
    (cluster_role,) = of_kind(docs, "ClusterRole")
    assert grants(cluster_role) == NAMESPACED_CLUSTER_READ
    args = container(docs)["args"]
    assert "--all-namespaces" not in args
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_rbac_can_be_disabled() -> None:
    docs = template("--set", "rbac.create=false")
    assert not all_rbac_roles(docs)
    assert not of_kind(docs, "ClusterRoleBinding")


# ------------------------------------------------------------------ Deployment
def test_security_context() -> None:
    docs = rendered("default")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 10001
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(docs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    # The read-only root filesystem gets a writable /tmp.
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tmp"] == "/tmp" and "emptyDir" in vols["tmp"]


def test_probes_resources_env_and_args() -> None:
    c = container(rendered("default"))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
        assert c[probe]["periodSeconds"] > 0
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert c["args"][0] == "run"
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert "--metrics-port=9090" in c["args"]
    assert not any(a.startswith("--peering") for a in c["args"])
    assert c["image"] == "tritonscale:0.1.0"


def test_image_digest_and_registry() -> None:
    digest = "sha256:" + "a" * 64
    docs = template(
        "--set", "image.registry=registry.example.com/ml", "--set", f"image.digest={digest}"
    )
    assert container(docs)["image"] == f"registry.example.com/ml/tritonscale@{digest}"


def test_single_replica_has_no_pdb_and_recreates() -> None:
    docs = rendered("default")
    assert not of_kind(docs, "PodDisruptionBudget")
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_ha_requires_and_uses_peering() -> None:
    docs = rendered("ha")
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert "--peering=tritonscale" in container(docs)["args"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    peering = one(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "tritonscale"
    role = one(docs, "ClusterRole")
    assert grants(role)[("kopf.dev", "clusterkopfpeerings")] == PEERING_VERBS
    assert ("kopf.dev", "kopfpeerings") not in grants(role)


def test_ha_namespaced_uses_namespaced_peering() -> None:
    docs = rendered("ha-namespaced")
    (peering,) = of_kind(docs, "KopfPeering")
    assert peering["metadata"]["namespace"] == "team-a"
    (role,) = of_kind(docs, "Role")
    assert grants(role)[("kopf.dev", "kopfpeerings")] == PEERING_VERBS
    (cluster_role,) = of_kind(docs, "ClusterRole")
    assert grants(cluster_role) == NAMESPACED_CLUSTER_READ


def test_shards_render_one_deployment_and_peering_per_shard() -> None:
    """shards: 2 -> two Deployments with disjoint selectors, each passing its shard
    and its own peering name; one peering object and one PDB per shard."""
    docs = rendered("shards")
    deps = sorted(of_kind(docs, "Deployment"), key=lambda d: d["metadata"]["name"])
    assert [d["metadata"]["name"] for d in deps] == [
        "ts-tritonscale-shard-0", "ts-tritonscale-shard-1"]
    selectors = []
    for i, dep in enumerate(deps):
        assert dep["spec"]["replicas"] == 2  # active + standby
        sel = dep["spec"]["selector"]["matchLabels"]
        assert sel["tritonscale.io/shard"] == str(i)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels.get(k) == v for k, v in sel.items())
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert "--shards=2" in c["args"] and f"--shard={i}" in c["args"]
        assert f"--peering=tritonscale-shard-{i}" in c["args"]
        selectors.append(sel)
    assert selectors[0] != selectors[1]
    peerings = sorted(p["metadata"]["name"] for p in of_kind(docs, "ClusterKopfPeering"))
    assert peerings == ["tritonscale-shard-0", "tritonscale-shard-1"]
    pdbs = {p["metadata"]["name"]: p for p in of_kind(docs, "PodDisruptionBudget")}
    for dep in deps:
        assert pdbs[dep["metadata"]["name"]]["spec"]["selector"] == dep["spec"]["selector"]
    # The metrics Service still reaches every shard's pods.
    svc = one(docs, "Service")
    for dep in deps:
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())


def test_one_shard_renders_as_before() -> None:
    """shards: 1 keeps the Deployment's name and selector (selectors are immutable:
    an upgrade must not have to recreate the Deployment)."""
    dep = one(rendered("default"), "Deployment")
    assert dep["metadata"]["name"] == "ts-tritonscale"
    assert "tritonscale.io/shard" not in dep["spec"]["selector"]["matchLabels"]
    assert not any(a.startswith("--shard") for a in container(rendered("default"))["args"])


def test_namespaced_shards_get_a_peering_per_shard_and_namespace() -> None:
    docs = template("--set", "shards=3", "--set", "peering.enabled=true",
                    "--set", "watchNamespaces={a,b}")
    names = sorted((p["metadata"]["namespace"], p["metadata"]["name"])
                   for p in of_kind(docs, "KopfPeering"))
    assert names == [(ns, f"tritonscale-shard-{i}") for ns in "ab" for i in range(3)]


def test_replicas_above_one_without_peering_fail() -> None:
    proc = run_helm("template", "ts", str(CHART), "--set", "replicaCount=2", check=False)
    assert proc.returncode != 0
    assert "peering.enabled" in proc.stderr


# ------------------------------------------------------------- values & schema
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "replicaCount=-1"], "replicaCount"),
        (["--set", "shards=0"], "shards"),
        (["--set", "shards=two"], "shards"),
        (["--set", "replicaCuont=1"], "replicaCuont"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "metrics.port=70000"], "port"),
        (["--set", "watchNamespaces[0]=Not_A_Namespace"], "watchNamespaces"),
        (["--set", "metrics.serviceMonitor.interval=soon"], "interval"),
        (["--set", "peering.enabled=yes"], "enabled"),
    ],
)
def test_schema_rejects_bad_values(args: list[str], needle: str) -> None:
    proc = run_helm("template", "ts", str(CHART), *args, check=False)
    assert proc.returncode != 0, f"{args} was accepted"
    assert needle in proc.stderr, proc.stderr


def test_schema_is_strict_at_every_object_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False

    def check(node: dict[str, Any], path: str) -> None:
        props = node.get("properties")
        if node.get("type") == "object" and props:
            assert node.get("additionalProperties") is False, path
            for k, v in props.items():
                check(v, f"{path}.{k}")

    check(schema, "")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def _leaf_keys_without_docs(text: str) -> list[str]:
    """Keys of values.yaml whose value is a leaf and which (nor any ancestor) has a
    comment directly above."""
    missing: list[str] = []
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prev = lines[i - 1].strip() if i else ""
        documented = prev.startswith("#") or any(d for _, _, d in stack)
        is_parent = (
            rest == ""
            and i + 1 < len(lines)
            and (len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent)
            and not lines[i + 1].lstrip().startswith("- ")
        )
        path = ".".join([k for _, k, _ in stack] + [key])
        if not is_parent and not documented:
            missing.append(path)
        stack.append((indent, key, documented))
    return missing


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    assert _leaf_keys_without_docs(text) == []
    assert _leaf_keys_without_docs("a:\n  b: 1\n# doc\nc: 2\nd: 3\n") == ["a.b", "d"]


# ------------------------------------------------------------------ monitoring
def test_defaults_render_no_optional_objects() -> None:
    kinds = {d["kind"] for d in rendered("default")}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
                     "Deployment", "NetworkPolicy"}  # fmt: skip


def test_metrics_service() -> None:
    docs = rendered("default")
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_service_monitor_and_pod_monitor() -> None:
    docs = rendered("monitoring")
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    svc = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "tritonscale"}
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    assert ep["port"] == "metrics"
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in ep["relabelings"]}
    for label in ("variant", "pool", "scaledmodel"):
        assert relabel[f"tritonscale_io_{label}"] == [
            f"__meta_kubernetes_pod_label_tritonscale_io_{label}"
        ]
    assert relabel["namespace"] == ["__meta_kubernetes_namespace"]


def test_pod_monitor_namespaced_install_only_watched_namespaces() -> None:
    docs = template(
        "--set", "metrics.podMonitor.enabled=true",
        values=CHART / "ci" / "namespaced-values.yaml",
    )  # fmt: skip
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_dashboard_configmap_ships_the_dashboard() -> None:
    cm = one(rendered("monitoring"), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    shipped = json.loads(cm["data"]["tritonscale.json"])
    assert shipped == json.loads((CHART / "dashboards" / "tritonscale.json").read_text())


def _egress(np: Doc) -> dict[str, dict[str, Any]]:
    """Egress rules by the comment-free key: dns, api, prometheus, triton, extra-N."""
    rules = np["spec"]["egress"]
    out: dict[str, dict[str, Any]] = {}
    for i, rule in enumerate(rules):
        ports = {p["port"] for p in rule.get("ports", [])}
        peers = rule.get("to", [])
        if ports == {53}:
            out["dns"] = rule
        elif 6443 in ports:
            out["api"] = rule
        elif peers and "podSelector" in peers[0] and peers[0]["podSelector"].get(
                "matchLabels", {}).get("app.kubernetes.io/managed-by") == "tritonscale":
            out["triton"] = rule
        elif 9090 in ports and i == 2:
            out["prometheus"] = rule
        else:
            out[f"extra-{i}"] = rule
    return out


def test_network_policy_is_on_by_default_and_limits_egress() -> None:
    docs = rendered("default")
    np = one(docs, "NetworkPolicy")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ports = [p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]]
    assert sorted(ports) == ["healthz", "metrics"]
    egress = _egress(np)
    assert set(egress) == {"dns", "api", "prometheus", "triton"}
    # Every rule but the API server's (no lookup in `helm template`) names its peers,
    # and every rule names its ports: nothing else is reachable (cloud metadata, ...).
    assert all(rule.get("ports") for rule in egress.values())
    assert all(rule.get("to") for k, rule in egress.items() if k != "api")
    (dns,) = egress["dns"]["to"]
    assert dns["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    (prom,) = egress["prometheus"]["to"]
    assert prom == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    assert [p["port"] for p in egress["prometheus"]["ports"]] == [9090]
    (triton,) = egress["triton"]["to"]
    assert triton["namespaceSelector"] == {}  # cluster-wide install
    assert [p["port"] for p in egress["triton"]["ports"]] == [8002]
    assert {p["port"] for p in egress["api"]["ports"]} == {443, 6443}


def test_network_policy_pinned_api_server_and_namespaced_triton() -> None:
    np = one(rendered("networkpolicy"), "NetworkPolicy")
    egress = _egress(np)
    assert egress["api"]["to"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}]
    assert np["spec"]["ingress"][1]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    docs = template(values=CHART / "ci" / "namespaced-values.yaml")
    (triton,) = _egress(one(docs, "NetworkPolicy"))["triton"]["to"]
    assert triton["namespaceSelector"] == {"matchExpressions": [{
        "key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"],
    }]}


def test_network_policy_extra_egress_and_off() -> None:
    docs = template("--set", "networkPolicy.egress[0].ports[0].port=4317")
    egress = _egress(one(docs, "NetworkPolicy"))
    assert [r["ports"] for k, r in egress.items() if k.startswith("extra")] == [[{"port": 4317}]]
    assert not of_kind(template("--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_prometheus_allowlist_reaches_the_operator() -> None:
    def allowlist(*args: str, values: Path | None = None) -> str:
        env = {e["name"]: e for e in container(template(*args, values=values))["env"]}
        return str(env["TRITONSCALE_ALLOWED_PROMETHEUS_URLS"]["value"])

    assert allowlist() == "http://prometheus-operated.monitoring.svc:9090"
    assert allowlist(values=CHART / "ci" / "networkpolicy-values.yaml") == (
        "http://prometheus.monitoring.svc:9090,https://thanos.monitoring.svc:10902/")
    assert allowlist("--set", "prometheus.allowedUrls={*}") == "*"
    proc = run_helm("template", "ts", str(CHART), "--set", "prometheus.url=", check=False)
    assert proc.returncode != 0 and "prometheus.allowedUrls must be set" in proc.stderr
    proc = run_helm("template", "ts", str(CHART), "--set",
                    "prometheus.allowedUrls={http://p/?x}", check=False)
    assert proc.returncode != 0 and "allowedUrls" in proc.stderr


def test_image_allowlist_reaches_the_operator() -> None:
    def allowed(*args: str) -> str:
        env = {e["name"]: e for e in container(template(*args))["env"]}
        return str(env["TRITONSCALE_ALLOWED_IMAGES"]["value"])

    assert allowed() == ""
    assert allowed("--set", "tritonImages.allowed={nvcr.io/nvidia/tritonserver:*,r.io/t/*}") \
        == "nvcr.io/nvidia/tritonserver:*,r.io/t/*"
    proc = run_helm("template", "ts", str(CHART), "--set", "tritonImages.allowed={a b}",
                    check=False)
    assert proc.returncode != 0 and "tritonImages" in proc.stderr


# ------------------------------------------------------------- tests & NOTES
def test_helm_test_pod_fetches_metrics() -> None:
    docs = template("--show-only", "templates/tests/test-metrics.yaml")
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    script = c["command"][-1]
    assert "ts-tritonscale-metrics.tritonscale-system.svc:9090/metrics" in script
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # The test pod must not be selected by the metrics Service.
    svc = one(rendered("default"), "Service")
    assert not svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def _notes(tmp_path: Path, *args: str) -> str:
    """Render NOTES.txt offline: `helm install --dry-run` needs a cluster, so a copy of
    the chart renders it through `tpl` into a ConfigMap."""
    chart = tmp_path / "tritonscale"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes-under-test.txt")
    (chart / "templates" / "zz-notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n'
    )
    out = run_helm(
        "template", "ts", str(chart), "--namespace", NS, *args,
        "--show-only", "templates/zz-notes-under-test.yaml",
    ).stdout  # fmt: skip
    notes: str = yaml.safe_load(out)["data"]["notes"]
    return notes


def test_notes_give_next_steps(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    assert "kubectl apply -f examples/resnet50.yaml" in notes
    assert "kubectl get sm -A" in notes
    assert "helm test ts" in notes
    notes = _notes(tmp_path / "ns", "-f", str(CHART / "ci" / "namespaced-values.yaml"))
    assert "kubectl apply -n team-a -f examples/resnet50.yaml" in notes
    assert "team-a, team-b" in notes


def iter_templates() -> Iterator[Path]:
    yield from (CHART / "templates").rglob("*.yaml")


def test_templates_do_not_reference_secrets_or_hostpaths() -> None:
    for path in iter_templates():
        text = path.read_text()
        assert "hostPath" not in text, path
        assert "secretKeyRef" not in text, path


def test_prometheus_rule_alerts_use_exported_metrics() -> None:
    from tests.artifacts.test_dashboard import TRITON_METRICS, metric_names

    from tritonscale.adapters.metrics import OperatorMetrics

    rule = one(rendered("monitoring"), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    exported = OperatorMetrics().metric_names()
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"TritonscaleSLOInfeasible", "TritonscaleSignalsFailing"}
    for r in rules:
        names = metric_names(r["expr"])
        assert names and names <= exported | TRITON_METRICS, r["expr"]
        assert "{{ $labels.scaledmodel }}" in r["annotations"]["summary"]


def test_packaged_chart_ships_schema_crds_and_dashboard(tmp_path: Path) -> None:
    import tarfile

    run_helm("package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("tritonscale-*.tgz")
    with tarfile.open(tgz) as tar:
        names = set(tar.getnames())
    for required in (
        "values.schema.json",
        "crds/scaledmodel.yaml",
        "crds/kopf-peering.yaml",
        "dashboards/tritonscale.json",
        "templates/NOTES.txt",
        "templates/tests/test-metrics.yaml",
        "README.md",
    ):
        assert f"tritonscale/{required}" in names, required
    assert not [n for n in names if n.startswith("tritonscale/ci/")], "ci/ values are not shipped"
