{#- o2cb enabled and online: the service registers the cluster with the kernel at boot, and
    again now when its configuration changed. #}
{%- from "ocfs2/map.jinja" import ocfs2 with context %}
{%- if ocfs2.service_manager == "systemd" %}

include:
  - ocfs2.config

ocfs2-service-service-running:
  service.running:
    - name: {{ ocfs2.o2cb_service }}
    - enable: true
    - watch:
      - sls: ocfs2.config
{%- endif %}
