{#- open-iscsi on a VM host: its initiator name, CHAP and automatic start-up in iscsid.conf (root
    only: it holds the CHAP secret), discovery, whose node records take their settings from
    iscsid.conf, and the login (initiator.login: false stops after iscsid.conf, where there is no
    kernel initiator). No setting goes through iscsiadm's command line, where ps would show the
    secret: a discovery with `-o update` rewrites the node records from iscsid.conf. #}
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
{%- set setting_ids = [] %}
{%- for key in settings | sort %}
{%-   do setting_ids.append("iscsi-initiator-file-replace-iscsid-conf-" ~ key | replace(".", "-")) %}
{%- endfor %}

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

iscsi-initiator-file-managed-iscsid-conf:
  file.managed:
    - name: {{ initiator.iscsid_conf }}
    - replace: false            # only its owner and mode: the settings are the next state's
    - user: root
    - group: root
    - mode: "0600"
    - makedirs: true
    - require:
      - pkg: iscsi-initiator-pkg-installed

{#- one file.replace per setting: unlike file.keyvalue, it reports a change (without the diff,
    which may show the secret) for the node records' update to act on #}
{%- for key, value in settings | dictsort %}

iscsi-initiator-file-replace-iscsid-conf-{{ key | replace(".", "-") }}:
  file.replace:
    - name: {{ initiator.iscsid_conf }}
    - pattern: {{ ("^[ \t]*" ~ key | regex_escape ~ "[ \t]*=.*$") | json }}
    - repl: {{ (key ~ " = " ~ value | replace("\\", "\\\\")) | json }}
    - append_if_not_found: true
    - not_found_content: {{ (key ~ " = " ~ value) | json }}
    - show_changes: false       # may hold the CHAP secret
    - require:
      - file: iscsi-initiator-file-managed-iscsid-conf
{%- endfor %}
{%- if iscsi.service_manager == "systemd" %}

{#- iscsid reads the initiator name at start; restarting it keeps the kernel's sessions #}
iscsi-initiator-service-running-daemon:
  service.running:
    - name: {{ initiator.daemon }}
    - enable: true
    - watch:
      - file: iscsi-initiator-file-managed-initiatorname
    - require:
{%- for id in setting_ids %}
      - file: {{ id }}
{%- endfor %}
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
{%-   if initiator.login %}
      # it starts only with node records or sessions there (ConditionDirectoryNotEmpty)
      - cmd: iscsi-initiator-cmd-run-login
{%-   endif %}
{%- endif %}
{%- if initiator.login %}

iscsi-initiator-cmd-run-discovery:
  cmd.run:
    - name: iscsiadm -m discovery -t sendtargets -p {{ portal }}
    - unless: {{ node }}
    - require:
      - file: iscsi-initiator-file-managed-initiatorname
{%- for id in setting_ids %}
      - file: {{ id }}
{%- endfor %}

{#- New node records copy iscsid.conf; existing ones read it again when it changed (discovery's
    update operation rewrites the records of the portals the target returns from iscsid.conf,
    sessions included: they use the new settings from their next login). #}
iscsi-initiator-cmd-run-node-update:
  cmd.run:
    - name: iscsiadm -m discovery -t sendtargets -p {{ portal }} -o update
    - onchanges:
{%- for id in setting_ids %}
      - file: {{ id }}
{%- endfor %}
    - require:
      - cmd: iscsi-initiator-cmd-run-discovery
    - require_in:
      - cmd: iscsi-initiator-cmd-run-login

iscsi-initiator-cmd-run-login:
  cmd.run:
    - name: {{ node }} --login
    - unless: iscsiadm -m session | grep -qwF {{ storage.target_iqn }}
    - require:
      - cmd: iscsi-initiator-cmd-run-discovery
{%- endif %}
