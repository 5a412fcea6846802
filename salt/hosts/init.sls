include:
  - hosts.config
  - hosts.hostname
