# ServDB is the lab's time source (the segment has no upstream NTP server): it has no server of
# its own, and its local clock (orphan stratum 8) ranks above the VM hosts' (10), so they
# select it while still peering with each other.
xenha:
  ntp:
    servers: []
ntp:
  lookup:
    orphan_stratum: 8
