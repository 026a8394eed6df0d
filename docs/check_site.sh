#!/usr/bin/env bash
# Look at the built site as a person would: build it, serve it locally, and save screenshots (1280
# wide) of the home page (the README), the decision page, a results page, a notebook page and the
# recipe reference, taken by headless Chromium.
#   docs/check_site.sh [OUT_DIR]        (default: site-screenshots/; needs the docs extra and chromium:
#                                        apt-get install chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-site-screenshots}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "error: no chromium on PATH (apt-get install chromium)" >&2
  exit 2
fi
site=$(mktemp -d)
mkdocs build --strict -q -d "$site"
port=${PORT:-8765}
python -m http.server "$port" --bind 127.0.0.1 --directory "$site" >/dev/null 2>&1 &
server=$!
trap 'kill $server; rm -rf "$site"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
mkdir -p "$out"
for page in "home=index.html" "decision=decision.html" "per-second=equal-time.html" \
    "notebook=nbs/01_inside_the_layer.html" "recipe-reference=reference/recipe.html"; do
  name=${page%%=*}
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1600 \
    --virtual-time-budget=5000 --screenshot="$out/$name.png" "http://127.0.0.1:$port/${page#*=}" 2>/dev/null
  echo "$out/$name.png"
done
