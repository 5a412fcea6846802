{%- from "xen/map.jinja" import xen, toolstack with context %}
{%- if xen.service_manager == "systemd" %}

include:
  - xen.package
  - xen.migration
{%-   for service in toolstack.services %}

xen-service-service-running-{{ service }}:
  service.running:
    - name: {{ service }}
    - enable: true
    - require:
      - sls: xen.package
    - watch:
      - sls: xen.migration
{%-   endfor %}
{%- endif %}
