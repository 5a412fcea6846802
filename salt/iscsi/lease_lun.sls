{#- The backing file of the dedicated sanlock lease LUN (xenha:sanlock:lease_lun), made at
    its size when missing and never touched again; a block device is used as it is. The
    target implementation's SLS exports it beside the OCFS2 LUN. #}
{%- from "xenha/map.jinja" import cluster with context %}
{%- from "iscsi/map.jinja" import lease_lun with context %}
{%- if lease_lun and not lease_lun.backing_device.startswith("/dev/") %}

iscsi-lease_lun-file-directory-backing:
  file.directory:
    - name: {{ salt["file.dirname"](lease_lun.backing_device) }}
    - makedirs: true

iscsi-lease_lun-cmd-run-create-backing:
  cmd.run:
    - name: fallocate -l {{ lease_lun.size_mib }}MiB {{ lease_lun.backing_device }}
    - creates: {{ lease_lun.backing_device }}
    - require:
      - file: iscsi-lease_lun-file-directory-backing
    - require_in:
      - sls: iscsi.{{ cluster.storage.implementation }}
{%- endif %}
