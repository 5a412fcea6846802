# xenha pillar: one tree describes the whole cluster (docs/pillar.md).
base:
  '*':
    - xenha
