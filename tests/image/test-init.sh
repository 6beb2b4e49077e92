#!/bin/sh
# Minimal PID 1 for boot tests: proves the kernel mounted our root filesystem and ran
# /sbin/init, reports which firmware booted us, then powers off.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
if [ -d /sys/firmware/efi ]; then fw=uefi; else fw=bios; fi
root=$(/bin/busybox sed -n 's/.*root=\([^ ]*\).*/\1/p' /proc/cmdline)
slot=$(/bin/busybox sed -n 's/.*nomados.slot=\([a-z]*\).*/\1/p' /proc/cmdline)
echo "NOMADOS-TEST-BOOT-OK firmware=$fw root=$root slot=$slot"
/bin/busybox sync
/bin/busybox poweroff -f
