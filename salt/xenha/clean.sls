{#- Stop and remove the shutdown drain's unit (its stop outside a shutdown moves nothing), and
    the renewer of earlier releases where it is still there (xenha.retired). #}
{%- from "xenha/libmap.jinja" import mapdata with context %}
{%- set xenha = mapdata("xenha") | load_json %}

include:
  - xenha.retired
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
{%- endif %}
