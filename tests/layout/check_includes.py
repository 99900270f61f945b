#!/usr/bin/env python3
"""Checks that includes flow one way through the stages (README: "Repository layout"): every
#include "folder/..." in a folder's sources names that folder or one below it. Prints each
include that runs up the layers, with its file and line, and exits 1 when there is one.

    python3 tests/layout/check_includes.py [ROOT]
"""
import pathlib
import re
import sys

# Each folder and the folders it builds on directly; what those build on is allowed too.
BELOW = {
    "core": [],
    "text": ["core"],
    "formats": ["text"],
    "data": ["text"],
    "merge": ["core"],
    "pool": ["merge"],
    "genetic": ["pool"],
    "parallel": ["core"],
    "trainer": ["formats", "data", "parallel"],
    "router": ["trainer"],
    "convert": ["router", "genetic"],
    "report": ["core"],
    "experiments": ["convert", "report"],
    "cuda": ["trainer"],
    "upcycle": ["experiments", "cuda/plugin/abi.hpp", "cuda/plugin/bench.hpp"],
}
SOURCES = (".cpp", ".hpp", ".cu", ".cuh")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def allowed(folder):
    """The folders (or single headers) that `folder` may include, itself included."""
    seen, todo = {folder}, list(BELOW[folder])
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(BELOW.get(f, []))
    return seen


def may_include(folder, header, allowed_set):
    if header.startswith("upcycle/version.hpp"):  # generated beside the command
        return folder == "upcycle"
    return any(header == a or header.startswith(a + "/") for a in allowed_set)


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[2])
    bad, checked = [], 0
    for folder in BELOW:
        allowed_set = allowed(folder)
        if folder == "cuda":  # the plugin links everything the GPU benchmark needs
            allowed_set = allowed_set | {"cuda"}
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in SOURCES:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                m = INCLUDE.match(line)
                if not m or "/" not in m.group(1):
                    continue
                checked += 1
                if not may_include(folder, m.group(1), allowed_set):
                    bad.append(f"{path.relative_to(root)}:{n}: includes {m.group(1)}, above {folder}/")
    missing = [f for f in BELOW if not (root / f).is_dir()]
    for line in bad:
        print(line)
    for f in missing:
        print(f"{f}/: no such folder (the table in {pathlib.Path(__file__).name} is out of date)")
    print(f"{checked} includes checked, {len(bad)} run up the layers")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main())
