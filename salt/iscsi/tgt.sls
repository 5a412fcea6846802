{#- tgt (user-space target daemon): the target lives in <config_dir>/xenha.conf and is applied
    live with `tgt-admin --update <target>` only when that file changed. tgt-admin leaves a
    target that has sessions alone, so a change to an in-use target waits for its next
    restart instead of dropping the VM hosts' sessions (docs/formulas.md). #}
{%- from "xenha/map.jinja" import cluster, vmhosts with context %}
{%- from "iscsi/map.jinja" import iscsi, target as tgt, lease_lun with context %}
{%- set storage = cluster.storage %}
{%- set contents %}{% include "iscsi/files/tgt.conf.jinja" %}{% endset %}

iscsi-tgt-file-append-include-config-dir:
  file.append:
    - name: {{ tgt.config }}
    - text: include {{ tgt.config_dir }}/*.conf
    - makedirs: true

iscsi-tgt-file-managed-xenha-conf:
  file.managed:
    - name: {{ tgt.config_dir }}/xenha.conf
    - contents: {{ (contents ~ "\n") | json }}
    - user: root
    - group: root
    - mode: "0600"
    - makedirs: true
    - show_changes: false       # holds the CHAP secret
{%- if iscsi.service_manager == "systemd" %}

iscsi-tgt-service-running:
  service.running:
    - name: {{ tgt.service }}
    - enable: true
    - require:
      - file: iscsi-tgt-file-append-include-config-dir
      - file: iscsi-tgt-file-managed-xenha-conf
    - require_in:
      - cmd: iscsi-tgt-cmd-run-tgt-admin-update
{%- endif %}

iscsi-tgt-cmd-run-tgt-admin-update:
  cmd.run:
    - name: >-
        tgt-admin -C {{ tgt.control_port }} -c {{ tgt.config }}
        --update {{ storage.target_iqn }}
    - onchanges:
      - file: iscsi-tgt-file-append-include-config-dir
      - file: iscsi-tgt-file-managed-xenha-conf
