{#- Live migration between the VM hosts, for the pillar's toolstack (xenha:xen:toolstack). #}
{%- from "xenha/map.jinja" import cluster with context %}

include:
  - xen.migration_{{ cluster.xen.toolstack }}
