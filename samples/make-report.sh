#!/usr/bin/env bash
# Rebuild samples/report.xlsx from samples/exchange-export and render the README's pictures
# (needs LibreOffice and poppler: apt-get install -y libreoffice-calc poppler-utils).
set -euo pipefail
cd "$(dirname "$0")"
psbridge mobile --from-clixml exchange-export -o report.xlsx --no-history
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
soffice --headless --convert-to pdf --outdir "$work" report.xlsx >/dev/null
# page 1: the Summary sheet; page 2: the Devices sheet (its print area, fitted to the width)
pdftoppm -r 120 -f 1 -l 1 -x 60 -y 70 -W 1290 -H 790 -png -singlefile "$work/report.pdf" \
    report-summary
pdftoppm -r 220 -f 2 -l 2 -x 140 -y 150 -W 1560 -H 250 -png -singlefile "$work/report.pdf" \
    report-devices
