# check.sh — the check helper the CLI test scripts share (sourced). Sets TMP (removed on exit)
# and fails; check NAME WANT PATTERN command... runs the command (60 s limit; shell functions
# must be exported), and counts a failure on a sanitizer report, a signal or timeout, another
# exit code, or output without PATTERN. VERBOSE=1 prints the line each check matched.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
check() {  # name, expected exit code, grep pattern for stderr+stdout, command...
  local name=$1 want=$2 pat=$3; shift 3
  timeout -k 5 60 bash -c '"$@"' _ "$@" >"$TMP/out" 2>&1; local rc=$?  # (functions exported)
  if grep -qE "(Address|Leak|UndefinedBehavior)Sanitizer|runtime error:" "$TMP/out"; then  # make asan
    echo "FAIL $name: sanitizer report"; grep -E -A12 "Sanitizer|runtime error:" "$TMP/out" | head -30; fails=$((fails+1)); return
  fi
  if [ "$rc" -eq 124 ] || [ "$rc" -ge 128 ]; then
    echo "FAIL $name: exit $rc (timed out or killed by a signal)"; sed 's/^/    /' "$TMP/out" | tail -5; fails=$((fails+1)); return
  fi
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL $name: exit $rc, expected $want"; sed 's/^/    /' "$TMP/out" | head -5; fails=$((fails+1)); return
  fi
  if [ -n "$pat" ] && ! grep -qE -- "$pat" "$TMP/out"; then
    echo "FAIL $name: output lacks /$pat/"; sed 's/^/    /' "$TMP/out" | head -5; fails=$((fails+1)); return
  fi
  echo "ok   $name"
  if [ -n "${VERBOSE:-}" ] && [ -n "$pat" ]; then grep -m1 -E -- "$pat" "$TMP/out" | cut -c1-220 | sed 's/^/       /'; fi
}
