# Body of /run/vm-test/run.sh, after the lines `cargo xtask vm-test` writes (ENFORCER_BIN,
# PROBE_BIN, run_test, and the test executables as "$@"). Runs in the guest with the host's
# /bin/sh, chrooted into the host's root: each test executable one at a time, then the summary.
echo "guest kernel: $(uname -r)"
summary=/tmp/vm-test-summary
: >"$summary"
status=0
for t in "$@"; do
    name=$(basename "$t")
    name=${name%-*}
    echo "==== $name ($t)"
    start=$(date +%s)
    { run_test "$t"; echo $? >/tmp/vm-test-rc; } 2>&1 | tee /tmp/vm-test-log
    rc=$(cat /tmp/vm-test-rc)
    secs=$(($(date +%s) - start))
    [ "$rc" = 0 ] || status=1
    result=$(grep '^test result:' /tmp/vm-test-log | tail -n 1)
    [ -n "$result" ] || result="no libtest summary"
    echo "$name: $result [exit $rc, ${secs} s in the guest]" >>"$summary"
    grep -o 'SKIP: .*' /tmp/vm-test-log | sort | uniq -c | sed 's/^ */    /' >>"$summary"
    # the names under libtest's last "failures:" heading
    awk '/^failures:$/ { f = 1; s = ""; next } f && /^    / { s = s "    failed: " substr($0, 5) "\n"; next }
         { f = 0 } END { printf "%s", s }' /tmp/vm-test-log >>"$summary"
done
echo "==== summary, guest kernel $(uname -r)"
cat "$summary"
exit $status
