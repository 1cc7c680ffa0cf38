"""Generated documentation and the facts the documentation tests check, read from the sources.

- `crd_reference()` renders docs/crd-reference.md from crds/*.yaml: every field under `spec` and `status` with its
  type, whether it is required, its default, its enum values and other schema limits, its description, and every
  CEL rule (`x-kubernetes-validations`) with its message. Nothing is kept by hand, so the page cannot drift from the
  CRD (test_docs.py compares the checked-in page with a fresh rendering).
- `auth_env_vars()`, `condition_reasons()` and `event_reasons()` read the Rust sources for what the docs must
  mention: the environment variables of the authorisation service's contract, and the condition and Event reasons
  the operator can set.

CLI (run from anywhere):
    python tests/python/docs_support.py crd-reference            rewrite docs/crd-reference.md
    python tests/python/docs_support.py crd-reference --check    exit 1 if docs/crd-reference.md is stale
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO_ROOT / "crds"
DOCS_DIR = REPO_ROOT / "docs"
CRD_REFERENCE = DOCS_DIR / "crd-reference.md"
EXAMPLES_DIR = REPO_ROOT / "examples"
AUTH_CONTRACT = REPO_ROOT / "auth-sidecar" / "src" / "contract.rs"
OPERATOR_SRC = REPO_ROOT / "operator" / "src"

REGENERATE_COMMAND = "python tests/python/docs_support.py crd-reference"


class DocsSourceError(Exception):
    """A source the docs are generated from, or checked against, is missing or no longer has the expected shape."""


# --------------------------------------------------------------------------------------------------------------
# CRD reference


@dataclasses.dataclass
class Field:
    """One row of the field table."""

    path: str
    type: str
    required: bool
    default: str
    constraints: list[str]
    description: str


@dataclasses.dataclass
class CelRule:
    """One `x-kubernetes-validations` entry and the field it is attached to."""

    path: str
    rule: str
    message: str
    field_path: str


def load_crds(crds_dir: Path = CRDS_DIR) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in `crds_dir/*.yaml`, ordered by file name then position."""
    files = sorted(crds_dir.glob("*.yaml"))
    if not files:
        raise DocsSourceError(f"no CRD files in {crds_dir}")
    crds = []
    for path in files:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                crds.append(document)
    if not crds:
        raise DocsSourceError(f"no CustomResourceDefinition in {', '.join(p.name for p in files)}")
    return crds


def _number(value: Any) -> str:
    """Schema limits come as floats from the generator (`65535.0`); show whole numbers without the fraction."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _inline(value: Any) -> str:
    """A default value as one line of JSON (strings bare)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "), sort_keys=False)


def _code(text: str) -> str:
    """A Markdown code span that survives a table cell (pipes escaped, backticks fenced)."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def _cell(text: str) -> str:
    """Free text for a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _type_of(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items", {})
        return f"[]{_type_of(items)}"
    if kind == "object":
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            return f"map[string]{_type_of(additional)}"
        if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
            return "object (free-form)"
        return "object"
    if kind == "integer" and schema.get("format"):
        return f"integer ({schema['format']})"
    if kind == "string" and schema.get("format"):
        return f"string ({schema['format']})"
    if kind is None:
        return "any"
    return str(kind)


def _range(low: Any, high: Any) -> str:
    if low is not None and high is not None:
        return f"{_number(low)} to {_number(high)}"
    if low is not None:
        return f"at least {_number(low)}"
    return f"at most {_number(high)}"


def _constraints(schema: dict[str, Any]) -> list[str]:
    found = []
    if "enum" in schema:
        found.append("one of " + ", ".join(_code(str(v)) for v in schema["enum"]))
    if "minimum" in schema or "maximum" in schema:
        found.append("value " + _range(schema.get("minimum"), schema.get("maximum")))
    if "minLength" in schema or "maxLength" in schema:
        found.append("length " + _range(schema.get("minLength"), schema.get("maxLength")))
    if "minItems" in schema or "maxItems" in schema:
        found.append("items " + _range(schema.get("minItems"), schema.get("maxItems")))
    for alternative_key in ("oneOf", "anyOf"):
        alternatives = schema.get(alternative_key)
        if alternatives:
            names = [name for alt in alternatives for name in alt.get("required", [])]
            word = "exactly one" if alternative_key == "oneOf" else "at least one"
            found.append(f"{word} of " + ", ".join(_code(n) for n in names))
    if schema.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(_code(k) for k in schema.get("x-kubernetes-list-map-keys", []))
        found.append(f"list keyed by {keys}")
    if schema.get("x-kubernetes-preserve-unknown-fields") and schema.get("properties"):
        found.append("unknown fields are kept")
    items = schema.get("items")
    if isinstance(items, dict):
        found += [f"each item: {constraint}" for constraint in _constraints(items)]
    return found


def walk_schema(
    schema: dict[str, Any], path: str, required: bool = False
) -> Iterator[tuple[Field | None, list[CelRule]]]:
    """Depth first over `schema`: a Field for `path`, then its properties (alphabetically) and array items."""
    rules = [
        CelRule(
            path=path,
            rule=str(entry.get("rule", "")),
            message=str(entry.get("message", "")),
            field_path=str(entry.get("fieldPath", "")),
        )
        for entry in schema.get("x-kubernetes-validations", [])
    ]
    default = _inline(schema["default"]) if "default" in schema else ""
    yield (
        Field(
            path=path,
            type=_type_of(schema),
            required=required,
            default=default,
            constraints=_constraints(schema),
            description=str(schema.get("description", "")),
        ),
        rules,
    )
    required_children = set(schema.get("required", []))
    for name in sorted(schema.get("properties", {})):
        child = schema["properties"][name]
        yield from walk_schema(child, f"{path}.{name}", name in required_children)
    items = schema.get("items")
    if isinstance(items, dict) and (items.get("properties") or items.get("x-kubernetes-validations")):
        # The item itself is described by the array's row; only its fields get rows of their own.
        for item_field, item_rules in walk_schema(items, f"{path}[]"):
            if item_field is not None and item_field.path == f"{path}[]":
                yield (None, item_rules)
            else:
                yield (item_field, item_rules)


def _field_table(fields: Iterable[Field]) -> list[str]:
    lines = [
        "| Field | Type | Required | Default | Allowed values | Description |",
        "|---|---|---|---|---|---|",
    ]
    for field in fields:
        lines.append(
            "| "
            + " | ".join(
                [
                    _code(field.path),
                    _cell(field.type),
                    "yes" if field.required else "",
                    _code(field.default) if field.default else "",
                    "; ".join(field.constraints),
                    _cell(field.description),
                ]
            )
            + " |"
        )
    return lines


def _rule_table(rules: Iterable[CelRule]) -> list[str]:
    lines = [
        "| Checked on | Rule (CEL) | Message | Reported at |",
        "|---|---|---|---|",
    ]
    for rule in rules:
        reported = rule.path + rule.field_path if rule.field_path else rule.path
        lines.append(
            f"| {_code(rule.path)} | {_code(rule.rule)} | {_cell(rule.message)} | {_code(reported)} |"
        )
    return lines


def _version_section(crd: dict[str, Any], version: dict[str, Any]) -> list[str]:
    names = crd["spec"]["names"]
    group = crd["spec"]["group"]
    schema = version.get("schema", {}).get("openAPIV3Schema", {})
    properties = schema.get("properties", {})
    lines = [f"## {names['kind']} `{group}/{version['name']}`", ""]
    flags = []
    if version.get("served"):
        flags.append("served")
    if version.get("storage"):
        flags.append("storage version")
    if "status" in version.get("subresources", {}):
        flags.append("status subresource")
    lines.append(f"Version `{version['name']}`: {', '.join(flags) or 'not served'}.")
    if schema.get("description"):
        lines += ["", _cell(schema["description"]) + "."]
    columns = version.get("additionalPrinterColumns", [])
    if columns:
        lines += [
            "",
            "Columns of `kubectl get`:",
            "",
            "| Column | Type | JSON path |",
            "|---|---|---|",
        ]
        lines += [f"| {c['name']} | {c['type']} | {_code(c['jsonPath'])} |" for c in columns]

    for top in ("spec", "status"):
        if top not in properties:
            continue
        fields: list[Field] = []
        rules: list[CelRule] = []
        for field, found_rules in walk_schema(properties[top], top, top in schema.get("required", [])):
            if field is not None:
                fields.append(field)
            rules.extend(found_rules)
        lines += ["", f"### `{top}`", ""]
        lines += _field_table(fields)
        if rules:
            lines += [
                "",
                f"#### Validation rules on `{top}`",
                "",
                "The API server evaluates these rules when the resource is created or changed and refuses a "
                "resource that breaks one, with the message shown. The operator repeats them, and checks more, "
                "before it applies anything (see [troubleshooting](troubleshooting.md), reason `InvalidSpec`).",
                "",
            ]
            lines += _rule_table(rules)
    return lines


def crd_reference(crds: list[dict[str, Any]] | None = None) -> str:
    """The complete text of docs/crd-reference.md."""
    crds = load_crds() if crds is None else crds
    lines = [
        f"<!-- Generated by `{REGENERATE_COMMAND}` from crds/*.yaml; do not edit by hand. -->",
        "",
        "# Custom resource reference",
        "",
        "Every field of the custom resources this operator serves, read from the CRDs in `crds/` (which "
        "`matrixrtc-operator crd` generates from the Rust types). Paths use `[]` for \"every item of the list\". "
        "\"Required\" means the field must be set when its parent object is present. A default is filled in by "
        "the API server when the field is left out. `kubectl explain matrixrtctransport.spec` shows the same "
        "descriptions.",
    ]
    for crd in crds:
        names = crd["spec"]["names"]
        lines += [
            "",
            f"CRD `{crd['metadata']['name']}`: kind `{names['kind']}`, plural `{names['plural']}`, "
            f"singular `{names.get('singular', '')}`, short names "
            + (", ".join(f"`{n}`" for n in names.get("shortNames", [])) or "none")
            + f", {crd['spec']['scope'].lower()}.",
            "",
        ]
        for version in crd["spec"]["versions"]:
            lines += _version_section(crd, version)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Facts read from the Rust sources


def _without_tests(source: str) -> str:
    """Rust source up to its first `#[cfg(test)]` (where this project keeps the tests module)."""
    return source.split("#[cfg(test)]", 1)[0]


def _block_after(source: str, opener: str, where: str) -> str:
    """The text between the `{` that follows `opener` and its matching `}`."""
    start = source.find(opener)
    if start < 0:
        raise DocsSourceError(f"{where}: `{opener}` not found")
    brace = source.find("{", start)
    depth = 0
    for index in range(brace, len(source)):
        if source[index] == "{":
            depth += 1
        elif source[index] == "}":
            depth -= 1
            if depth == 0:
                return source[brace + 1 : index]
    raise DocsSourceError(f"{where}: `{opener}` has no closing brace")


def auth_env_vars(contract: Path = AUTH_CONTRACT) -> list[str]:
    """The environment variables of the authorisation service's contract (`pub mod env` in contract.rs)."""
    block = _block_after(contract.read_text(encoding="utf-8"), "pub mod env", str(contract))
    pairs = re.findall(r'pub const (\w+): &str\s*=\s*"([^"]+)"', block)
    if not pairs:
        raise DocsSourceError(f"{contract}: no `pub const NAME: &str = \"...\"` in `pub mod env`")
    for constant, value in pairs:
        if constant != value:
            raise DocsSourceError(f"{contract}: constant {constant} holds {value!r}; the parser assumes they match")
    return [value for _, value in pairs]


def condition_reasons(src: Path = OPERATOR_SRC) -> dict[str, set[str]]:
    """Every literal condition reason the operator can write, by the source file it comes from.

    - status.rs: the reasons given to `condition(condition::X, true|false, "Reason", ...)`;
    - controller/mod.rs: the `=> "Reason"` arms of `fn condition_reason`, and `reason: "Reason"` outcomes in
      any module of controller/;
    - controller/dereference/credentials.rs and app_service.rs: the `=> "Reason"` arms of their error's
      `reason` (which `condition_reason` delegates to).
    """
    found: dict[str, set[str]] = {}
    status = _without_tests((src / "status.rs").read_text(encoding="utf-8"))
    literal = re.findall(r'condition\(\s*condition::[A-Z_]+,\s*(?:true|false),\s*"([A-Za-z]+)"', status)
    # The one call that passes a variable forwards `Outcome::Failed`'s reason, which the controller supplies.
    forwarded = re.findall(r"condition\(\s*condition::[A-Z_]+,\s*(?:true|false),\s*reason,", status)
    calls = re.findall(r"condition\(\s*condition::", status)
    _all_accounted_for("status.rs", "condition(condition::", len(calls), len(literal) + len(forwarded))
    found["status.rs"] = set(literal)

    controller = _without_tests((src / CONTROLLER_MOD).read_text(encoding="utf-8"))
    arms = _block_after(controller, "fn condition_reason", CONTROLLER_MOD)
    arm_literals = re.findall(r'=>\s*"([A-Za-z]+)"', arms)
    delegated = re.findall(r"=>\s*error\.reason\(\)", arms)
    _all_accounted_for(f"{CONTROLLER_MOD} condition_reason", "=>", arms.count("=>"), len(arm_literals) + len(delegated))
    outcomes = {
        reason
        for text in _controller_sources(src).values()
        for reason in re.findall(r'\breason:\s*"([A-Za-z]+)"', text)
    }
    found[CONTROLLER_MOD] = set(arm_literals) | outcomes

    for file in DELEGATED_REASONS:
        source = _without_tests((src / file).read_text(encoding="utf-8"))
        reason_fn = _block_after(source, "pub fn reason(&self)", file)
        literals = re.findall(r'=>\s*"([A-Za-z]+)"', reason_fn)
        _all_accounted_for(f"{file} reason", "=>", reason_fn.count("=>"), len(literals))
        found[file] = set(literals)

    for file, reasons in found.items():
        if not reasons:
            raise DocsSourceError(f"operator/src/{file}: no condition reason found; has the code changed shape?")
    return found


# The controller's modules, relative to operator/src: the pipeline with `condition_reason`, and the errors whose
# `reason()` it delegates to.
CONTROLLER_MOD = "controller/mod.rs"
DELEGATED_REASONS = ("controller/dereference/credentials.rs", "controller/dereference/app_service.rs")


def _controller_sources(src: Path) -> dict[str, str]:
    """The production code of every module under operator/src/controller (tests cut off), by relative path."""
    files = sorted(path for path in (src / "controller").rglob("*.rs") if path.name != "tests.rs")
    if not files:
        raise DocsSourceError(f"{src / 'controller'}: no Rust modules")
    return {
        path.relative_to(src).as_posix(): _without_tests(path.read_text(encoding="utf-8")) for path in files
    }


def _all_accounted_for(where: str, what: str, total: int, understood: int) -> None:
    """Fails when the code has more `what` sites than the patterns above understand (a reason would be missed)."""
    if total != understood:
        raise DocsSourceError(
            f"operator/src/{where}: {total} `{what}` sites but only {understood} match the patterns "
            "docs_support.py knows; update condition_reasons() so that no reason is missed"
        )


def event_reasons(src: Path = OPERATOR_SRC) -> set[str]:
    """Literal reasons of the Events the controller publishes (`EventType::X, "Reason"`).

    Warning Events about a Degraded condition reuse that condition's reason, which `condition_reasons` covers.
    """
    reasons = {
        reason
        for text in _controller_sources(src).values()
        for reason in re.findall(r'EventType::(?:Normal|Warning),\s*"([A-Za-z]+)"', text)
    }
    if not reasons:
        raise DocsSourceError("operator/src/controller/: no Event reason found; has the code changed shape?")
    return reasons


def example_files(examples_dir: Path = EXAMPLES_DIR) -> list[str]:
    """Repository-relative paths of the example resources."""
    files = sorted(examples_dir.glob("*.yaml"))
    if not files:
        raise DocsSourceError(f"no examples in {examples_dir}")
    return [path.relative_to(REPO_ROOT).as_posix() for path in files]


# --------------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    reference = commands.add_parser("crd-reference", help="rewrite docs/crd-reference.md from crds/*.yaml")
    reference.add_argument("--check", action="store_true", help="only report whether the page is up to date")
    args = parser.parse_args(argv)

    if args.command == "crd-reference":
        text = crd_reference()
        if args.check:
            current = CRD_REFERENCE.read_text(encoding="utf-8") if CRD_REFERENCE.exists() else ""
            if current != text:
                print(f"{CRD_REFERENCE.relative_to(REPO_ROOT)} is stale; run: {REGENERATE_COMMAND}", file=sys.stderr)
                return 1
            print(f"{CRD_REFERENCE.relative_to(REPO_ROOT)} is up to date")
            return 0
        CRD_REFERENCE.write_text(text, encoding="utf-8")
        print(f"wrote {CRD_REFERENCE.relative_to(REPO_ROOT)}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
