"""The user's flow against a real control plane with KWOK GPU node pools.

``helm install`` the chart; run the operator (locally, with the chart's
ServiceAccount token, so the chart's RBAC is all it has); ``kubectl apply`` the
example; check what ``kubectl get`` shows, the pods' placement, the operator's
``/metrics``; change the spec and watch the placement move make-before-break;
delete the ScaledModel and see garbage collection remove everything.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.harness.e2e import (
    CRD_FILE,
    LABEL_SM,
    ChartRelease,
    DeploymentWatch,
    condition,
    deployment_names,
    dump_state,
    get_sm,
    load_example,
    sm_deployments,
    to_yaml,
    wait_converged,
)
from tests.harness.k8s import GPU_RESOURCE, Cluster, wait_for
from tests.harness.operator import OperatorProcess, running

pytestmark = pytest.mark.e2e

SM = "resnet50"
INITIAL = f"{SM}-int8-t4-spot"  # the planner's choice at unknown load: cheapest combo


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, operator_kubeconfig: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """One operator process for the module, cluster-wide like the chart's default."""
    with running(OperatorProcess(operator_kubeconfig,
                                 cluster.log_dir / "operator-user-flow.log")) as op:
        yield op


def _namespace(cluster: Cluster, base: str) -> str:
    return cluster.create_namespace(f"{base}-{secrets.token_hex(3)}")


def _apply_file(cluster: Cluster, manifest: dict[str, Any], path: Path) -> None:
    """What the user does: write the YAML file, ``kubectl apply -f`` it."""
    path.write_text(to_yaml(manifest))
    cluster.kubectl("apply", "-f", str(path))


def _wait_converged(
    cluster: Cluster, ns: str, deployments: list[str], op: OperatorProcess, timeout: float = 90
) -> None:
    wait_converged(cluster, ns, SM, deployments, op, timeout)


@pytest.fixture(scope="module")
def flow(
    cluster: Cluster, example_pools: list[Any], operator: OperatorProcess
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``kubectl apply -f`` the resnet50 example (metrics source none) in a namespace."""
    ns = _namespace(cluster, "flow")
    manifest = load_example(namespace=ns)
    _apply_file(cluster, manifest, cluster.workdir / f"{ns}-resnet50.yaml")
    _wait_converged(cluster, ns, [INITIAL], operator)
    yield ns, manifest
    cluster.delete_namespace(ns)


# -- 1. helm install: CRDs, RBAC, ServiceAccount, Deployment; least privilege -----------


def test_helm_install_creates_crd_rbac_serviceaccount_and_deployment(
    cluster: Cluster, chart_release: ChartRelease
) -> None:
    ns = chart_release.namespace
    status = json.loads(cluster.helm("status", chart_release.name, "-n", ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"

    crd = cluster.get_json("crd", "scaledmodels.tritonscale.io")
    established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
    assert established and established[0]["status"] == "True"
    assert crd["spec"]["names"]["shortNames"] == ["sm"]

    dep = cluster.get_json("deployment", "-n", ns, "-l",
                           f"app.kubernetes.io/instance={chart_release.name}")["items"]
    assert len(dep) == 1
    pod_spec = dep[0]["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == chart_release.service_account
    assert dep[0]["spec"]["replicas"] == 0  # the operator runs locally in these tests
    args = pod_spec["containers"][0]["args"]
    assert args[0] == "run" and "--all-namespaces" in args

    crb = cluster.get_json("clusterrolebinding", chart_release.name)
    assert {"kind": "ServiceAccount", "name": chart_release.service_account,
            "namespace": ns} in crb["subjects"]
    svc = cluster.get_json("service", "-n", ns, "-l",
                           f"app.kubernetes.io/instance={chart_release.name}")["items"]
    assert [p["name"] for p in svc[0]["spec"]["ports"]] == ["metrics"]


NEEDED = [
    ("list", "scaledmodels.tritonscale.io", None),
    ("watch", "scaledmodels.tritonscale.io", None),
    ("patch", "scaledmodels.tritonscale.io", "default"),
    ("patch", "scaledmodels.tritonscale.io/status", "default"),
    ("create", "deployments.apps", "default"),
    ("patch", "deployments.apps", "default"),
    ("delete", "deployments.apps", "default"),
    ("watch", "deployments.apps", None),
    ("patch", "services", "default"),
    ("list", "pods", "default"),
    ("get", "configmaps", "default"),  # a cascade's router and threshold, by name
    ("patch", "configmaps", "default"),
    ("delete", "configmaps", "default"),
    ("create", "events", "default"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
]
NOT_NEEDED = [
    ("get", "secrets", "default"),
    ("list", "secrets", None),
    ("get", "secrets", "tritonscale-system"),
    ("create", "pods", "default"),
    ("delete", "pods", "default"),
    ("create", "pods/exec", "default"),
    ("list", "configmaps", "default"),  # never read in bulk (and not watched)
    ("watch", "configmaps", None),
    ("create", "scaledmodels.tritonscale.io", "default"),
    ("delete", "scaledmodels.tritonscale.io", "default"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("get", "kopfpeerings.kopf.dev", "default"),  # peering is off by default
    ("list", "clusterkopfpeerings.kopf.dev", None),
    ("patch", "nodes", None),
    ("delete", "namespaces", None),
    ("create", "serviceaccounts/token", "tritonscale-system"),
    ("create", "rolebindings.rbac.authorization.k8s.io", "default"),
    ("create", "clusterroles.rbac.authorization.k8s.io", None),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", None),
    ("impersonate", "users", None),
    ("create", "statefulsets.apps", "default"),
    ("get", "*.*", None),
]


def _can_i(cluster: Cluster, subject: str, verb: str, resource: str, ns: str | None) -> str:
    scope = ["-n", ns] if ns else ["--all-namespaces"]
    res = cluster.kubectl("auth", "can-i", verb, resource, f"--as={subject}", *scope,
                          check=False)
    return res.stdout.strip().splitlines()[0] if res.stdout.strip() else res.stderr


def test_chart_rbac_grants_what_the_operator_needs_and_nothing_more(
    cluster: Cluster, chart_release: ChartRelease, operator_kubeconfig: Path
) -> None:
    who = chart_release.subject
    granted = {(v, r, n): _can_i(cluster, who, v, r, n) for v, r, n in NEEDED}
    denied = {(v, r, n): _can_i(cluster, who, v, r, n) for v, r, n in NOT_NEEDED}
    assert all(a == "yes" for a in granted.values()), granted
    assert all(a == "no" for a in denied.values()), denied

    # The token itself, not only the authorizer's opinion: Secrets are Forbidden.
    res = cluster.kubectl("get", "secrets", "-n", chart_release.namespace,
                          kubeconfig=operator_kubeconfig, check=False)
    assert res.returncode != 0 and "Forbidden" in res.stderr, res.stderr
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json",
                                        kubeconfig=operator_kubeconfig).stdout)
    assert whoami["status"]["userInfo"]["username"] == who


# -- 2. kubectl apply the example --------------------------------------------------------


def _labels_match(node: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = node["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint["effect"]:
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value") == taint.get("value"):
            return True
    return False


def _parse_table(text: str) -> list[dict[str, str]]:
    """kubectl's column output, split at the header's column starts (values may hold
    spaces, e.g. ``int8@t4-spot x1``)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = [line[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def test_apply_example_deploys_triton_on_the_chosen_pool(
    cluster: Cluster, flow: tuple[str, dict[str, Any]], chart_release: ChartRelease
) -> None:
    ns, manifest = flow
    sm = get_sm(cluster, ns, SM)
    uid = sm["metadata"]["uid"]
    st = sm["status"]

    # Status: generation observed, decision explained, placements with desired/ready.
    assert st["observedGeneration"] == sm["metadata"]["generation"]
    assert st["lastDecision"]["reason"] == "InitialPlan"
    assert st["lastDecision"]["placements"] == [
        {"variant": "int8", "pool": "t4-spot", "replicas": 1}
    ]
    assert "int8@t4-spot" in st["lastDecision"]["message"]
    assert st["placements"] == [
        {"variant": "int8", "pool": "t4-spot", "desired": 1, "ready": 1,
         "deployment": INITIAL, "planned": True}
    ]
    assert (st["placement"], st["ready"], st["readyReplicas"], st["desiredReplicas"]) == (
        "int8@t4-spot x1", "1/1", 1, 1)
    assert st["costPerHour"] == pytest.approx(0.201)
    assert st["unavailablePools"] == []
    want = {"SpecValid": "True", "Satisfiable": "True", "Ready": "True",
            "SLOMet": "Unknown", "SignalsAvailable": "False"}
    got = {c["type"]: c["status"] for c in st["conditions"]}
    assert got == want
    for c in st["conditions"]:
        assert c["observedGeneration"] == sm["metadata"]["generation"]
        assert c["reason"] and c["lastTransitionTime"].endswith("Z")
    assert condition(sm, "SignalsAvailable")["message"]  # says why (source none)

    # The Deployment and the Service, owned by the ScaledModel.
    deps = sm_deployments(cluster, ns, SM)
    assert [d["metadata"]["name"] for d in deps] == [INITIAL]
    svc = cluster.get_json("service", SM, "-n", ns)
    for obj in (*deps, svc):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "ScaledModel", SM, uid, True)
    assert svc["spec"]["selector"] == {LABEL_SM: SM}
    assert {p["name"] for p in svc["spec"]["ports"]} == {"http", "grpc", "metrics"}

    # Pods: on a node of the t4-spot pool, its taints tolerated, one GPU each, Ready.
    pool = next(p for p in manifest["spec"]["nodePools"] if p["name"] == "t4-spot")
    pods = cluster.get_json("pods", "-n", ns, "-l", f"{LABEL_SM}={SM}")["items"]
    assert len(pods) == 1
    for pod in pods:
        node = cluster.get_json("node", pod["spec"]["nodeName"])
        assert _labels_match(node, pool["nodeSelector"]), node["metadata"]["labels"]
        assert node["spec"]["taints"], "the pool's nodes are tainted"
        for taint in node["spec"]["taints"]:
            assert _tolerated(taint, pod["spec"]["tolerations"]), taint
        (container,) = pod["spec"]["containers"]
        assert container["resources"]["limits"][GPU_RESOURCE] == "1"
        assert pod["status"]["phase"] == "Running"
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
        assert pod["metadata"]["labels"]["tritonscale.io/pool"] == "t4-spot"

    # What `kubectl get sm` shows.
    # What `kubectl get sm` shows: the CRD's default columns (priority 0), then -o wide.
    columns = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0][
        "additionalPrinterColumns"]
    (row,) = _parse_table(cluster.kubectl("get", "sm", "-n", ns).stdout)
    assert list(row) == ["NAME"] + [c["name"].upper() for c in columns if not c.get("priority")]
    expected = {"NAME": SM, "PLACEMENT": "int8@t4-spot x1", "READY": "1/1",
                "LATENCY": "", "TARGET": "25", "COST/H": "0.201", "SLO": "Unknown",
                "REASON": "InitialPlan", "MESSAGE": "Signals unknown"}
    (wide,) = _parse_table(cluster.kubectl("get", "scaledmodels", "-o", "wide", "-n", ns).stdout)
    assert list(wide) == ["NAME"] + [c["name"].upper() for c in columns]
    assert re.fullmatch(r"\d+s|\d+m\d*s?", wide["AGE"]), wide["AGE"]
    for shown in (row, wide):
        for name, value in shown.items():
            if name in expected:
                assert value.startswith(expected[name]) if name == "MESSAGE" else (
                    value == expected[name]), (name, value)

    # Events explain what the operator did.
    events = cluster.get_json("events", "-n", ns, "--field-selector",
                              f"involvedObject.name={SM}")["items"]
    reasons = {e["reason"] for e in events}
    assert {"InitialPlan", "CreatedDeployment"} <= reasons, reasons


# -- 7. the operator's /metrics while it runs --------------------------------------------


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    found = [v for n, lb, v in samples if n == name and all(lb.get(k) == x
                                                             for k, x in labels.items())]
    assert found, f"no {name}{labels} in /metrics"
    return sum(found)


def test_metrics_port_serves_tritonscale_metrics_for_the_scaledmodel(
    cluster: Cluster, flow: tuple[str, dict[str, Any]], operator: OperatorProcess
) -> None:
    ns, _ = flow
    res = subprocess.run(["curl", "-sSf", "--max-time", "10", operator.metrics_url],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    samples = _samples(res.stdout)
    sm = {"namespace": ns, "scaledmodel": SM}
    where = {**sm, "variant": "int8", "pool": "t4-spot"}
    assert _value(samples, "tritonscale_decisions_total", **sm, reason="InitialPlan") >= 1
    assert _value(samples, "tritonscale_reconcile_duration_seconds_count", namespace=ns) >= 1
    assert _value(samples, "tritonscale_desired_replicas", **where) == 1
    assert _value(samples, "tritonscale_ready_replicas", **where) == 1
    assert _value(samples, "tritonscale_cost_per_hour_dollars", **sm) == pytest.approx(0.201)
    assert _value(samples, "tritonscale_latency_target_seconds", **sm) == pytest.approx(0.025)
    assert _value(samples, "tritonscale_slo_feasible", **sm) == 1
    assert _value(samples, "tritonscale_build_info") == 1
    assert all(n.startswith("tritonscale_") or n.startswith("python_") or
               n.startswith("process_") for n, _, _ in samples)


# -- 4. a spec change moves the placement make-before-break; delete cascades ------------


def _moved_make_before_break(watch: DeploymentWatch, old: str, new: str) -> None:
    hist = watch.history()
    new_ready = [ts for ts, name, _, ready, _ in watch.events if name == new and ready >= 1]
    old_gone = [ts for ts, name, n, _, kind in watch.events
                if name == old and (kind == "DELETED" or n == 0)]
    assert new_ready and old_gone, hist
    assert new_ready[0] <= old_gone[0], f"{old} went before {new} was Ready:\n{hist}"
    # At no observed instant did the Ready replicas drop below the target (1).
    assert watch.min_total_ready() >= 1, hist


def test_spec_change_moves_placement_make_before_break_and_delete_collects(
    cluster: Cluster, example_pools: list[Any], operator: OperatorProcess
) -> None:
    ns = _namespace(cluster, "mbb")
    try:
        manifest = load_example(namespace=ns)
        path = cluster.workdir / f"{ns}-resnet50.yaml"
        _apply_file(cluster, manifest, path)
        _wait_converged(cluster, ns, [INITIAL], operator)

        # Raise the accuracy floor above int8's 0.757: fp16 (0.7646) replaces it.
        watch = DeploymentWatch(cluster, ns, SM).start()
        try:
            manifest["spec"]["slo"]["minAccuracy"] = 0.76
            _apply_file(cluster, manifest, path)
            _wait_converged(cluster, ns, [f"{SM}-fp16-t4-spot"], operator)
        finally:
            watch.stop()
        _moved_make_before_break(watch, INITIAL, f"{SM}-fp16-t4-spot")
        assert get_sm(cluster, ns, SM)["status"]["placement"] == "fp16@t4-spot x1"
        events = cluster.get_json("events", "-n", ns, "--field-selector",
                                  f"involvedObject.name={SM}")["items"]
        assert any(e["reason"] == "Replaced" and "int8@t4-spot" in e["message"]
                   for e in events), [(e["reason"], e["message"]) for e in events]

        # Remove the pool it runs on: fp16 moves to the next cheapest pool with a
        # T4/A100 profile, t4-ondemand.
        watch = DeploymentWatch(cluster, ns, SM).start()
        try:
            manifest["spec"]["nodePools"] = [
                p for p in manifest["spec"]["nodePools"] if p["name"] != "t4-spot"
            ]
            _apply_file(cluster, manifest, path)
            _wait_converged(cluster, ns, [f"{SM}-fp16-t4-ondemand"], operator)
        finally:
            watch.stop()
        _moved_make_before_break(watch, f"{SM}-fp16-t4-spot", f"{SM}-fp16-t4-ondemand")
        pods = cluster.get_json("pods", "-n", ns, "-l", f"{LABEL_SM}={SM}")["items"]
        nodes = {p["spec"].get("nodeName") for p in pods
                 if not p["metadata"].get("deletionTimestamp")}
        assert nodes and all(n.startswith("ex-t4-ondemand-") for n in nodes), nodes

        # Delete the ScaledModel: garbage collection removes what it owned.
        cluster.kubectl("delete", "-f", str(path), "--wait=true")

        def collected() -> bool:
            left = cluster.kubectl("get", "deployments,replicasets,services,pods", "-n", ns,
                                   "-l", f"{LABEL_SM}={SM}", "-o", "name").stdout.strip()
            svc = cluster.kubectl("get", "service", SM, "-n", ns, "--ignore-not-found",
                                  "-o", "name").stdout.strip()
            return left == "" and svc == ""

        wait_for(collected, timeout=90, what="garbage collection of the ScaledModel's objects",
                 on_timeout=lambda: dump_state(cluster, ns, operator))
        assert deployment_names(cluster, ns, SM) == []
        operator.check_alive()
    finally:
        cluster.delete_namespace(ns)


def test_namespaced_rbac_grants_no_namespace_access_and_suffices(
    cluster: Cluster, chart_release: ChartRelease, tmp_path: Path
) -> None:
    """The chart's namespaced install (``watchNamespaces``: exact names, a Role each)
    grants no Namespace access at all, and the operator runs on exactly that RBAC: it
    renders a model of its namespace at once, without a 403 on Namespaces."""
    from tests.harness.e2e import CHART_DIR, isolate_pools

    tag = secrets.token_hex(3)
    ns = cluster.create_namespace(f"nsrbac-{tag}")
    op_ns = cluster.create_namespace(f"nsrbac-op-{tag}")
    release = f"tsns-{tag}"
    rendered = cluster.helm("template", release, str(CHART_DIR), "--namespace", op_ns,
                            "--set", "replicaCount=0", "--set", f"watchNamespaces[0]={ns}")
    kinds = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] in kinds]
    cluster_scoped = [(d["kind"], d["metadata"]["name"]) for d in docs
                      if d["kind"].startswith("Cluster")]
    (sa,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    subject = f"system:serviceaccount:{op_ns}:{sa}"
    name = "nsrbac"
    manifest = load_example(namespace=ns, name=name)
    pools = isolate_pools(cluster, manifest, tag, pools=["t4-spot"], with_nodes=[])
    operator: OperatorProcess | None = None
    try:
        cluster.apply(docs)
        for verb in ("get", "list", "watch"):
            assert _can_i(cluster, subject, verb, "namespaces", None) == "no", verb
        assert _can_i(cluster, subject, "patch", "deployments.apps", ns) == "yes"
        assert _can_i(cluster, subject, "patch", "deployments.apps", "default") == "no"
        operator = OperatorProcess(cluster.service_account_kubeconfig(op_ns, sa),
                                   workdir=tmp_path / "operator", namespaces=[ns])
        operator.start()
        cluster.apply(manifest)
        op = operator
        wait_for(lambda: deployment_names(cluster, ns, name) != []
                 and condition(get_sm(cluster, ns, name), "SpecValid").get("status") == "True",
                 timeout=90, interval=0.5, what="the model rendered with namespaced RBAC",
                 on_timeout=lambda: dump_state(cluster, ns, op))
        log = operator.log_text()
        assert "namespaces is forbidden" not in log and "Traceback" not in log
    finally:
        if operator is not None:
            operator.stop()
        cluster.delete_namespace(ns, wait=False)
        cluster.delete_namespace(op_ns, wait=False)
        for kind, obj in cluster_scoped:
            cluster.kubectl("delete", kind.lower(), obj, "--ignore-not-found", check=False)
        for node_pool in pools.values():
            cluster.delete_node_pool(node_pool, wait=False)
