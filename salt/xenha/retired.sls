{#- The storage-lease renewer of earlier releases (service xenha-leased), gone since the domU
    leases are sanlock's: stopped, disabled and its unit removed. Its module is no longer
    synced, so a start would fail, and its unit reboots the host after three failed starts. #}
{%- from "xenha/libmap.jinja" import mapdata with context %}
{%- set xenha = mapdata("xenha") | load_json %}
{%- if xenha.service_manager == "systemd" %}

xenha-retired-service-dead-leased:
  service.dead:
    - name: xenha-leased
    - enable: false

xenha-retired-file-absent-leased-unit:
  file.absent:
    - name: {{ xenha.leased_unit }}
    - require:
      - service: xenha-retired-service-dead-leased
{%- endif %}
