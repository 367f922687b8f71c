"""The packaging metadata `make venv` builds from: no deprecated forms, so set-up prints only what matters.

setuptools (77 and later) warns, in a box printed three times per install, about a TOML-table
`license`, and about the import hook an editable install of a flat layout needs; pip's isolated
build gets the newest setuptools, so these are checked on the file rather than by a build that would
need the package index.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text())
SPDX_LICENSE_SETUPTOOLS = 77  # the first setuptools that reads `license = "<SPDX expression>"`


def test_the_license_is_an_spdx_string_and_setuptools_can_read_it() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    (requirement,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", requirement)
    assert minimum is not None and int(minimum[1]) >= SPDX_LICENSE_SETUPTOOLS


def test_an_editable_install_is_a_plain_pth_line() -> None:
    """With every package under one declared root, setuptools' editable install adds that root to
    sys.path instead of installing an import hook (and warning about it)."""
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"": "."}
    for package in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert (PROJECT / package.rstrip("*") / "__init__.py").is_file()


def test_make_venv_drops_only_pips_missing_location_lines() -> None:
    makefile = (PROJECT / "Makefile").read_text()
    noise = re.search(r"^PIP_NOISE := (.*)$", makefile, re.MULTILINE)
    assert noise is not None
    pattern = re.compile(noise[1].replace("$$", "$").replace("\\\\", "\\"))
    assert pattern.search("WARNING: Location 'file:///opt/pypi/simple/pyroute2/' is ignored: it is neither a "
                          "file nor a directory.")
    assert not pattern.search("ERROR: Could not find a version that satisfies the requirement pyroute2")
    assert not pattern.search("WARNING: pip is configured with locations that require TLS/SSL")
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert "$(call pip,install" in recipe and "$(BIN)/pip install" not in recipe
