#!/usr/bin/env bash
# The assess step of the GitHub Action (action.yml): grade MODEL, write the label, PDF, HTML report,
# a CycloneDX ML-BOM and an SVG badge into OUT_DIR, append the markdown summary to the job summary, and
# report the exit code as a step output (the action fails in its last step, after the upload).
# Inputs arrive as environment variables only (never spliced into the script text).
set -uo pipefail
out="${OUT_DIR:-eeki-label-out}"
mkdir -p "$out"
args=(assess "$MODEL" --out "$out" -q
      --export "markdown=$out/summary.md" --export "badge-svg=$out/badge.svg" --export "badge-json=$out/badge.json"
      --export "cyclonedx=$out/bom.cdx.json")
for dc in ${DEVICE_CLASSES:-}; do args+=(-d "$dc"); done
for shape in ${INPUT_SHAPES:-}; do args+=(--input-shape "$shape"); done
if [ -n "${TASK:-}" ]; then args+=(--task "$TASK"); fi
if [ "${TRANSFER:-false}" != "true" ]; then args+=(--no-transfer); fi
if [ -n "${FAIL_BELOW:-}" ]; then args+=(--fail-below "$FAIL_BELOW"); fi
read -r -a extra <<< "${EXTRA_ARGS:-}"
rc=0
eeki-label "${args[@]}" "${extra[@]}" 2> "$out/stderr.txt" || rc=$?
cat "$out/stderr.txt" >&2
summary="${GITHUB_STEP_SUMMARY:-/dev/null}"
if [ -f "$out/summary.md" ]; then
    cat "$out/summary.md" >> "$summary"
fi
if [ "$rc" -ne 0 ]; then
    { echo; echo "**eeki-label exited with code $rc**"; echo; echo '```text'; tail -n 3 "$out/stderr.txt" | tr -d '`'; echo '```'; } >> "$summary"
fi
label_class=""
label_id=""
if [ -f "$out/label.json" ]; then
    read -r label_class label_id < <(python -c '
import json, sys
from eeki_label.signing import label_id
doc = json.load(open(sys.argv[1], encoding="utf-8"))
labels = doc["labels"] if "labels" in doc else [doc]
letters = [lab["label"]["class"] for lab in labels if lab["label"]["class"]]
print(max(letters) if letters else "-", label_id(doc))' "$out/label.json")
fi
{ echo "exit-code=$rc"; echo "class=$label_class"; echo "label-id=$label_id"; echo "out-dir=$out"; } >> "${GITHUB_OUTPUT:-/dev/null}"
exit 0
