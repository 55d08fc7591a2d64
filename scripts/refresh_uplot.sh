#!/usr/bin/env bash
# Refresh the vendored uPlot (runwatch/web/static/vendor/uplot) from the npm
# registry: the pinned version's tarball, checked against its pinned SHA-256
# before anything is copied. To move to another version, change both pins,
# run this script, and read the diff (and uPlot's changelog) before committing.
set -euo pipefail

UPLOT_VERSION="1.6.32"
UPLOT_TARBALL_SHA256="4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d"

cd "$(dirname "$0")/.."
target="runwatch/web/static/vendor/uplot"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "uplot@${UPLOT_VERSION}" >/dev/null)
tarball="$work/uplot-${UPLOT_VERSION}.tgz"
actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [ "$actual" != "$UPLOT_TARBALL_SHA256" ]; then
    echo "uplot-${UPLOT_VERSION}.tgz has SHA-256 $actual, expected $UPLOT_TARBALL_SHA256: not copied" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work"
mkdir -p "$target"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$work/package/LICENSE" "$target/"
printf 'uPlot %s from the npm registry (uplot-%s.tgz, SHA-256 %s).\nRefreshed by scripts/refresh_uplot.sh; licence: LICENSE (MIT).\n' \
    "$UPLOT_VERSION" "$UPLOT_VERSION" "$UPLOT_TARBALL_SHA256" > "$target/VERSION"
echo "uPlot ${UPLOT_VERSION} copied to $target"
