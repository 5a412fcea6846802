{%- from "ntp/map.jinja" import ntp, impl with context %}
{%- if ntp.service_manager == "systemd" %}

include:
  - ntp.config

ntp-service-service-running:
  service.running:
    - name: {{ impl.service }}
    - enable: true
    - watch:
      - sls: ntp.config
{%- endif %}
