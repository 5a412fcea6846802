{#- The VM hosts' stable name for the sanlock lease LUN: a udev rule links
    xenha:sanlock:lease_path (/dev/xenha-leases by default) to the LUN's by-path identity
    (the storage host's portal, target and LUN number), so sanlock's lockspace string needs no
    ':' and the name survives device renumbering. A LUN added to a target with sessions shows
    up after a rescan. #}
{%- from "xenha/map.jinja" import cluster with context %}
{%- from "iscsi/map.jinja" import initiator, lease_lun with context %}
{%- if lease_lun %}
{%-   set storage = cluster.storage %}
{%-   set lease_path = salt["xenha_pillar.sanlock"]().lease_path %}
{%-   set id_path = "ip-" ~ cluster.hosts[cluster.storage_host].ip ~ ":" ~ storage.port
                    ~ "-iscsi-" ~ storage.target_iqn ~ "-lun-" ~ lease_lun.lun %}

include:
  - iscsi.initiator

iscsi-lease_device-file-managed-udev-rule:
  file.managed:
    - name: {{ initiator.udev_rules_dir }}/61-xenha-leases.rules
    - contents: |
        # Managed by Salt (formula iscsi): local edits are overwritten.
        # The sanlock lease LUN under a name of its own (docs/formulas.md).
        SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", ENV{ID_PATH}=="{{ id_path }}", SYMLINK+="{{ lease_path[5:] }}"
    - mode: "0644"
    - makedirs: true
    - require:
      - sls: iscsi.initiator
{%-   if initiator.login %}

iscsi-lease_device-cmd-run-rescan:
  cmd.run:
    - name: iscsiadm -m session --rescan
    - unless: test -b {{ lease_path }}
    - require:
      - cmd: iscsi-initiator-cmd-run-login

iscsi-lease_device-cmd-run-udevadm-trigger:
  cmd.run:
    - name: >-
        udevadm trigger --action=change --subsystem-match=block &&
        udevadm settle --exit-if-exists={{ lease_path }}
    - unless: test -b {{ lease_path }}
    - require:
      - file: iscsi-lease_device-file-managed-udev-rule
      - cmd: iscsi-lease_device-cmd-run-rescan
{%-   endif %}
{%- endif %}
