{#- IET (iscsitarget, the thesis's target): ietd.conf and initiators.allow. IET cannot reload
    its configuration, so a change restarts the daemon (only when a file changed). #}
{%- from "xenha/map.jinja" import cluster, vmhosts with context %}
{%- from "iscsi/map.jinja" import iscsi, target as iet, lease_lun with context %}
{%- set storage = cluster.storage %}
{%- for file, template in (("config", "ietd.conf"), ("initiators_allow", "initiators.allow")) %}
{%-   set contents %}{% include "iscsi/files/" ~ template ~ ".jinja" %}{% endset %}

iscsi-iet-file-managed-{{ file | replace("_", "-") }}:
  file.managed:
    - name: {{ iet[file] }}
    - contents: {{ (contents ~ "\n") | json }}
    - user: root
    - group: root
    - mode: "0600"
    - show_changes: false       # ietd.conf holds the CHAP secret
{%- endfor %}
{%- if iscsi.service_manager == "systemd" %}

iscsi-iet-service-running:
  service.running:
    - name: {{ iet.service }}
    - enable: true
    - watch:
      - file: iscsi-iet-file-managed-config
      - file: iscsi-iet-file-managed-initiators-allow
{%- endif %}
