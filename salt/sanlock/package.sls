{%- from "sanlock/map.jinja" import sanlock with context %}

sanlock-package-pkg-installed:
  pkg.installed:
    - pkgs: {{ sanlock.pkgs | json }}
    - reload_modules: true      # the xenha_sanlock module and states need sanlock to load
