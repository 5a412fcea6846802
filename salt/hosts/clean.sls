{%- from "xenha/map.jinja" import cluster with context %}
{%- for id, host in cluster.hosts | dictsort %}

hosts-clean-host-absent-{{ id }}:
  host.absent:
    - name: {{ host.hostname }}
    - ip: {{ host.ip }}
{%- endfor %}
