#!/usr/bin/env bash
# Regenerate the README's configuration table from the Settings object (`devpush settings`).
set -euo pipefail
cd "$(dirname "$0")/.."
table=$(.venv/bin/devpush settings)
python3 - "$table" <<'PY'
import re, sys
path = "README.md"
text = open(path).read()
new = "<!-- settings:start -->\n" + sys.argv[1] + "\n<!-- settings:end -->"
text = re.sub(r"<!-- settings:start -->.*?<!-- settings:end -->", lambda _: new, text, flags=re.S)
open(path, "w").write(text)
PY
