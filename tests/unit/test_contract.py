"""action.yml, the code, the reference and the image agree.

- every input action.yml declares is read by the code, and the code reads no undeclared input
  (the runner only sets INPUT_* for declared inputs);
- every output the code writes is declared, and every declared output is written;
- the Inputs and Outputs sections of docs/reference.md document exactly the declared names;
- the image gets everything the runtime code imports: requirements.txt pins every runtime
  dependency of pyproject.toml, and the code imports nothing that is not in the image.

The code is read with `ast`, not run: inputs are the string literals passed to an input reader
(`gha.input("ip-versions")`, `inp("mode", ...)`) or spelled `"INPUT_IP-VERSIONS"`; outputs are the
literal names passed to `set_output`.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "fly_pg_external"
RUNTIME_FILES = [ROOT / "entrypoint.py", *sorted(PACKAGE.rglob("*.py"))]
INPUT_READERS = {"input", "inp", "read_input", "get_input", "get_boolean_input"}
# Importable in the image but not from the lock: the standard library and the code itself.
LOCAL_MODULES = {"fly_pg_external"}


def action() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "action.yml").read_text())
    assert isinstance(data, dict)
    return data


def declared(kind: str) -> set[str]:
    return set(action().get(kind) or {})


def calls(files: list[Path]) -> list[tuple[Path, ast.Call, str]]:
    """Every call in `files` with the called function's (last) name."""
    out = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                name = (
                    func.id
                    if isinstance(func, ast.Name)
                    else func.attr
                    if isinstance(func, ast.Attribute)
                    else ""
                )
                out.append((path, node, name))
    return out


def literal_first_arg(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def inputs_read_by_code() -> set[str]:
    names = {
        arg
        for _, call, func in calls(RUNTIME_FILES)
        if func in INPUT_READERS and (arg := literal_first_arg(call)) is not None
    }
    for path in RUNTIME_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = re.fullmatch(r"INPUT_([A-Z0-9_-]+)", node.value)
                if match:
                    names.add(match.group(1).lower())
    return names


def outputs_written_by_code() -> set[str]:
    names = set()
    for path, call, func in calls(RUNTIME_FILES):
        if func != "set_output" or path.name == "gha.py":
            continue  # gha.py defines set_output; its callers name the outputs
        name = literal_first_arg(call)
        assert name is not None, (
            f"{path.relative_to(ROOT)}:{call.lineno}: pass the output name to set_output as a "
            "string literal, so this test can check it against action.yml"
        )
        names.add(name)
    return names


REFERENCE = ROOT / "docs" / "reference.md"


def reference_section(name: str) -> str:
    text = REFERENCE.read_text()
    match = re.search(rf"<!-- section:{name} -->(.*?)<!-- /section:{name} -->", text, flags=re.S)
    assert match, f"docs/reference.md has no <!-- section:{name} --> … <!-- /section:{name} -->"
    return match.group(1)


def documented_names(section: str) -> set[str]:
    """Names in `backticks` at the start of a table row or a list item of the section."""
    return set(re.findall(r"^\s*(?:\|\s*|[-*]\s+)`([a-z0-9-]+)`", section, flags=re.M))


def test_every_declared_input_is_read_by_the_code() -> None:
    missing = declared("inputs") - inputs_read_by_code()
    assert not missing, f"declared in action.yml but never read: {sorted(missing)}"


def test_the_code_reads_only_declared_inputs() -> None:
    extra = inputs_read_by_code() - declared("inputs")
    assert not extra, f"read by the code but not declared in action.yml: {sorted(extra)}"


def test_every_output_written_is_declared() -> None:
    extra = outputs_written_by_code() - declared("outputs")
    assert not extra, f"written by the code but not declared in action.yml: {sorted(extra)}"


def test_every_declared_output_is_written() -> None:
    missing = declared("outputs") - outputs_written_by_code()
    assert not missing, f"declared in action.yml but never written: {sorted(missing)}"


@pytest.mark.parametrize("kind", ["inputs", "outputs"])
def test_reference_documents_exactly_the_declared_names(kind: str) -> None:
    documented = documented_names(reference_section(kind))
    missing = declared(kind) - documented
    stale = documented - declared(kind)
    assert not missing, f"docs/reference.md {kind} section does not document: {sorted(missing)}"
    assert not stale, f"docs/reference.md {kind} section documents undeclared: {sorted(stale)}"


def test_every_declared_input_has_a_description_and_the_required_one_no_default() -> None:
    for name, spec in (action().get("inputs") or {}).items():
        assert spec.get("description"), f"input {name} has no description"
        if spec.get("required"):
            assert "default" not in spec, f"required input {name} should not have a default"
        else:
            assert "default" in spec, f"optional input {name} needs a default"


def test_action_yml_builds_the_dockerfile_or_pins_an_image_by_digest() -> None:
    # main builds the Dockerfile (CI tests HEAD); a release commit pins the pushed image.
    runs = action()["runs"]
    assert runs["using"] == "docker"
    image = runs["image"]
    assert image == "Dockerfile" or re.fullmatch(
        r"docker://ghcr\.io/[a-z0-9_.-]+/fly-pg-external@sha256:[0-9a-f]{64}", image
    ), f"runs.image is {image!r}"


def locked() -> dict[str, str]:
    text = (ROOT / "requirements.txt").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, flags=re.M))
    return {canonicalize_name(k): v for k, v in pins.items()}


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    pins = locked()
    for dependency in map(Requirement, dependencies):
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{name} is not in requirements.txt; run `make lock`"
        assert dependency.specifier.contains(pins[name], prereleases=True), (
            f"requirements.txt pins {name}=={pins[name]}, outside {dependency.specifier}; "
            "run `make lock`"
        )
    text = (ROOT / "requirements.txt").read_text()
    blocks = re.split(r"^(?=[A-Za-z0-9_.-]+==)", text, flags=re.M)[1:]
    unhashed = [b.split("==")[0] for b in blocks if "--hash=sha256:" not in b]
    assert not unhashed, f"pins without hashes: {unhashed}"


def imported_top_level_modules() -> set[str]:
    names: set[str] = set()
    for path in RUNTIME_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_runtime_code_imports_only_what_the_image_contains() -> None:
    # The image holds the standard library, fly_pg_external and the locked distributions: an
    # import of the simulator, the tests or an unlocked package would only fail in a container.
    third_party = imported_top_level_modules() - set(sys.stdlib_module_names) - LOCAL_MODULES
    pins = locked()
    distributions = packages_distributions()
    for module in sorted(third_party):
        providers = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert providers, f"runtime code imports {module!r}, which no installed package provides"
        assert providers & set(pins), (
            f"runtime code imports {module!r} (from {sorted(providers)}), which requirements.txt "
            "does not install: add it to [project.dependencies] and run `make lock`"
        )
