include:
  - xen.package
  - xen.autostart
  - xen.migration
  - xen.service
