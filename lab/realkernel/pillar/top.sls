# The real-kernel tier's top file (lab/realkernel/pillar is the first pillar root after the
# run's): the xenha pillar as shipped with this tier's cluster.yaml. Only ServDB, a netns host
# of the machine's kernel, needs lookups; the VM hosts are real Debian systems and get the
# formulas' defaults (systemd, open-iscsi login, o2cb online, the OCFS2 mount).
base:
  '*':
    - xenha
  'ServDB':
    - lab_timeserver
    - realkernel_storage
