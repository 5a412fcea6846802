{#- open-iscsi on a VM host: its initiator name, CHAP and automatic start-up in iscsid.conf (which
    new node records inherit) and in the target's node record, discovery, and the login
    (initiator.login: false stops after iscsid.conf, where there is no kernel initiator). #}
{%- from "xenha/map.jinja" import cluster, me with context %}
{%- from "iscsi/map.jinja" import iscsi, initiator with context %}
{%- set storage = cluster.storage %}
{%- set portal = cluster.hosts[cluster.storage_host].ip ~ ":" ~ storage.port %}
{%- set node = "iscsiadm -m node -T " ~ storage.target_iqn ~ " -p " ~ portal %}
{%- set settings = {"node.startup": "automatic"} %}
{%- if storage.chap %}
{%-   do settings.update({
        "node.session.auth.authmethod": "CHAP",
        "node.session.auth.username": storage.chap.user,
        "node.session.auth.password": storage.chap.secret,
      }) %}
{%- endif %}

iscsi-initiator-pkg-installed:
  pkg.installed:
    - name: {{ initiator.pkg }}

iscsi-initiator-file-managed-initiatorname:
  file.managed:
    - name: {{ initiator.initiatorname_file }}
    - contents: |
        # Managed by Salt (formula iscsi): local edits are overwritten.
        InitiatorName={{ me.iqn }}
    - mode: "0644"
    - makedirs: true
    - require:
      - pkg: iscsi-initiator-pkg-installed

iscsi-initiator-file-keyvalue-iscsid-conf:
  file.keyvalue:
    - name: {{ initiator.iscsid_conf }}
    - key_values: {{ settings | json }}
    - separator: " = "
    - append_if_not_found: true
    - show_changes: false       # may hold the CHAP secret
    - require:
      - pkg: iscsi-initiator-pkg-installed
{%- if iscsi.service_manager == "systemd" %}

{#- iscsid reads the initiator name at start; restarting it keeps the kernel's sessions #}
iscsi-initiator-service-running-daemon:
  service.running:
    - name: {{ initiator.daemon }}
    - enable: true
    - watch:
      - file: iscsi-initiator-file-managed-initiatorname
    - require:
      - file: iscsi-initiator-file-keyvalue-iscsid-conf
{%-   if initiator.login %}
    - require_in:
      - cmd: iscsi-initiator-cmd-run-discovery
{%-   endif %}

{#- the boot-time login service: started and enabled, never restarted (stopping it logs out
    every session, pulling the shared disk from under a mounted OCFS2) #}
iscsi-initiator-service-running-login:
  service.running:
    - name: {{ initiator.login_service }}
    - enable: true
    - require:
      - service: iscsi-initiator-service-running-daemon
{%- endif %}
{%- if initiator.login %}

iscsi-initiator-cmd-run-discovery:
  cmd.run:
    - name: iscsiadm -m discovery -t sendtargets -p {{ portal }}
    - unless: {{ node }}
    - require:
      - file: iscsi-initiator-file-managed-initiatorname
      - file: iscsi-initiator-file-keyvalue-iscsid-conf
{#- New node records copy iscsid.conf; existing ones are updated when iscsid.conf changes. #}
{%-   for key, value in settings | dictsort %}

iscsi-initiator-cmd-run-node-{{ key | replace(".", "-") }}:
  cmd.run:
    - name: {{ node }} --op update -n {{ key }} -v "$XENHA_VALUE"
    - env:
      - XENHA_VALUE: {{ value | json }}
    - onchanges:
      - file: iscsi-initiator-file-keyvalue-iscsid-conf
      - cmd: iscsi-initiator-cmd-run-discovery
    - require_in:
      - cmd: iscsi-initiator-cmd-run-login
{%-   endfor %}

iscsi-initiator-cmd-run-login:
  cmd.run:
    - name: {{ node }} --login
    - unless: iscsiadm -m session | grep -qwF {{ storage.target_iqn }}
    - require:
      - cmd: iscsi-initiator-cmd-run-discovery
{%- endif %}
