{#- The toolstack's services enabled and running. Only xend (xm) is restarted, to read a changed
    xend-config.sxp (running domains survive it); xl's daemons (xenstored, xenconsoled) are
    never restarted under running domains. #}
{%- from "xenha/map.jinja" import cluster with context %}
{%- from "xen/map.jinja" import xen, toolstack with context %}
{%- if xen.service_manager == "systemd" %}

include:
  - xen.package
  - xen.migration
{%-   for service in toolstack.services %}

xen-service-service-running-{{ service }}:
  service.running:
    - name: {{ service }}
    - enable: true
{%-     if toolstack.pkgs %}
    - require:
      - sls: xen.package
{%-     endif %}
{%-     if cluster.xen.toolstack == "xm" %}
    - watch:
      - sls: xen.migration
{%-     endif %}
{%-   endfor %}
{%- endif %}
