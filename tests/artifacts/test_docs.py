"""Docs stay true: the CRD reference is generated, links resolve, knobs are covered."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
# The chart ships a byte-identical copy of crds/scaledmodel.yaml (tests/artifacts/test_chart.py).
CRD = REPO / "helm" / "tritonscale" / "crds" / "scaledmodel.yaml"
GEN = REPO / "hack" / "gen-crd-docs.py"
OWN_DOCS = [
    "concepts.md", "crd-reference.md", "tuning.md", "comparison.md", "quickstart.md", "metrics.md",
    "README.md",
]  # fmt: skip


def test_crd_reference_is_generated_from_the_crd(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(GEN), "--check", str(CRD), str(DOCS / "crd-reference.md")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + " (run hack/sync-crd.sh)"
    # And the generator is deterministic.
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    for out in (a, b):
        subprocess.run([sys.executable, str(GEN), str(CRD), str(out)], check=True)
    assert a.read_text() == b.read_text()


def schema() -> dict[str, object]:
    crd = yaml.safe_load(CRD.read_text())
    s: dict[str, object] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return s


def all_paths(node: dict[str, object], path: str = "") -> list[str]:
    out = [path] if path else []
    items = node.get("items")
    if node.get("type") == "array" and isinstance(items, dict):
        # Children of object items appear as path[].child; the items node itself does not.
        return out + all_paths(items, path + "[]")[1:]
    props = node.get("properties")
    if isinstance(props, dict):
        for k, v in props.items():
            out += all_paths(v, f"{path}.{k}" if path else k)
    return out


def test_crd_reference_covers_every_field() -> None:
    text = (DOCS / "crd-reference.md").read_text()
    for path in all_paths(schema()):
        if path.startswith(("spec", "status")) and path not in ("spec", "status"):
            assert f"`{path}`" in text, path


def test_tuning_guide_covers_every_scaling_and_slo_knob() -> None:
    text = (DOCS / "tuning.md").read_text()
    spec = schema()["properties"]["spec"]["properties"]  # type: ignore[index]
    for section in ("scaling", "slo"):
        for knob in spec[section]["properties"]:
            assert f"`{knob}" in text or f"{knob}`" in text, f"spec.{section}.{knob}"


def _anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


@pytest.mark.parametrize("name", OWN_DOCS)
def test_local_links_resolve(name: str) -> None:
    doc = DOCS / name
    text = re.sub(r"`[^`\n]*`", "", doc.read_text())  # code spans are not links
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        assert dest.exists(), f"{name}: broken link {target}"
        if anchor and dest.suffix == ".md":
            headings = re.findall(r"^#+\s+(.*)$", dest.read_text(), flags=re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{name}: no anchor {target}"


def test_quickstart_is_the_users_flow() -> None:
    text = (DOCS / "quickstart.md").read_text()
    assert "helm install tritonscale helm/tritonscale" in text
    assert "kubectl apply -f examples/resnet50.yaml" in text
    assert "kubectl get sm" in text
    assert (REPO / "examples" / "resnet50.yaml").exists()
    assert (REPO / "helm" / "tritonscale" / "Chart.yaml").exists()


def test_comparison_is_honest_about_numbers() -> None:
    text = (DOCS / "comparison.md").read_text()
    for tool in ("HPA", "KEDA", "KServe", "Dynamo", "Karpenter"):
        assert tool in text, tool
    begin = text.index("<!-- BEGIN SIMULATOR RESULTS")
    end = text.index("<!-- END SIMULATOR RESULTS -->")
    assert begin < end
    assert "## Where tritonscale is weaker" in text
    # Outside the simulator section no percentage or dollar figure is claimed.
    outside = text[:begin] + text[end:]
    assert not re.search(r"\d+(\.\d+)?\s*%|\$\s*\d", outside)


def test_concepts_explain_the_core_ideas() -> None:
    text = (DOCS / "concepts.md").read_text().lower()
    for idea in ("scaledmodel", "variant", "node pool", "slo", "make-before-break",
                 "safe plan", "degradation ladder", "spot protection"):  # fmt: skip
        assert idea in text, idea
    desc = schema()["properties"]["status"]["properties"]["conditions"]["description"]  # type: ignore[index]
    for cond in re.findall(r"[A-Z][A-Za-z]+", str(desc).split(":", 1)[1]):
        assert f"`{cond}`" in (DOCS / "concepts.md").read_text(), cond


def test_metrics_doc_lists_every_exported_metric() -> None:
    from tritonscale.adapters.metrics import OperatorMetrics

    text = (DOCS / "metrics.md").read_text()
    for family in OperatorMetrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in text, name
