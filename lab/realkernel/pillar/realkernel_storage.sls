# ServDB is a netns host of the machine (no systemd): the lab starts its tgtd (-C 1) and chronyd.
ntp:
  lookup:
    service_manager: none
iscsi:
  lookup:
    service_manager: none
    target:
      tgt:
        control_port: 1
