{#- sanlock.conf (the daemon's name is the minion id; the watchdog on or off), the options file
    that would override it, softdog where the host has no hardware watchdog, and the systemd
    drop-in that orders sanlock after the lease device's iSCSI session. #}
{%- from "sanlock/map.jinja" import sanlock, settings, watchdog, on_device with context %}
{%- from "iscsi/map.jinja" import initiator with context %}
{%- set contents %}{% include "sanlock/files/sanlock.conf.jinja" %}{% endset %}

include:
  - sanlock.package

sanlock-config-file-managed-sanlock-conf:
  file.managed:
    - name: {{ sanlock.config }}
    - contents: {{ (contents ~ "\n") | json }}
    - user: root
    - group: root
    - mode: "0644"
    - makedirs: true
    - require:
      - sls: sanlock.package
{%- if sanlock.options_file %}

{#- command-line options win over sanlock.conf: none, so sanlock.conf decides #}
sanlock-config-file-keyvalue-options:
  file.keyvalue:
    - name: {{ sanlock.options_file }}
    - key_values:
        {{ sanlock.options_key }}: '""'
    - separator: "="
    - append_if_not_found: true
    - require:
      - sls: sanlock.package
{%- endif %}
{%- if watchdog == "softdog" %}

sanlock-config-file-managed-softdog-load:
  file.managed:
    - name: {{ sanlock.modules_load_file }}
    - contents: |
        # Managed by Salt (formula sanlock): no hardware watchdog here, wdmd uses softdog.
        {{ sanlock.softdog_module }}
    - mode: "0644"
    - makedirs: true

sanlock-config-kmod-present-softdog:
  kmod.present:
    - name: {{ sanlock.softdog_module }}
{%- endif %}
{%- if sanlock.service_manager == "systemd" %}
{%-   set dropin %}{% include "sanlock/files/requires.conf.jinja" %}{% endset %}

sanlock-config-file-managed-dropin:
  file.managed:
    - name: {{ sanlock.systemd_dir }}/{{ sanlock.service }}.service.d/xenha.conf
    - contents: {{ (dropin ~ "\n") | json }}
    - mode: "0644"
    - makedirs: true
{%- endif %}
