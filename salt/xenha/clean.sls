{#- Stop and remove the lease renewer service and the shutdown drain's unit (its stop outside a
    shutdown moves nothing). The lease directory (shared data) stays. #}
{%- from "xenha/libmap.jinja" import mapdata with context %}
{%- set xenha = mapdata("xenha") | load_json %}
{%- if xenha.service_manager == "systemd" %}

xenha-clean-service-dead-shutdown:
  service.dead:
    - name: xenha-shutdown
    - enable: false

xenha-clean-file-absent-shutdown-unit:
  file.absent:
    - name: {{ xenha.shutdown.unit }}
    - require:
      - service: xenha-clean-service-dead-shutdown

xenha-clean-service-dead-leased:
  service.dead:
    - name: xenha-leased
    - enable: false

xenha-clean-file-absent-leased-unit:
  file.absent:
    - name: {{ xenha.leased.unit }}
    - require:
      - service: xenha-clean-service-dead-leased
{%- endif %}
