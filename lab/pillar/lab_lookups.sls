# Formula lookups for the lab. Each lab host has its own /etc, /run, /var and UTS namespace, so
# the formulas' default paths work unchanged; what differs is who runs the daemons (no systemd:
# the lab starts chronyd -x, which never touches the machine clock, and tgtd) and the devices.
ntp:
  lookup:
    service_manager: none
iscsi:
  lookup:
    service_manager: none
    target:
      tgt:
        control_port: 1           # tgtd -C 1 (lab/cluster.py starts it so)
ocfs2:
  lookup:
    service_manager: none         # no configfs/ocfs2 in this kernel: o2cb cannot go online
    device_sls: null              # the device is an image file, not an iSCSI disk
    mount: false
