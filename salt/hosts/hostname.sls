{#- The system hostname is the pillar's hostname, which is also the OCFS2 node name: o2cb finds
    its own node in cluster.conf by hostname. #}
{%- from "xenha/map.jinja" import me with context %}
{%- from "hosts/map.jinja" import hosts with context %}
{%- if hosts.set_hostname %}

hosts-hostname-file-managed-hostname-file:
  file.managed:
    - name: {{ hosts.hostname_file }}
    - contents: {{ me.hostname }}
    - mode: "0644"

hosts-hostname-cmd-run-hostname:
  cmd.run:
    - name: hostname {{ me.hostname }}
    - unless: test "$(hostname)" = {{ me.hostname }}
{%- endif %}
