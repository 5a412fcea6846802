{#- cluster.conf (through o2cb itself, so it is identical on every node: the same nodes, numbers,
    addresses and port from the pillar) and the o2cb service settings with the pillar's
    timeouts. Node names are the hostnames (the hosts formula makes them the system's). #}
{%- from "xenha/map.jinja" import cluster, vmhosts with context %}
{%- from "ocfs2/map.jinja" import ocfs2 with context %}
{%- set nodes = {} %}
{%- for host in vmhosts %}
{%-   set node = {"ip": host.ip, "number": host.ocfs2_node, "port": cluster.ocfs2.port} %}
{%-   do nodes.update({host.hostname: node}) %}
{%- endfor %}
{%- set o2cb_config %}{% include "ocfs2/files/o2cb.jinja" %}{% endset %}

include:
  - ocfs2.package

ocfs2-config-file-directory-cluster-conf-dir:
  file.directory:
    - name: {{ salt["file.dirname"](ocfs2.cluster_conf) }}
    - makedirs: true
    - require:
      - sls: ocfs2.package

ocfs2-config-xenha_o2cb-cluster_present:
  xenha_o2cb.cluster_present:
    - name: {{ cluster.ocfs2.cluster }}
    - nodes: {{ nodes | json }}
    - heartbeat_mode: local
    - config_file: {{ ocfs2.cluster_conf }}
    - require:
      - file: ocfs2-config-file-directory-cluster-conf-dir

ocfs2-config-file-managed-o2cb-config:
  file.managed:
    - name: {{ ocfs2.o2cb_config }}
    - contents: {{ (o2cb_config ~ "\n") | json }}
    - mode: "0644"
    - makedirs: true
    - require:
      - sls: ocfs2.package
