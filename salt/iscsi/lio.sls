{#- LIO (kernel target, configured with targetcli): each object is created only when targetcli
    cannot list it, then the configuration is saved for the `target` service to restore at
    boot. LIO restricts access by initiator name (ACLs), not by address. #}
{%- from "xenha/map.jinja" import cluster, vmhosts with context %}
{%- from "iscsi/map.jinja" import iscsi, target as lio, lease_lun with context %}
{%- set storage = cluster.storage %}
{%- set kind = "block" if storage.backing_device.startswith("/dev/") else "fileio" %}
{%- set backstore = "/backstores/" ~ kind ~ "/" ~ lio.backstore %}
{%- set tpg = "/iscsi/" ~ storage.target_iqn ~ "/tpg1" %}
{#- (state suffix, parent path, creation arguments, path of the created object) #}
{%- set objects = [
      ("backstore", "/backstores/" ~ kind,
       "create name=" ~ lio.backstore ~ " " ~ ("dev=" if kind == "block" else "file_or_dev=")
       ~ storage.backing_device, backstore),
      ("target", "/iscsi", "create " ~ storage.target_iqn, "/iscsi/" ~ storage.target_iqn),
      ("lun", tpg ~ "/luns", "create " ~ backstore ~ " lun=" ~ storage.lun,
       tpg ~ "/luns/lun" ~ storage.lun),
      ("portal", tpg ~ "/portals", "create 0.0.0.0 " ~ storage.port,
       tpg ~ "/portals/0.0.0.0:" ~ storage.port),
    ] %}
{%- if lease_lun %}
{%-   set lease_kind = "block" if lease_lun.backing_device.startswith("/dev/") else "fileio" %}
{%-   set lease_store = "/backstores/" ~ lease_kind ~ "/" ~ lio.backstore ~ "-leases" %}
{%-   do objects.append(("lease-backstore", "/backstores/" ~ lease_kind,
        "create name=" ~ lio.backstore ~ "-leases "
        ~ ("dev=" if lease_kind == "block" else "file_or_dev=") ~ lease_lun.backing_device,
        lease_store)) %}
{%-   do objects.append(("lease-lun", tpg ~ "/luns",
        "create " ~ lease_store ~ " lun=" ~ lease_lun.lun, tpg ~ "/luns/lun" ~ lease_lun.lun)) %}
{%- endif %}
{%- for host in vmhosts %}
{%-   do objects.append(("acl-" ~ host.id, tpg ~ "/acls", "create " ~ host.iqn,
                         tpg ~ "/acls/" ~ host.iqn)) %}
{%- endfor %}
{%- for suffix, parent, arguments, path in objects %}

iscsi-lio-cmd-run-create-{{ suffix }}:
  cmd.run:
    - name: targetcli {{ parent }} {{ arguments }}
    - unless: targetcli {{ path }} ls
    - onchanges_in:
      - cmd: iscsi-lio-cmd-run-saveconfig
{%- endfor %}
{%- if storage.chap %}

iscsi-lio-cmd-run-tpg-authentication:
  cmd.run:
    - name: targetcli {{ tpg }} set attribute authentication=1
    - unless: targetcli {{ tpg }} get attribute authentication | grep -qx 'authentication=1'
    - onchanges_in:
      - cmd: iscsi-lio-cmd-run-saveconfig
{%-   for host in vmhosts %}
{%-     set acl = tpg ~ "/acls/" ~ host.iqn %}
{#-     the ACL's CHAP password in configfs, where targetcli (rtslib) writes it too #}
{%-     set password = lio.configfs ~ "/iscsi/" ~ storage.target_iqn ~ "/tpgt_1/acls/" ~ host.iqn
                       ~ "/auth/password" %}

iscsi-lio-cmd-run-chap-{{ host.id }}:
  cmd.run:
    # the secret travels in the environment and only the shell's own printf and [ see it:
    # no command it starts (whose argv ps would show) gets it as an argument
    - name: >-
        targetcli {{ acl }} set auth userid={{ storage.chap.user }} &&
        printf '%s' "$XENHA_CHAP" > {{ password }}
    - unless: >-
        targetcli {{ acl }} get auth userid | grep -qxF 'userid={{ storage.chap.user }}' &&
        [ "$(cat {{ password }})" = "$XENHA_CHAP" ]
    - env:
      - XENHA_CHAP: {{ storage.chap.secret | json }}
    - onchanges_in:
      - cmd: iscsi-lio-cmd-run-saveconfig
{%-   endfor %}
{%- endif %}

iscsi-lio-cmd-run-saveconfig:
  cmd.run:
    - name: targetcli saveconfig
{%- if iscsi.service_manager == "systemd" %}

iscsi-lio-service-enabled:
  service.enabled:
    - name: {{ lio.service }}
{%- endif %}
