{#- iSCSI target on the storage host: the shared LUN for the VM hosts, in the implementation the
    pillar names (xenha:storage:implementation); each lives in its own SLS. #}
{%- from "xenha/map.jinja" import cluster with context %}
{%- from "iscsi/map.jinja" import target with context %}

include:
  - iscsi.{{ cluster.storage.implementation }}
  - iscsi.lease_lun

iscsi-target-pkg-installed:
  pkg.installed:
    - name: {{ target.pkg }}
    - require_in:
      - sls: iscsi.{{ cluster.storage.implementation }}
