{%- from "xenha/map.jinja" import cluster, peers with context %}
{%- from "ntp/map.jinja" import ntp, impl with context %}
{%- set contents %}{% include "ntp/files/" ~ impl.template %}{% endset %}

include:
  - ntp.package

ntp-config-file-managed-config:
  file.managed:
    - name: {{ impl.config }}
    - contents: {{ (contents ~ "\n") | json }}
    - user: root
    - group: root
    - mode: "0644"
    - makedirs: true
    - require:
      - sls: ntp.package
