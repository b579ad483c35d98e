# The start of every guest's /init (after /proc, /sys, /dev are mounted):
# mounts, helpers, the kernel's name, `hostprobe check`, and the
# scheduler's exact-count test. Results go to the serial console between
# "=== NAME" and "=== end NAME" markers.
mount -t tracefs nodev /sys/kernel/tracing
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
export HOME=/tmp
echo "=== kernel"
uname -rm
echo "=== end kernel"

# Waits until hostprobe (log in $1, which it may not have opened yet) has
# attached all its probes.
ready() {
    n=0
    while [ "$(cat "$1" 2>/dev/null | grep -c -e 'probe ready' -e 'probe disabled')" -lt 14 ] && [ $n -lt 600 ]; do
        if grep -q 'probe disabled' "$1" 2>/dev/null && ! kill -0 "$2" 2>/dev/null; then break; fi
        sleep 0.2; n=$((n + 1))
    done
    sleep 1
}

# Prints /tmp/$1.json as section $1 and the end of /tmp/$1.log as "$1 log".
section() {
    echo "=== $1"
    cat /tmp/$1.json
    echo "=== end $1"
    echo "=== $1 log"
    grep -v 'probe ready' /tmp/$1.log | tail -20
    echo "=== end $1 log"
}

echo "=== check"
/bin/hostprobe check --json 2>/dev/null
echo "=== end check"

# The scheduler: a spinner moved between CPU 0 and CPU 1 exactly 20 times,
# counted by pid.
sh -c 'while :; do :; done' &
spin=$!
taskset -p 1 $spin >/dev/null
/bin/hostprobe diagnose --pid $spin --duration 120s --json --no-vm-readiness --readiness-windows 1s \
    --log-level info >/tmp/sched.json 2>/tmp/sched.log &
diag=$!
ready /tmp/sched.log $diag
i=0
while [ $i -lt 20 ]; do
    i=$((i + 1))
    if [ $((i % 2)) -eq 1 ]; then taskset -p 2 $spin >/dev/null; else taskset -p 1 $spin >/dev/null; fi
    sleep 0.3
done
sleep 1
kill -INT $diag; wait $diag
kill $spin
section sched
