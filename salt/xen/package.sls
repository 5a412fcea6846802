{#- The toolstack's packages; none where someone else provides xl (the lab's stand-in). #}
{%- from "xen/map.jinja" import toolstack with context %}
{%- if toolstack.pkgs %}

xen-package-pkg-installed:
  pkg.installed:
    - pkgs: {{ toolstack.pkgs | json }}
{%- endif %}
