{%- from "xen/map.jinja" import toolstack with context %}

xen-package-pkg-installed:
  pkg.installed:
    - pkgs: {{ toolstack.pkgs | json }}
