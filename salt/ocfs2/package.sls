{%- from "ocfs2/map.jinja" import ocfs2 with context %}

ocfs2-package-pkg-installed:
  pkg.installed:
    - pkgs: {{ ocfs2.pkgs | json }}
    - reload_modules: true      # the xenha_o2cb states need ocfs2-tools to load
