"""Packaging: the three folders form one `vcam` namespace; every package folder is listed; pyproject.toml
declares what the code imports (and imports what it declares), with one OpenCV."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("vcam", "model", "tray")
#: import names that differ from the name of the distribution that provides them
IMPORT_DISTRIBUTIONS = {
    "PIL": "pillow",
    "cv2": "opencv-python-headless",
    "skimage": "scikit-image",
    "Xlib": "python-xlib",
}
#: imports the operating system provides rather than PyPI, with where they come from
SYSTEM_IMPORTS = {"gi": "Debian's python3-gi: the tray's GTK / AppIndicator menus on Linux (.ci/run installs it)"}
#: declared distributions no source file imports, and why they are declared
NOT_IMPORTED = {
    "accelerate": "diffusers and transformers load large checkpoints with it",
    "onnx": "torch.onnx.export builds the stream step's graph with it (model/onnx_step.py)",
}
#: extras of tools for developers (test runner, linters), not imported by the app
TOOL_EXTRAS = ("dev",)


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(include_tools: bool = True) -> dict[str, Requirement]:
    """Every requirement of pyproject.toml (dependencies and extras) by normalized distribution name."""
    project = _pyproject()["project"]
    lines = list(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        if include_tools or extra not in TOOL_EXTRAS:
            lines += requirements
    return {_normalized(Requirement(line).name): Requirement(line) for line in lines}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level names of every absolute import in the app's source that is neither stdlib nor the app itself."""
    found: dict[str, set[str]] = {}
    for folder in SOURCE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("vcam", "__future__"):
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = config["package-dir"]
    found: set[str] = set()
    for package, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]) if relative.parts else package)
    # a sub-folder of vcam/ that is mapped elsewhere (none today) would show twice; keep the mapped names
    assert found == listed, f"missing from pyproject: {found - listed}; listed but absent: {listed - found}"


def test_the_namespace_maps_model_and_tray() -> None:
    import vcam.model
    import vcam.tray

    assert Path(vcam.model.__path__[0]).resolve() == (ROOT / "model").resolve()
    assert Path(vcam.tray.__path__[0]).resolve() == (ROOT / "tray").resolve()


def test_licence_is_gpl_compatible_and_present() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "GPL-2.0-or-later"
    assert "GNU GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text()
    assert any(dep.startswith("torch>=") for dep in project["dependencies"])  # a lower bound only


def test_every_third_party_import_is_declared() -> None:
    declared = _declared()
    undeclared = {
        name: sorted(files)[:3]
        for name, files in _third_party_imports().items()
        if name not in SYSTEM_IMPORTS and _normalized(IMPORT_DISTRIBUTIONS.get(name, name)) not in declared
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_declared_dependency_is_imported() -> None:
    imported = {_normalized(IMPORT_DISTRIBUTIONS.get(name, name)) for name in _third_party_imports()}
    unused = set(_declared(include_tools=False)) - imported - set(NOT_IMPORTED)
    assert not unused, f"declared in pyproject.toml but imported nowhere: {sorted(unused)}"


def test_one_opencv_distribution_is_declared_and_mediapipe_does_not_pull_another() -> None:
    declared = _declared()
    assert sorted(name for name in declared if name.startswith("opencv")) == ["opencv-python-headless"]
    mediapipe = declared["mediapipe"].specifier
    # 0.10.30 and 0.10.31 depend on no OpenCV; from 0.10.32 on mediapipe depends on opencv-contrib-python
    assert mediapipe.contains("0.10.31") and not mediapipe.contains("0.10.32") and not mediapipe.contains("1.2.3")


def test_doctor_suggests_the_declared_mediapipe_range() -> None:
    from vcam.doctor import declared_requirement

    assert Requirement(declared_requirement("mediapipe")).specifier == _declared()["mediapipe"].specifier
    assert declared_requirement("no-such-distribution") == "no-such-distribution"
