{#- The shutdown drain (xenha_shutdown.drain) as a systemd unit on VM hosts: its stop, on a clean
    shutdown or reboot, evacuates the host first under shutdown_policy migrate. #}
{%- from "xenha/map.jinja" import cluster, me with context %}
{%- from "xenha/libmap.jinja" import mapdata with context %}
{%- set xenha = mapdata("xenha") | load_json %}
{%- set policy = salt["xenha_pillar.shutdown"]() %}
{%- if xenha.service_manager == "systemd" and me.role == "vmhost" %}
{%-   set unit %}{% include "xenha/files/xenha-shutdown.service.jinja" %}{% endset %}

xenha-shutdown-file-managed-unit:
  file.managed:
    - name: {{ xenha.shutdown.unit }}
    - contents: {{ (unit ~ "\n") | json }}
    - mode: "0644"

{#- running: a restart (the unit changed) runs the drain, which moves nothing unless systemd
    is stopping #}
xenha-shutdown-service-running:
  service.running:
    - name: xenha-shutdown
    - enable: true
    - watch:
      - file: xenha-shutdown-file-managed-unit
{%- endif %}
