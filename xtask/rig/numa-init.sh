# /init of the NUMA guest (after /proc, /sys, /dev are mounted). Results go
# to the serial console between "=== NAME" and "=== end NAME" markers.
echo never > /sys/kernel/mm/transparent_hugepage/enabled
mount -t tracefs nodev /sys/kernel/tracing
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
export HOME=/tmp

# Waits until hostprobe (log in $1) has attached all its probes.
ready() {
    n=0
    while [ "$(grep -c 'probe ready' "$1")" -lt 9 ] && [ $n -lt 600 ]; do
        if grep -q 'probe disabled' "$1" && ! kill -0 "$2" 2>/dev/null; then break; fi
        sleep 0.2; n=$((n + 1))
    done
    sleep 1
}

echo "=== check"
/bin/hostprobe check --json 2>/dev/null
echo "=== end check"

# The foundation's scheduler test: a spinner moved between CPU 0 and CPU 1
# exactly 20 times, counted by pid.
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
echo "=== sched"
cat /tmp/sched.json
echo "=== end sched"
echo "=== sched log"
grep -v 'probe ready' /tmp/sched.log | tail -20
echo "=== end sched log"

echo "=== done"
poweroff -f
