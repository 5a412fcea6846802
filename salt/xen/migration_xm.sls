{#- xm migrates through xend's relocation server, limited to the other VM hosts by anchored
    regexes (never empty: that would admit everyone), optionally over SSL only. #}
{%- from "xenha/map.jinja" import cluster, me, vmhosts with context %}
{%- from "xen/map.jinja" import xen with context %}
{%- set relocation = cluster.xen.relocation %}
{%- set allow = [] %}
{%- for host in vmhosts if host.id != me.id %}
{#-   sxp strings unescape backslashes once, hence the doubled ones #}
{%-   for name in (host.hostname, host.ip) %}
{%-     do allow.append("^" ~ (name | regex_escape | replace("\\", "\\\\")) ~ "$") %}
{%-   endfor %}
{%- endfor %}
{%- if not allow %}
{{-   raise("xenha:xen:toolstack: xm relocation needs another VM host to allow") }}
{%- endif %}
{%- set contents %}{% include "xen/files/xend-config.sxp.jinja" %}{% endset %}

xen-migration-file-managed-xend-config:
  file.managed:
    - name: {{ xen.xend_config }}
    - contents: {{ (contents ~ "\n") | json }}
    - mode: "0644"
    - makedirs: true
{%- if relocation.ssl %}

xen-migration-file-managed-ssl-key:
  file.managed:
    - name: {{ xen.ssl_dir }}/xenha-relocation.key
    - contents: {{ relocation.ssl_key | json }}
    - user: root
    - group: root
    - mode: "0600"
    - show_changes: false

xen-migration-file-managed-ssl-cert:
  file.managed:
    - name: {{ xen.ssl_dir }}/xenha-relocation.crt
    - contents: {{ relocation.ssl_cert | json }}
    - mode: "0644"
{%- endif %}
