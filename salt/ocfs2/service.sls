{#- o2cb enabled and online: the service registers the cluster with the kernel at boot. Salt
    starts it but never restarts it: o2cb cannot stop under a mounted volume, and new settings
    are read at the next start (docs/formulas.md). #}
{%- from "ocfs2/map.jinja" import ocfs2 with context %}
{%- if ocfs2.service_manager == "systemd" %}

include:
  - ocfs2.config

ocfs2-service-service-running:
  service.running:
    - name: {{ ocfs2.o2cb_service }}
    - enable: true
    - require:
      - sls: ocfs2.config
{%- endif %}
