{%- from "ntp/map.jinja" import ntp, impl with context %}
{%- if ntp.service_manager == "systemd" %}

ntp-clean-service-dead:
  service.dead:
    - name: {{ impl.service }}
    - enable: false
    - require_in:
      - file: ntp-clean-file-absent-config
{%- endif %}

ntp-clean-file-absent-config:
  file.absent:
    - name: {{ impl.config }}
