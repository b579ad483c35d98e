# /init of the kernel matrix's guests, one initramfs for every kernel
# (after /proc, /sys, /dev are mounted). Results go to the serial console
# between "=== NAME" and "=== end NAME" markers.
echo never > /sys/kernel/mm/transparent_hugepage/enabled
mount -t tracefs nodev /sys/kernel/tracing
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
export HOME=/tmp
# A RAM block device for the dirtying test (Debian builds every disk
# filesystem and block driver as a module).
insmod /lib/modules/$(uname -r)/brd.ko rd_nr=1 rd_size=32768
echo "=== kernel"
uname -r
echo "=== end kernel"

# Waits until hostprobe (log in $1) has attached all its probes.
ready() {
    n=0
    while [ "$(grep -c -e 'probe ready' -e 'probe disabled' "$1")" -lt 14 ] && [ $n -lt 600 ]; do
        if grep -q 'probe disabled' "$1" && ! kill -0 "$2" 2>/dev/null; then break; fi
        sleep 0.2; n=$((n + 1))
    done
    sleep 1
}

echo "=== check"
/bin/hostprobe check --json 2>/dev/null
echo "=== end check"

# The kernel's BTF from a file, with sysfs' copy hidden.
cp /sys/kernel/btf/vmlinux /tmp/vmlinux.btf
mount -o bind /dev/null /sys/kernel/btf/vmlinux
echo "=== check btf"
/bin/hostprobe check --btf /tmp/vmlinux.btf --json 2>/dev/null
echo "=== end check btf"
umount /sys/kernel/btf/vmlinux

# Page dirtying with counts the load sets exactly: 8 MiB written to a block
# device's page cache, 4096 write faults on new pages, 4096 on present ones.
rm -f /tmp/go /tmp/done
/bin/dirtyload /dev/ram0 /tmp/go /tmp/done &
load=$!
/bin/hostprobe diagnose --pid $load --duration 120s --json --no-vm-readiness --readiness-windows 1s \
    --log-level info >/tmp/dirty.json 2>/tmp/dirty.log &
diag=$!
ready /tmp/dirty.log $diag
touch /tmp/go
n=0; until [ -e /tmp/done ] || [ $n -gt 600 ]; do sleep 0.1; n=$((n + 1)); done
sleep 1
kill -INT $diag; wait $diag
kill $load
echo "=== dirty"
cat /tmp/dirty.json
echo "=== end dirty"
echo "=== dirty log"
grep -v 'probe ready' /tmp/dirty.log | tail -20
echo "=== end dirty log"

# Sleeping-lock contention with a count and a wait the load sets: 20 waits
# of 50 ms for a pipe's mutex held across a userfaultfd fault.
rm -f /tmp/go /tmp/done
/bin/lockload 20 50 /tmp/go /tmp/done &
load=$!
/bin/hostprobe diagnose --pid $load --duration 120s --json --no-vm-readiness --readiness-windows 1s \
    --log-level info >/tmp/lock.json 2>/tmp/lock.log &
diag=$!
ready /tmp/lock.log $diag
touch /tmp/go
n=0; until [ -e /tmp/done ] || [ $n -gt 600 ]; do sleep 0.1; n=$((n + 1)); done
sleep 1
kill -INT $diag; wait $diag
kill $load
echo "=== lock"
cat /tmp/lock.json
echo "=== end lock"
echo "=== lock log"
grep -v 'probe ready' /tmp/lock.log | tail -20
echo "=== end lock log"

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

# NUMA scenarios, all inside one diagnose window.
other_node() { cat /sys/devices/system/node/node*/numastat | awk '$1 == "other_node" { s += $2 } END { print s }'; }
migrated() { awk '$1 == "numa_pages_migrated" { print $2 }' /proc/vmstat; }
steady() { n=0; until grep -q steady "$1" || [ $n -gt 600 ]; do sleep 0.2; n=$((n + 1)); done; }
for g in remote local balance; do mkdir /sys/fs/cgroup/$g; done
/bin/hostprobe diagnose --duration 600s --json --no-vm-readiness --log-level info \
    >/tmp/numa.json 2>/tmp/numa.log &
diag=$!
ready /tmp/numa.log $diag
other0=$(other_node); migrated0=$(migrated)
# (a) CPU on node 0, memory bound to node 1; (b) both on node 0.
sh -c 'echo $$ > /sys/fs/cgroup/remote/cgroup.procs; exec numactl --cpunodebind=0 --membind=1 /bin/dirtier 0 128' >/tmp/a.out &
a=$!
sh -c 'echo $$ > /sys/fs/cgroup/local/cgroup.procs; exec numactl --cpunodebind=0 --membind=0 /bin/dirtier 0 64' >/tmp/b.out &
b=$!
steady /tmp/a.out; steady /tmp/b.out
# (d) memory first touched on node 1, then the task runs on node 0 and
# keeps writing it: NUMA balancing migrates the pages to node 0.
sh -c 'echo $$ > /sys/fs/cgroup/balance/cgroup.procs; exec numactl --cpunodebind=1 /bin/dirtier 20000 128' >/tmp/d.out &
d=$!
steady /tmp/d.out
taskset -p 1 $d >/dev/null
# Wait until balancing is done (all 32768 pages moved, or, once it has
# started, no change for 3 s after the first 15 s; at most 90 s; it once
# had not started after 18 s): diagnose's last read comes a moment after
# vmstat's, which only agree when nothing is moving any more.
t=0; still=0; last=$(migrated)
while [ $t -lt 90 ]; do
    sleep 1; t=$((t + 1)); now=$(migrated)
    if [ $((now - migrated0)) -ge 32768 ]; then break; fi
    if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
    if [ $t -ge 15 ] && [ $still -ge 3 ] && [ "$now" != "$migrated0" ]; then break; fi
    last=$now
done
other1=$(other_node); migrated1=$(migrated)
kill -INT $diag; wait $diag
# The exact path of readiness, soft-dirty flavour (6.1 has
# CONFIG_MEM_SOFT_DIRTY): the balancing dirtier writes 20000 pages/s.
/bin/hostprobe readiness --pid $d --exact --windows 500ms,1s --json \
    --exact-state-dir /tmp/exact >/tmp/exact.json 2>/tmp/exact.log
kill $a $b $d
# Without mm_page_alloc: a busy task on node 0's CPUs with its memory on
# node 1 still gets residency and the remote-access estimate.
mkdir /sys/fs/cgroup/unranked
sh -c 'echo $$ > /sys/fs/cgroup/unranked/cgroup.procs; exec numactl --cpunodebind=0 --membind=1 /bin/dirtier 5000 32' >/tmp/u.out &
u=$!
steady /tmp/u.out
/bin/hostprobe diagnose --duration 3s --json --no-vm-readiness --numa-page-alloc never \
    >/tmp/never.json 2>/tmp/never.log
kill $u
echo "=== never"
cat /tmp/never.json
echo "=== end never"
echo "=== never log"
grep -v 'probe ready' /tmp/never.log | tail -20
echo "=== end never log"
echo "=== numa"
cat /tmp/numa.json
echo "=== end numa"
echo "=== counters"
if [ -e /proc/sys/kernel/numa_balancing ]; then balancing=true; else balancing=false; fi
echo "{\"other_node\": $((other1 - other0)), \"numa_pages_migrated\": $((migrated1 - migrated0)), \"numa_balancing\": $balancing}"
echo "=== end counters"
echo "=== exact"
cat /tmp/exact.json
echo "=== end exact"
echo "=== exact log"
cat /tmp/exact.log
echo "=== end exact log"
echo "=== numa log"
grep -v 'probe ready' /tmp/numa.log | tail -20
echo "=== end numa log"

echo "=== done"
poweroff -f
