{#- Every cluster member in the hosts file, and nowhere else: `clean` drops other addresses for
    the same name (Debian's `127.0.1.1 <hostname>` line would make o2cb and ssh resolve a
    member to loopback). #}
{%- from "xenha/map.jinja" import cluster with context %}
{%- for id, host in cluster.hosts | dictsort %}

hosts-config-host-present-{{ id }}:
  host.present:
    - name: {{ host.hostname }}
    - ip: {{ host.ip }}
    - comment: managed by Salt (formula hosts)
    - clean: true
{%- endfor %}
