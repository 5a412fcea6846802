{#- o2cb enabled and online: the service registers the cluster with the kernel at boot. Salt
    starts it but never restarts it: o2cb cannot stop under a mounted volume, and new settings
    are read at the next start (docs/formulas.md). #}
{%- from "xenha/map.jinja" import cluster with context %}
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

{#- the service may have run before Salt enabled o2cb (at boot, from the package's settings)
    and be active with the cluster offline: the init script's load and online verbs are what
    its start does #}
ocfs2-service-xenha_o2cb-online:
  xenha_o2cb.online:
    - name: {{ cluster.ocfs2.cluster }}
    - init_script: {{ ocfs2.o2cb_init }}
    - require:
      - service: ocfs2-service-service-running
{%- endif %}
