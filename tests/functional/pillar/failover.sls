# The failover functional test's cluster: xha-fo-a (the host that "dies"; its BMC address is a
# closed local port, so IPMI fencing fails) and xha-fo-b (the survivor, xl stand-in, and the
# xenha_sanlock stand-in: tests/standins/modules). Test-only values; the BMC password is the
# master's (xenha_bmc in tests/functional/conftest.py).
xenha:
  hosts:
    xha-fo-a:
      hostname: xha-fo-a
      ip: 127.0.0.21
      role: vmhost
      host_id: 1
      memory_reserve_mib: 0
      bmc: {address: 127.0.0.1, port: 9, username: admin, interface: lanplus, cipher_suite: 3}
    xha-fo-b:
      hostname: xha-fo-b
      ip: 127.0.0.22
      role: vmhost
      host_id: 2
      memory_reserve_mib: 256
  xen:
    toolstack: xl
  sanlock: {lease_path: /tmp/xenha-functional-failover/leases.img, io_timeout: 1}
  # a back-off longer than a test: a repeated claim finds a blocked failover still blocked
  failover: {corroborate_window: 1.0, retry_base: 600.0, retry_max: 600.0, retry_for: 0}
  # xha-fo-b: 4096 MiB, dom0 512, reserve 256 -> 3328 MiB for domUs: db01 and web01 fit, big01 not
  domus:
    db01: {config: /tmp/xenha-functional-failover/domus/db01.cfg, memory_mib: 1024, priority: 100}
    web01: {config: /tmp/xenha-functional-failover/domus/web01.cfg, memory_mib: 512, priority: 50}
    big01: {config: /tmp/xenha-functional-failover/domus/big01.cfg, memory_mib: 8192, priority: 10}
