#!/bin/busybox sh
# /init of the `cargo xtask vm-test` initramfs (PID 1, busybox). Prepares the guest, chroots
# into the host's root (9p, read-only, under a tmpfs overlay) to run /run/vm-test/run.sh
# (written by the host into the read-write share), prints the final verdict line, writes the
# exit code to the second serial port (and the share) and powers off. An error here writes no
# exit code: the host then reports an infrastructure failure, not a test failure.
/bin/busybox mkdir -p /bin /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin

halt() {
    sync
    # Let the serial ports drain before the power goes.
    sleep 1
    poweroff -f
}

die() {
    echo "vm-init: error: $*"
    echo "VM-TEST RESULT: FAIL (infrastructure: $*)"
    halt
}

mount -t devtmpfs devtmpfs /dev || die "mounting devtmpfs"
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc || die "mounting proc"
mount -t sysfs sysfs /sys || die "mounting sysfs"
mount -t tmpfs tmpfs /tmp || die "mounting tmpfs"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || die "mounting cgroup2"
mount -t bpf bpf /sys/fs/bpf || die "mounting bpffs"
ip link set lo up || die "setting lo up"

while read -r m; do
    insmod "/modules/$m" || die "insmod $m"
done </modules/order

# 9p over virtio: a larger msize than the default makes reading the test binaries faster.
opts=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /lower /rw
mount -t 9p -o "$opts,ro,cache=loose" hostroot /lower || die "mounting the host root over 9p"
mount -t 9p -o "$opts" results /results || die "mounting the results share over 9p"

# The chroot is an overlay: the host's root (read-only; QEMU exports it readonly=on too) under
# a tmpfs, so tests can write where they do on the host (e.g. /etc/netns) and nothing reaches
# the host.
mount -t tmpfs tmpfs /rw && mkdir /rw/upper /rw/work || die "mounting the overlay's tmpfs"
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot ||
    die "mounting the overlay over the host root"

# Inside the chroot: fresh pseudo filesystems, and a tmpfs for /run (no stale /run/netns).
# /tmp stays the overlay's: writable already, and a tmpfs there would hide a checkout under
# the host's /tmp, whose test executables the guest runs.
R=/newroot
mount -t tmpfs tmpfs $R/run || die "mounting $R/run"
mount -t proc proc $R/proc || die "mounting $R/proc"
mount -t sysfs sysfs $R/sys || die "mounting $R/sys"
mount -t devtmpfs devtmpfs $R/dev || die "mounting $R/dev"
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || die "mounting $R/sys/fs/cgroup"
mount -t bpf bpf $R/sys/fs/bpf || die "mounting $R/sys/fs/bpf"
mkdir -p $R/run/vm-test && mount --bind /results $R/run/vm-test || die "binding the share"

echo "vm-init: guest uname -r: $(uname -r); $(grep -c ^processor /proc/cpuinfo) CPU, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
# Make the overlay the root of the mount tree, as switch_root does (without exec'ing, so this
# script still reports the result): in other mount namespaces (`ip netns exec`) paths then read
# as they do on the host, e.g. /proc/PID/exe. This shell keeps the initramfs as its root.
cd $R && mount --move . / || die "moving the overlay to /"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb LANG=C.UTF-8 \
    chroot . /bin/sh /run/vm-test/run.sh
rc=$?
cd /

if [ "$rc" = 0 ]; then echo "VM-TEST RESULT: PASS"; else echo "VM-TEST RESULT: FAIL"; fi
echo "$rc" >/results/rc
echo "$rc" >/dev/ttyS1
halt
