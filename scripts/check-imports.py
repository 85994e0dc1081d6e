#!/usr/bin/env python3
"""Keeps the layers apart: every target imports exactly what Package.swift
declares for it. SwiftPM lets a target import any module built before it,
declared or not, and its own --explicit-target-dependency-import-check
accepts anything in a target's transitive closure, so neither guards the
layers; this does, in `make test` and CI.

For each target (from `swift package dump-package`), the modules its
sources import are compared with its declared direct dependencies:
  - an import of a package module it does not declare fails;
  - a declared dependency it never imports fails;
  - an import a layer must not see fails (the rules below), and so does
    any @_exported import (a module's API is reached through its own
    public names, not re-exported wholesale).
System modules (Glibc, Synchronization, Testing, ...) are not the
package's and are not counted.

usage: scripts/check-imports.py [PACKAGE-FOLDER]   (this package by default; exit 0 when clean)
"""
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules a layer must never see, whatever Package.swift says: libuv stays
# in the event loop, host clients need no libuv and no server, pure layers
# stay pure.
FORBIDDEN = {
    "CLibUV": lambda target: target not in ("EventLoop",),
    "EventLoop": lambda target: target in ("IVClient", "IVCtl", "WireFormat", "LinuxSystem", "CLinux"),
    "ServerCore": lambda target: target in ("IVClient", "IVCtl", "WireFormat", "LinuxSystem", "EventLoop"),
    "IVServer": lambda target: target in ("IVClient", "IVCtl", "MultiPeer", "ServerCore", "EventLoop", "LinuxSystem", "WireFormat"),
    "MultiPeer": lambda target: target in ("IVClient", "IVCtl", "IVServer", "ServerCore", "EventLoop", "LinuxSystem", "WireFormat"),
    "LinuxSystem": lambda target: target in ("WireFormat",),
    "CLinux": lambda target: target in ("WireFormat",),
}

IMPORT = re.compile(
    r"^\s*(?P<attributes>(?:@[\w()]+\s+)*)import\s+(?:(?:typealias|struct|class|enum|protocol|let|var|func)\s+)?(?P<module>[A-Za-z_][A-Za-z0-9_]*)",
    re.MULTILINE)


def package():
    # A scratch folder of its own: the package's .build may be locked by a
    # build or test run in progress (make test runs this check from one).
    with tempfile.TemporaryDirectory(prefix="ivs-imports-") as scratch:
        dump = subprocess.run(["swift", "package", "--package-path", ROOT, "--scratch-path", scratch, "dump-package"],
                              check=True, capture_output=True, text=True).stdout
    return json.loads(dump)


def declared_dependencies(target):
    names = []
    for dependency in target["dependencies"]:
        kind = next(iter(dependency))
        names.append(dependency[kind][0])
    return names


def source_folder(target):
    if target.get("path"):
        return os.path.join(ROOT, target["path"])
    return os.path.join(ROOT, "Tests" if target["type"] == "test" else "Sources", target["name"])


def imports_of(folder):
    found = {}
    exported = []
    for directory, _, files in os.walk(folder):
        for name in sorted(files):
            if not name.endswith(".swift"):
                continue
            path = os.path.join(directory, name)
            with open(path, encoding="utf-8") as source:
                text = source.read()
            for match in IMPORT.finditer(text):
                module = match.group("module")
                found.setdefault(module, os.path.relpath(path, ROOT))
                if "@_exported" in match.group("attributes"):
                    exported.append(f"{os.path.relpath(path, ROOT)}: @_exported import {module}")
    return found, exported


def main():
    manifest = package()
    targets = manifest["targets"]
    # The package's own modules; a product of another package counts only
    # where it is declared (it is imported under its product's name).
    modules = {target["name"] for target in targets if target["type"] != "test"}
    problems = []
    for target in targets:
        name = target["name"]
        declared = declared_dependencies(target)
        if target["type"] == "system":
            continue
        imported, exported = imports_of(source_folder(target))
        problems += exported
        package_imports = {module: where for module, where in imported.items()
                           if module in modules or module in declared}
        for module, where in sorted(package_imports.items()):
            if module == name:
                continue
            if module not in declared:
                problems.append(f"{name}: imports {module} ({where}) but does not declare it in Package.swift")
            rule = FORBIDDEN.get(module)
            if rule and rule(name):
                problems.append(f"{name}: imports {module} ({where}), which this layer must not see")
        for module in declared:
            if module not in imported:
                problems.append(f"{name}: declares {module} in Package.swift but never imports it")
    if problems:
        print("import check: the layers are not as Package.swift declares them:")
        for problem in problems:
            print("  " + problem)
        print(f"imports: 0 passed, {len(problems)} failed")
        return 1
    print(f"import check: {len(targets)} targets import exactly what they declare, and no layer sees what it must not")
    return 0


if __name__ == "__main__":
    sys.exit(main())
