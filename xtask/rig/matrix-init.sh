# The rest of the kernel matrix's /init, after guest-init.sh: one initramfs
# for every kernel.
echo never > /sys/kernel/mm/transparent_hugepage/enabled
# A RAM block device for the dirtying test (Debian builds every disk
# filesystem and block driver as a module).
insmod /lib/modules/$(uname -r)/brd.ko rd_nr=1 rd_size=32768

# Runs `$2...` (a load that starts once /tmp/go exists and creates
# /tmp/done when it is through) under `diagnose --pid`; section $1.
exact_run() {
    name=$1; shift
    rm -f /tmp/go /tmp/done
    "$@" /tmp/go /tmp/done &
    load=$!
    /bin/hostprobe diagnose --pid $load --duration 120s --json --no-vm-readiness --readiness-windows 1s \
        --log-level info >/tmp/$name.json 2>/tmp/$name.log &
    diag=$!
    ready /tmp/$name.log $diag
    touch /tmp/go
    n=0; until [ -e /tmp/done ] || [ $n -gt 600 ]; do sleep 0.1; n=$((n + 1)); done
    sleep 1
    kill -INT $diag; wait $diag
    kill $load
    section $name
}

# The kernel's BTF from a file, with sysfs' copy hidden.
cp /sys/kernel/btf/vmlinux /tmp/vmlinux.btf
mount -o bind /dev/null /sys/kernel/btf/vmlinux
echo "=== check btf"
/bin/hostprobe check --btf /tmp/vmlinux.btf --json 2>/dev/null
echo "=== end check btf"
umount /sys/kernel/btf/vmlinux

# Page dirtying with counts the load sets exactly: 8 MiB written to a block
# device's page cache, 4096 write faults on new pages, 4096 on present ones.
exact_run dirty /bin/dirtyload /dev/ram0

# Sleeping-lock contention with a count and a wait the load sets: 20 waits
# of 50 ms for a pipe's mutex held across a userfaultfd fault.
exact_run lock /bin/lockload 20 50

# User-space lock waits with a count and a length the load sets: 20 waits
# of 50 ms for a pthread mutex, in wait_for_holder.
exact_run ulock /bin/ulockload 20 50

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
section never
section numa
section exact
echo "=== counters"
if [ -e /proc/sys/kernel/numa_balancing ]; then balancing=true; else balancing=false; fi
echo "{\"other_node\": $((other1 - other0)), \"numa_pages_migrated\": $((migrated1 - migrated0)), \"numa_balancing\": $balancing}"
echo "=== end counters"

echo "=== done"
poweroff -f
