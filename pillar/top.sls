# xenha pillar: one tree describes the whole cluster (docs/pillar.md); xenha/init.sls gives
# each minion only its role's part (a minion outside xenha:hosts gets nothing).
base:
  '*':
    - xenha
