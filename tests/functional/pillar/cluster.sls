# A xenha cluster of test minions (ServVirt1, ServVirt2 = VM hosts driven by the xl stand-in,
# ServDB = storage), shared by the runner and failover functional tests. Test-only secrets.
xenha:
  hosts:
    ServVirt1:
      hostname: ServVirt1
      ip: 192.168.25.10
      role: vmhost
      ocfs2_node: 0
      iqn: iqn.2009-06.br.example:servvirt1
      memory_reserve_mib: 256
    ServVirt2:
      hostname: ServVirt2
      ip: 192.168.25.11
      role: vmhost
      ocfs2_node: 1
      iqn: iqn.2009-06.br.example:servvirt2
      memory_reserve_mib: 256
    ServDB:
      hostname: ServDB
      ip: 192.168.25.12
      role: storage
  storage:
    implementation: tgt
    target_iqn: iqn.2009-06.br.example:storage.cluster
    backing_device: /dev/sda4
    lun: 1
    port: 3260
  ocfs2:
    cluster: ocfs2
    label: cluster_home
    mount_point: /cluster
    slots: 2
    format_host: ServVirt1
    port: 7777
  ntp:
    implementation: chrony
    servers: [a.ntp.br]
    max_offset: 0.5
  xen:
    toolstack: xl
    ssh: {port: 22}
  heartbeat: {port: 7788, interval: 0.5, dead_time: 3.0, key: functional-test-key-0123456789}
  # the runner tests create (and remove) /tmp/xenha-functional-cluster (the domU configs); a
  # real cluster keeps them on OCFS2
  evacuation: {parallel: 2}
  # the stand-ins start with ServVirt1 at 8192 MiB, ServVirt2 at 4096 MiB (dom0 512 each), so
  # ServVirt2 can take 4096 - 512 - 256 = 3328 MiB: db01, web01 and web02 fit, big01 does not
  domus:
    db01: {config: /tmp/xenha-functional-cluster/domus/db01.cfg, memory_mib: 1024, priority: 100}
    web01: {config: /tmp/xenha-functional-cluster/domus/web01.cfg, memory_mib: 512, priority: 50, preferred_host: ServVirt1}
    web02: {config: /tmp/xenha-functional-cluster/domus/web02.cfg, memory_mib: 512, priority: 50}
    big01: {config: /tmp/xenha-functional-cluster/domus/big01.cfg, memory_mib: 2048, priority: 10}
