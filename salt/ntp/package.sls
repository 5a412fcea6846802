{%- from "ntp/map.jinja" import impl with context %}

ntp-package-pkg-installed:
  pkg.installed:
    - name: {{ impl.pkg }}
