"""The documentation stays true to the code: the generated CRD reference matches crds/, and the hand-written pages
mention every environment variable, example and status reason the code has.

What the pages must cover is read from the sources (see docs_support.py), so adding a variable, an example or a
condition reason without documenting it fails here.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

import docs_support as ds

pytestmark = pytest.mark.timeout(60)

INSTALL = ds.DOCS_DIR / "install.md"
TROUBLESHOOTING = ds.DOCS_DIR / "troubleshooting.md"
AUTH_SERVICE = ds.DOCS_DIR / "auth-service.md"
README = ds.REPO_ROOT / "README.md"


def read(path: Path) -> str:
    assert path.is_file(), f"{path.relative_to(ds.REPO_ROOT)} is missing"
    return path.read_text(encoding="utf-8")


def has_table_row(text: str, code: str) -> bool:
    """Whether a Markdown table row starts with the code span `code`."""
    return re.search(rf"^\|\s*`{re.escape(code)}`\s*\|", text, re.MULTILINE) is not None


# --------------------------------------------------------------------------------------------------------------
# The generated CRD reference


def test_crd_reference_is_up_to_date() -> None:
    expected = ds.crd_reference()
    current = read(ds.CRD_REFERENCE)
    if current != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    expected.splitlines(keepends=True),
                    "docs/crd-reference.md (checked in)",
                    "generated from crds/",
                )
            )[:40]
        )
        pytest.fail(
            f"docs/crd-reference.md does not match crds/*.yaml; regenerate it with `{ds.REGENERATE_COMMAND}`\n{diff}"
        )


def schema_paths(schema: dict[str, Any], path: str) -> Iterator[str]:
    """Every property path under `schema`, walked independently of the generator."""
    yield path
    for name, child in schema.get("properties", {}).items():
        yield from schema_paths(child, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict):
        for name, child in items.get("properties", {}).items():
            yield from schema_paths(child, f"{path}[].{name}")


def schema_rules(schema: dict[str, Any]) -> Iterator[dict[str, str]]:
    yield from schema.get("x-kubernetes-validations", [])
    for child in schema.get("properties", {}).values():
        yield from schema_rules(child)
    if isinstance(schema.get("items"), dict):
        yield from schema_rules(schema["items"])


def test_crd_reference_has_a_row_for_every_field_and_every_rule_message() -> None:
    text = ds.crd_reference()
    crds = ds.load_crds()
    checked = 0
    for crd in crds:
        for version in crd["spec"]["versions"]:
            properties = version["schema"]["openAPIV3Schema"]["properties"]
            for top in ("spec", "status"):
                for path in schema_paths(properties[top], top):
                    assert has_table_row(text, path), f"no row for {path}"
                    checked += 1
                for rule in schema_rules(properties[top]):
                    assert ds._cell(rule["message"]) in text, f"CEL message missing: {rule['message']}"
                    assert ds._code(rule["rule"]) in text, f"CEL rule missing: {rule['rule']}"
    assert checked > 50, "the CRD walk found suspiciously few fields"


SAMPLE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.dev"},
    "spec": {
        "group": "example.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "x-kubernetes-validations": [
                                    {"rule": "self.size > 1 || has(self.mode)", "message": "small needs a mode",
                                     "fieldPath": ".mode"}
                                ],
                                "properties": {
                                    "size": {"type": "integer", "format": "int32", "minimum": 1.0,
                                             "maximum": 9.0, "description": "How big.\nReally."},
                                    "mode": {"type": "string", "enum": ["Fast", "Slow"], "default": "Fast"},
                                    "pick": {
                                        "type": "object",
                                        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
                                        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                                    },
                                    "tags": {"type": "array", "maxItems": 3,
                                             "items": {"type": "string", "maxLength": 5}},
                                    "parts": {
                                        "type": "array",
                                        "items": {"type": "object", "required": ["id"],
                                                  "properties": {"id": {"type": "string"}}},
                                    },
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                },
                            },
                            "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
                        },
                    }
                },
            }
        ],
    },
}


def row(text: str, path: str) -> list[str]:
    match = re.search(rf"^\|\s*`{re.escape(path)}`\s*\|(.*)\|\s*$", text, re.MULTILINE)
    assert match, f"no row for {path} in:\n{text}"
    return [cell.strip() for cell in match.group(1).split(" | ")]


def test_generator_renders_types_requirements_defaults_limits_and_rules() -> None:
    text = ds.crd_reference([SAMPLE_CRD])
    # Columns after the path: type, required, default, allowed values, description.
    assert row(text, "spec.size") == ["integer (int32)", "yes", "", "value 1 to 9", "How big. Really."]
    assert row(text, "spec.mode") == ["string", "", "`Fast`", "one of `Fast`, `Slow`", ""]
    assert row(text, "spec.pick")[3] == "exactly one of `a`, `b`"
    assert row(text, "spec.pick.a")[1] == "", "a oneOf alternative is not a required field"
    assert row(text, "spec.tags")[:1] == ["[]string"]
    assert row(text, "spec.tags")[3] == "items at most 3; each item: length at most 5"
    assert row(text, "spec.parts[].id")[:2] == ["string", "yes"]
    assert row(text, "spec.labels")[0] == "map[string]string"
    assert row(text, "spec.extra")[0] == "object (free-form)"
    assert row(text, "status.ok")[0] == "boolean"
    assert "`spec.parts[]`" not in text, "list items are described by the list's row"
    assert "| `spec` | `self.size > 1 \\|\\| has(self.mode)` | small needs a mode | `spec.mode` |" in text
    assert "kind `Widget`" in text and "short names `wd`" in text
    assert "Version `v1`: served, storage version, status subresource." in text


def test_generator_check_mode_reports_staleness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "crd-reference.md"
    monkeypatch.setattr(ds, "CRD_REFERENCE", page)
    monkeypatch.setattr(ds, "REPO_ROOT", tmp_path)
    page.write_text("stale\n", encoding="utf-8")
    assert ds.main(["crd-reference", "--check"]) == 1
    assert page.read_text(encoding="utf-8") == "stale\n", "--check must not write"
    assert ds.main(["crd-reference"]) == 0
    assert page.read_text(encoding="utf-8") == ds.crd_reference()
    assert ds.main(["crd-reference", "--check"]) == 0


# --------------------------------------------------------------------------------------------------------------
# Hand-written pages against the code


def test_every_auth_service_env_var_has_a_row_in_the_auth_service_doc() -> None:
    variables = ds.auth_env_vars()
    assert "LIVEKIT_URL" in variables and len(variables) == len(set(variables))
    text = read(AUTH_SERVICE)
    missing = [name for name in variables if not has_table_row(text, name)]
    assert not missing, f"docs/auth-service.md has no table row for {missing} (from auth-sidecar/src/contract.rs)"


def test_every_example_is_mentioned_in_the_install_guide() -> None:
    text = read(INSTALL)
    missing = [path for path in ds.example_files() if f"`{path}`" not in text]
    assert not missing, f"docs/install.md does not mention {missing}"


def test_every_condition_reason_has_a_row_in_troubleshooting() -> None:
    reasons = set().union(*ds.condition_reasons().values())
    text = read(TROUBLESHOOTING)
    missing = sorted(reason for reason in reasons if not has_table_row(text, reason))
    assert not missing, f"docs/troubleshooting.md has no table row for the condition reasons {missing}"


def test_every_event_reason_is_explained_in_troubleshooting() -> None:
    text = read(TROUBLESHOOTING)
    missing = sorted(reason for reason in ds.event_reasons() if f"`{reason}`" not in text)
    assert not missing, f"docs/troubleshooting.md does not mention the Event reasons {missing}"


def test_reason_extraction_refuses_code_it_does_not_understand(tmp_path: Path) -> None:
    for name in ("status.rs", ds.CONTROLLER_MOD, *ds.DELEGATED_REASONS):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ds.OPERATOR_SRC / name).read_text(encoding="utf-8"), encoding="utf-8")
    status = tmp_path / "status.rs"
    # A new condition whose reason comes from a helper call: the extractor cannot see it and must say so.
    status.write_text(
        status.read_text(encoding="utf-8").replace(
            "fn set_discovery(",
            "fn extra() { condition(condition::READY, true, reason_of(), String::new()); }\n\nfn set_discovery(",
            1,
        ),
        encoding="utf-8",
    )
    with pytest.raises(ds.DocsSourceError, match="status.rs"):
        ds.condition_reasons(tmp_path)


# --------------------------------------------------------------------------------------------------------------
# Links


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(text: str) -> set[str]:
    without_code = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return {github_anchor(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", without_code, re.MULTILINE)}


LINKED_PAGES = [INSTALL, TROUBLESHOOTING, AUTH_SERVICE, ds.CRD_REFERENCE, README]


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: p.name)
def test_relative_links_point_at_existing_files_and_headings(page: Path) -> None:
    text = read(page)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors_of(destination.read_text("utf-8")):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ds.REPO_ROOT)}: broken links {broken}"


def test_anchor_rules_match_the_headings_these_docs_link_to() -> None:
    assert github_anchor("Allowlist surprises (`spec.homeservers.fullAccess`)") == (
        "allowlist-surprises-spechomeserversfullaccess"
    )
    assert github_anchor("3. Point Matrix at the transport") == "3-point-matrix-at-the-transport"
