"""``tritonscale validate``: files, documents, field-named errors, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tritonscale.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, doc: object, name: str = "sm.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump_all(doc) if isinstance(doc, list) else yaml.safe_dump(doc))
    return p


def test_examples_pass(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in (ROOT / "examples").glob("*.yaml"))
    assert main(["validate", *files]) == 0
    out = capsys.readouterr().out
    assert out.count("OK ScaledModel") == len(files)


BROKEN = [
    # (mutation, field path the error must name)
    (lambda s: s["variants"][0].update(precision="int4"), "spec.variants[0].precision"),
    (lambda s: s["scaling"].update(minReplicas=30), "spec.scaling.minReplicas"),
    (lambda s: s["slo"].update(minAccuracy=0.99), "spec.slo.minAccuracy"),
    (lambda s: s["slo"]["latency"].pop("targetMs"), "spec.slo.latency.targetMs"),
    (lambda s: s["nodePools"][1].update(name="t4-spot"), "spec.nodePools[1].name"),
    (lambda s: s["variants"][0].update(repository="s3://x"), "spec.variants[0].configName"),
    (lambda s: s["nodePools"][0].update(capcityType="spot"), "spec.nodePools[0].capcityType"),
    (
        lambda s: s["variants"][1]["profiles"][0]["batches"].append({"size": 128, "latencyMs": 30}),
        "spec.variants[1].profiles[0].batches[2].size",
    ),
    (
        lambda s: s["scaling"].update(safePlan=[{"variant": "fp8", "pool": "t4-spot",
                                                 "replicas": 1}]),
        "spec.scaling.safePlan[0].variant",
    ),
]


@pytest.mark.parametrize(("mutate", "field"), BROKEN, ids=[b[1] for b in BROKEN])
def test_broken_copy_fails_naming_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: object, field: str
) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "resnet50.yaml").read_text())
    mutate(doc["spec"])  # type: ignore[operator]
    path = _write(tmp_path, doc)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: {field}: " in out, out


def test_multi_document_and_other_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = yaml.safe_load((ROOT / "examples" / "resnet50.yaml").read_text())
    bad = yaml.safe_load((ROOT / "examples" / "bert.yaml").read_text())
    bad["spec"]["slo"]["priority"] = "speed"
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}}
    path = _write(tmp_path, [ns, good, bad])
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "skipped Namespace/ml" in out
    assert f"{path}[1]: OK ScaledModel default/resnet50" in out
    assert f"{path}[2]: spec.slo.priority: " in out


def test_invalid_yaml_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("spec: [unclosed\n")
    assert main(["validate", str(p), str(tmp_path / "nope.yaml")]) == 2
    out = capsys.readouterr().out
    assert f"{p}: line" in out
    assert "nope.yaml: cannot read" in out


def test_metadata_name_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "resnet50.yaml").read_text())
    doc["metadata"]["name"] = "a-very-long-scaledmodel-name"
    path = _write(tmp_path, doc)
    assert main(["validate", str(path)]) == 1
    assert f"{path}: metadata.name: " in capsys.readouterr().out


def test_wrong_types_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "resnet50.yaml").read_text())
    doc["spec"]["scaling"]["minReplicas"] = "two"
    doc["spec"]["nodePools"][0]["pricePerHour"] = -1
    path = _write(tmp_path, doc)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: spec.scaling.minReplicas: " in out
    assert f"{path}: spec.nodePools[0].pricePerHour: " in out
