#!/usr/bin/env bash
# Rebuild samples/report.xlsx, the workbook of the first `psbridge demo` (its story's six
# weeks recorded in a fresh history, then today collected live from the sandbox), and render
# the README's pictures (needs LibreOffice and poppler: apt-get install -y libreoffice-calc
# poppler-utils). PSBRIDGE names the command when psbridge is not installed, e.g.
# PSBRIDGE="python -m bridge.cli" with the checkout on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
PSBRIDGE_HISTORY="$work/history.sqlite" ${PSBRIDGE:-psbridge} demo -o report.xlsx >/dev/null
soffice --headless --convert-to pdf --outdir "$work" report.xlsx >/dev/null
page_of() {  # the first page whose text starts a line with $1
    local pages n text
    pages="$(pdfinfo "$work/report.pdf" | awk '/^Pages:/ {print $2}')"
    for ((n = 1; n <= pages; n++)); do
        # (the text whole first: grep -q ending the pipe early fails it under pipefail)
        text="$(pdftotext -f "$n" -l "$n" -layout "$work/report.pdf" -)"
        if grep -q "^ *$1" <<<"$text"; then
            echo "$n"
            return
        fi
    done
    echo "no page starts with $1" >&2
    return 1
}
# the Summary sheet; the Devices sheet (its print area, fitted to the width); the Trend sheet
pdftoppm -r 120 -f 1 -l 1 -x 60 -y 70 -W 1290 -H 790 -png -singlefile "$work/report.pdf" \
    report-summary
devices="$(page_of "User  *Device")"
pdftoppm -r 220 -f "$devices" -l "$devices" -x 110 -y 137 -W 1672 -H 350 -png -singlefile \
    "$work/report.pdf" report-devices
trend="$(page_of "Trend")"
pdftoppm -r 100 -f "$trend" -l "$trend" -x 60 -y 60 -W 1000 -H 640 -png -singlefile "$work/report.pdf" \
    report-trend
