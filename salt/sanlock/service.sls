{#- wdmd (unless the watchdog is none) and sanlock enabled and running. A changed configuration
    restarts sanlock only while it has joined no lockspace (the package's first start runs
    without it); a daemon in a lockspace is never restarted by Salt (that would drop the
    host's leases and fence its domUs): the change waits for its next start. The boot-time
    lockspace join is enabled here for systemd to run at boot (sanlock.lockspace joins now). #}
{%- from "sanlock/map.jinja" import sanlock, settings, watchdog, on_device with context %}
{%- from "iscsi/map.jinja" import initiator with context %}
{%- if sanlock.service_manager == "systemd" %}
{%-   set unit %}{% include "sanlock/files/lockspace.service.jinja" %}{% endset %}

include:
  - sanlock.config
{%-   if watchdog != "none" %}

sanlock-service-service-running-wdmd:
  service.running:
    - name: {{ sanlock.wdmd_service }}
    - enable: true
    - require:
      - sls: sanlock.config
    - require_in:
      - service: sanlock-service-service-running
{%-   endif %}

{#- a new or changed drop-in or boot unit is read by systemd before anything starts #}
sanlock-service-cmd-run-daemon-reload:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: sanlock-config-file-managed-dropin
      - file: sanlock-service-file-managed-lockspace-unit
    - require_in:
      - service: sanlock-service-service-running

sanlock-service-service-running:
  service.running:
    - name: {{ sanlock.service }}
    - enable: true
    - require:
      - sls: sanlock.config

sanlock-service-cmd-run-restart:
  cmd.run:
    - name: systemctl restart {{ sanlock.service }}
    - unless: {{ sanlock.sanlock_bin }} client status | grep -q '^s '
    - onchanges:
      - sls: sanlock.config
    - require:
      - service: sanlock-service-service-running

sanlock-service-file-managed-lockspace-unit:
  file.managed:
    - name: {{ sanlock.systemd_dir }}/{{ sanlock.lockspace_unit }}.service
    - contents: {{ (unit ~ "\n") | json }}
    - mode: "0644"

sanlock-service-service-enabled-lockspace-unit:
  service.enabled:
    - name: {{ sanlock.lockspace_unit }}
    - require:
      - file: sanlock-service-file-managed-lockspace-unit
      - service: sanlock-service-service-running
{%- endif %}
