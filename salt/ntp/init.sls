include:
  - ntp.package
  - ntp.config
  - ntp.service
