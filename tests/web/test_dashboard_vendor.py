"""The vendored chart library: pinned, with its licence, refreshed by one script, shipped in the package.

uPlot lives in ``runwatch/web/static/vendor/uplot`` (no CDN, no build step);
``scripts/refresh_uplot.sh`` pins its version and the npm tarball's SHA-256.
These tests keep the pins, the files and the package data in agreement, so a
refresh that forgets one of them fails here rather than in a user's browser.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
STATIC = ROOT / "runwatch" / "web" / "static"
VENDOR = STATIC / "vendor" / "uplot"
REFRESH_SCRIPT = ROOT / "scripts" / "refresh_uplot.sh"


def _script_pins() -> tuple[str, str]:
    text = REFRESH_SCRIPT.read_text(encoding="utf-8")
    version = re.search(r'^UPLOT_VERSION="([0-9]+\.[0-9]+\.[0-9]+)"$', text, re.MULTILINE)
    digest = re.search(r'^UPLOT_TARBALL_SHA256="([0-9a-f]{64})"$', text, re.MULTILINE)
    assert version and digest, "scripts/refresh_uplot.sh must pin UPLOT_VERSION and UPLOT_TARBALL_SHA256"
    return version.group(1), digest.group(1)


def test_vendored_uplot_matches_the_refresh_scripts_pins() -> None:
    """The script, VERSION and the library's own banner name the same version and tarball checksum."""
    version, digest = _script_pins()
    recorded = (VENDOR / "VERSION").read_text(encoding="utf-8")
    assert f"uPlot {version} " in recorded and digest in recorded, recorded
    banner = (VENDOR / "uPlot.iife.min.js").read_text(encoding="utf-8")[:200]
    assert f"(v{version})" in banner, banner


def test_vendored_uplot_ships_its_mit_licence() -> None:
    """The licence travels with the library: MIT, naming uPlot's author."""
    licence = (VENDOR / "LICENSE").read_text(encoding="utf-8")
    assert "The MIT License" in licence and "Leon Sorokin" in licence
    assert "Permission is hereby granted, free of charge" in licence


def test_refresh_script_checks_the_tarball_before_copying() -> None:
    """The script is executable, fetches through npm, and refuses a tarball whose checksum differs."""
    assert REFRESH_SCRIPT.stat().st_mode & 0o111, "scripts/refresh_uplot.sh must be executable"
    text = REFRESH_SCRIPT.read_text(encoding="utf-8")
    assert 'npm pack --silent "uplot@${UPLOT_VERSION}"' in text
    check, copy = text.index("sha256sum"), text.index('cp "$work/package/dist/uPlot.iife.min.js"')
    assert check < copy and "exit 1" in text[check:copy]
    assert '"$work/package/LICENSE"' in text[copy:]


def test_every_dashboard_file_is_package_data() -> None:
    """Each file of the page (scripts, styles, the vendored library, its licence) is in the package data."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["runwatch"]
    package = ROOT / "runwatch"
    files = [path.relative_to(package).as_posix() for path in STATIC.rglob("*") if path.is_file()]
    assert "web/static/vendor/uplot/LICENSE" in files

    # setuptools globs do not cross "/" with "*", as fnmatch's would: compare segment by segment.
    def covered(name: str) -> bool:
        parts = name.split("/")
        for pattern in patterns:
            pattern_parts = pattern.split("/")
            if len(pattern_parts) == len(parts) and all(
                fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts, pattern_parts, strict=True)
            ):
                return True
        return False

    missing = [name for name in files if not covered(name)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_index_html_loads_the_vendored_library_and_nothing_remote() -> None:
    """The page loads uPlot from the package (relative URLs) and no script or style from the network."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert 'src="static/vendor/uplot/uPlot.iife.min.js"' in html
    assert 'href="static/vendor/uplot/uPlot.min.css"' in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for src in re.findall(r'src="(static/[^"]+)"', html):
        assert (STATIC.parent / src).is_file(), src
