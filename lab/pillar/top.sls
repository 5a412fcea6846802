# The lab's top file (lab/pillar is the first pillar root, so this one is used): the xenha
# pillar as shipped (pillar/xenha/init.sls, with the lab's cluster.yaml) plus the lookups that
# point the formulas at what the lab has.
base:
  '*':
    - xenha
    - lab_lookups
    - lab_sanlock
    - failover
  'ServDB':
    - lab_timeserver
