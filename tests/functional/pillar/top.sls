base:
  '*':
    - functional
  'xenha-hb-*':
    - heartbeat
  'ServVirt1,ServVirt2,ServDB':
    - match: list
    - cluster
  'xha-fo-*':
    - failover
  'xen-host-*':
    - xen
