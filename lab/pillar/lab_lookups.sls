# Formula lookups for the lab. Each lab host has its own /etc, /run, /var and UTS namespace, so
# the formulas' default paths there work unchanged; what differs is who runs the daemons (no
# systemd: the lab starts chronyd -x, which never touches the machine clock, tgtd and sshd), the
# devices, and paths under /root and /usr, which the lab hosts share with the machine: the xen
# formula's files go to the host's own /etc/xenha instead (and xenha:xen:ssh:identity_file in
# xenha/cluster.yaml; lab/cluster.py starts sshd with the same AuthorizedKeysFile).
ntp:
  lookup:
    service_manager: none
iscsi:
  lookup:
    service_manager: none
    initiator:
      login: false                # no kernel initiator (iscsi_tcp): QEMU's libiscsi logs in
    target:
      tgt:
        control_port: 1           # tgtd -C 1 (lab/cluster.py starts it so)
ocfs2:
  lookup:
    service_manager: none         # no configfs/ocfs2 in this kernel: o2cb cannot go online
    device_sls: null              # the device is an image file, not an iSCSI disk
    mount: false
xen:
  lookup:
    service_manager: none
    toolstacks:
      xl:
        pkgs: []                  # lab/toolstack/xl stands in for Xen
    ssh:
      authorized_keys: /etc/xenha/ssh/authorized_keys
      receiver: /etc/xenha/migrate-receive
sanlock:
  lookup:
    service_manager: none         # lab/sanlock starts each VM host's daemon (-w 0, no systemd)
    device_sls: null              # the lease area is a file on the shared folder
