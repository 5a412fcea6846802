{#- Cluster-managed domUs never start at boot: xenha's runner decides where they run, and a host
    that comes back after a failover must not start (or restore) domUs that now run elsewhere.
    xendomains keeps handling any other domU. #}
{%- from "xenha/map.jinja" import cluster with context %}
{%- from "xen/map.jinja" import xen, toolstack with context %}

include:
  - xen.package

xen-autostart-file-keyvalue-xendomains:
  file.keyvalue:
    - name: {{ xen.xendomains_config }}
    - key_values:
        XENDOMAINS_RESTORE: "false"   # no restoring saved images at boot
        XENDOMAINS_SAVE: '""'         # and none saved at shutdown to restore later
    - separator: "="
    - append_if_not_found: true
    - create_if_missing: true
{%- if toolstack.pkgs %}
    - require:
      - sls: xen.package
{%- endif %}
{%- for name, domu in cluster.domus | dictsort %}
{%-   set links = [name, name ~ ".cfg", domu.config.split("/") | last] | unique | list %}

xen-autostart-file-absent-{{ name }}:
  file.absent:
    - names:
{%-   for link in links %}
      - {{ xen.xendomains_auto_dir }}/{{ link }}
{%-   endfor %}
{%- endfor %}
