{#- The storage-lease renewer as a systemd service (`salt-call xenha_lease.serve`), started once
    the lease directory exists on the mounted shared volume. #}
{%- from "xenha/map.jinja" import cluster with context %}
{%- from "xenha/libmap.jinja" import mapdata with context %}
{%- set xenha = mapdata("xenha") | load_json %}
{%- if xenha.service_manager == "systemd" %}
{%-   set unit %}{% include "xenha/files/xenha-leased.service.jinja" %}{% endset %}

include:
  - xenha.leases

xenha-leased-file-managed-unit:
  file.managed:
    - name: {{ xenha.leased.unit }}
    - contents: {{ (unit ~ "\n") | json }}
    - mode: "0644"

xenha-leased-service-running:
  service.running:
    - name: xenha-leased
    - enable: true
    - require:
      - sls: xenha.leases
    - watch:
      - file: xenha-leased-file-managed-unit
{%- endif %}
